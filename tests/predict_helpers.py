"""A trained-looking run of the tiny model for `vlalert predict` (tests/test_predict.py, tests/test_cli.py).

Built without the DAG: the tiny model copied where the workflow puts it, a random LoRA adapter saved
where the sft stage puts it, and untrained heads of the right widths saved by the heads stage's own
`save_outputs`. The video is a real H.264 mp4 written with PyAV. conftest.py builds the run once per
session (fixture `tiny_run`); `two_seed_run` copies it with the heads of the second seed too (what
an exported run holds: every seed).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import yaml

RUN = "t"
SEED = 3  # heads are saved for this seed only; seed 4 is configured but never trained


def raw_config() -> dict[str, Any]:
    """A small run: the tiny model, 8 new tokens per tick, small heads, our in-place patch embedding
    (transformers' fusion is process-global and would leave later loads in this pytest process fused)."""
    return {
        "run": RUN,
        "sources": {"nexar": {"kind": "nexar", "root": "r", "scene_truth": "s.json"}},
        "demo": {"enabled": False},
        "labels": {"gated_sources": []},
        "model": {"max_new_tokens": 8},
        "cache": {
            "belief_layers": [1, 2, 3, 4],
            "policy_layer": 3,
            "batch_size": 8,
            "patch_embed": "inplace",
            "device": "cpu",
            "progress": False,
        },
        "heads": {
            "seeds": [SEED, 4],
            "danger": {"mlp_hidden": 32, "embed": 16, "pma_heads": 2, "pma_ffn": 16},
            "policy": {"proj": 16, "action_embed": 4, "gru_hidden": 16},
        },
    }


def write_mp4(path: Path, seconds: float, fps: int = 10, size: tuple[int, int] = (64, 96)) -> Path:
    """An H.264 (yuv420p) clip whose frames brighten over time, so every window differs."""
    h, w = size
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(round(seconds * fps)):
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8) + np.uint8(3 * i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_run(root: Path, model_dir: Path) -> dict[str, Path]:
    """results/ with a copy of the tiny model `model_dir`, an adapter and the seed-3 heads of run `t`;
    the config file beside it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from vlalert.config import load_config
    from vlalert.vlm.loading import load_model

    results = root / "results"
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw_config()))
    cfg = load_config(config_path)
    model = shutil.copytree(model_dir, results / "models" / "tiny-qwen3vl")
    torch.manual_seed(9)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_model(model, device="cpu"), lora).save_pretrained(results / "sft" / RUN / "adapter")
    save_heads(results, cfg, SEED)
    return {"results": results, "config": config_path, "root": root}


def save_heads(results: Path, cfg: Any, seed: int) -> None:
    """Untrained heads of `seed` (initialised with that seed) where the heads stage saves them."""
    import torch

    from vlalert.heads.train import build_head, save_outputs
    from vlalert.vlm.config import VLMConfig

    hidden = VLMConfig().tiny.hidden_size
    for kind, width in (("danger", 4 * hidden), ("policy", hidden)):
        torch.manual_seed(seed)
        head = build_head(kind, cfg.heads, width)
        save_outputs(results / "heads" / RUN / kind / f"seed{seed}", kind, seed, head, cfg.heads, {}, [])


def two_seed_run(tiny_run: dict[str, Path], root: Path) -> dict[str, Path]:
    """A copy of the session's run under `root` with the heads of both configured seeds (3 and 4)."""
    from vlalert.config import load_config

    results = shutil.copytree(tiny_run["results"], root / "results")
    config = shutil.copy(tiny_run["config"], root / "config.yaml")
    save_heads(results, load_config(config), 4)
    return {"results": results, "config": Path(config), "root": root, "video": tiny_run["video"]}
