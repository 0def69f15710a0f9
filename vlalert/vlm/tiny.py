"""The demo model `tiny-qwen3vl`: the real Qwen3-VL architecture at toy width, built locally.

It is an ordinary model directory (config.json, model.safetensors, generation_config.json,
tokenizer files, the processor configs of Qwen3-VL), so every later stage loads it with the same
`from_pretrained` code as Qwen/Qwen3-VL-4B-Instruct. Its tokenizer is a BPE vocabulary trained on
the belief corpus and the prompt (vlalert.vlm.tokenizer); the config's token ids (video, vision
start/end, eos, pad) are read from that tokenizer, never assumed. Weights are random, drawn after
`torch.manual_seed(seed)`, then (when `tiny.pretrain` has steps) pretrained on captioned synthetic
video of its own seed (vlalert.vlm.pretrain: the stand-in for a real VLM's pretraining), so the
directory is a pure function of (corpus, config, seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlalert.actions import ACTIONS
from vlalert.atomic import publish_tree
from vlalert.beliefs.text import ANALYSIS_TAG, ASSESSMENT_TAG
from vlalert.config import Phrasing, WindowConfig
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    train_bpe,
    wrap_tokenizer,
)

BUILD_INFO = "vlalert_build.json"


def prompt_corpus(cfg: VLMConfig) -> list[str]:
    """Texts every prompt contains, added to the corpus so the tiny vocabulary encodes them compactly."""
    stamps = [f"<{t / 10:.1f} seconds>" for t in range(0, 100, 5)]
    roles = ["system\n", "user\n", "assistant\n"]
    return [cfg.system_prompt, cfg.instruction, ANALYSIS_TAG, ASSESSMENT_TAG, *ACTIONS, *roles, *stamps]


def tiny_config(cfg: VLMConfig, tokenizer: Any) -> Any:
    """The `Qwen3VLConfig` of the tiny model, token ids taken from `tokenizer`."""
    from transformers import Qwen3VLConfig

    t = cfg.tiny

    def tid(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": t.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": t.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": t.rope_theta,
            "mrope_section": list(t.mrope_section),
            "mrope_interleaved": True,
        },
        "pad_token_id": tid(ENDOFTEXT),
        "eos_token_id": tid(IM_END),
    }
    vision = {
        "depth": t.vision_depth,
        "hidden_size": t.vision_hidden_size,
        "intermediate_size": t.vision_intermediate_size,
        "num_heads": t.vision_num_heads,
        "hidden_act": "gelu_pytorch_tanh",
        "patch_size": cfg.patch_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "spatial_merge_size": cfg.spatial_merge_size,
        "out_hidden_size": t.hidden_size,
        "num_position_embeddings": t.vision_num_position_embeddings,
        "deepstack_visual_indexes": list(t.deepstack_visual_indexes),
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tid(IMAGE_PAD),
        video_token_id=tid(VIDEO_PAD),
        vision_start_token_id=tid(VISION_START),
        vision_end_token_id=tid(VISION_END),
        tie_word_embeddings=t.tie_word_embeddings,
    )


def init_tiny_model(config: Any, seed: int) -> Any:
    """Random-initialised Qwen3VLForConditionalGeneration, weights a function of `seed` alone."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    return Qwen3VLForConditionalGeneration(config).eval()


def processor_configs(cfg: VLMConfig) -> dict[str, dict[str, Any]]:
    """Qwen3-VL's processor files, so `AutoProcessor.from_pretrained(dir)` works where torchvision is.

    vlalert does not read them (it builds inputs itself, vlalert.vlm.inputs); they record the
    geometry the model was built for, with the same mean/std, patching and resampling.
    """
    size = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32 * 768}
    common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(cfg.image_mean),
        "image_std": list(cfg.image_std),
        "merge_size": cfg.spatial_merge_size,
        "patch_size": cfg.patch_size,
        "resample": 3,  # bicubic
        "rescale_factor": 1 / 255,
        "size": size,
        "temporal_patch_size": cfg.temporal_patch_size,
    }
    return {
        "preprocessor_config.json": {
            **common,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen3VLProcessor",
        },
        "video_preprocessor_config.json": {
            **common,
            "do_sample_frames": False,
            "processor_class": "Qwen3VLProcessor",
            "video_processor_type": "Qwen3VLVideoProcessor",
        },
    }


def corpus_sha256(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    corpus: Iterable[str],
    vlm_cfg: VLMConfig,
    seed: int,
    *,
    window: WindowConfig | None = None,
    phrasing: Phrasing = "varied",
    on_log: Callable[[str], None] | None = None,
) -> Path:
    """Train the tokenizer on `corpus` (+ the prompt texts and the pretraining captions), build the tiny
    model, pretrain it (`vlm_cfg.tiny.pretrain`, on windows shaped as `window`'s ticks, the default
    window when None; captions worded with the rules provider's `phrasing`) and save it; return its dir."""
    import torch
    from transformers import GenerationConfig

    from vlalert.vlm.pretrain import (
        caption_example,
        caption_texts,
        pretrain,
        pretrain_vision,
        render_corpus,
        vision_targets,
    )

    say = on_log or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = vlm_cfg.tiny.pretrain
    windows = []
    if pre.enabled:
        t0 = time.monotonic()
        windows = list(render_corpus(pre, window or WindowConfig(), phrasing))
        say(f"pretraining corpus: {len(windows)} captioned windows rendered in {time.monotonic() - t0:.1f} s")
    captions = caption_texts(windows)
    # Prompt texts are repeated up to the BPE frequency threshold: they occur once in the list but in
    # every example, and unmerged they would cost one token per byte.
    texts = [*corpus, *prompt_corpus(vlm_cfg) * max(2, vlm_cfg.tiny.min_frequency), *captions]
    tokenizer = wrap_tokenizer(train_bpe(texts, vlm_cfg.tiny.vocab_size, vlm_cfg.tiny.min_frequency))
    config = tiny_config(vlm_cfg, tokenizer)
    model = init_tiny_model(config, seed)
    pretrain_log: list[dict[str, float]] = []
    vision_log: list[dict[str, float]] = []
    if windows:
        examples = [caption_example(w, tokenizer, vlm_cfg, f"pretrain{i}") for i, w in enumerate(windows)]

        def logged(phase: str, steps: int) -> Callable[[dict[str, float]], None]:
            def line(row: dict[str, float]) -> None:
                extra = "".join(
                    f", {k.replace('_', ' ')} {v:.3f}" for k, v in row.items() if k.startswith("val")
                )
                say(
                    f"pretraining ({phase}) step {int(row['step'])}/{steps}: train loss "
                    f"{row['train_loss']:.3f}{extra}, {row['elapsed_s']:.0f} s"
                )

            return line

        with torch.random.fork_rng():
            if pre.vision_steps:
                targets = vision_targets(windows)
                vision_log = pretrain_vision(
                    model, examples, targets, pre, on_log=logged("vision", pre.vision_steps)
                )
            if pre.steps:
                pad = int(config.text_config.pad_token_id)
                pretrain_log = pretrain(model, examples, pad, pre, on_log=logged("captions", pre.steps))
    model.generation_config = GenerationConfig(
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name, content in processor_configs(vlm_cfg).items():
        (out / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    info = {
        "seed": seed,
        "corpus_sha256": corpus_sha256(texts),
        "n_corpus_texts": len(texts),
        "vocab_size": len(tokenizer),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "image_size": list(vlm_cfg.image_size),
        "pretrain": {
            "windows": len(windows),
            "steps": pre.steps,
            "seed": pre.seed,
            "log": [{k: round(v, 4) for k, v in row.items()} for row in pretrain_log],
            "vision_steps": pre.vision_steps,
            "vision_log": [{k: round(v, 4) for k, v in row.items()} for row in vision_log],
        },
    }
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    publish_tree(out)  # save_pretrained writes model.safetensors 0600
    return out
