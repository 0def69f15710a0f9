"""A tiny synthetic benchmark for the SFT tests: frame-folder clips and benchmark-schema Parquet files.

Positive clips show a red box that grows as it approaches (labels SILENT, OBSERVE, ALERT, ALERT);
negative clips show an empty road (all SILENT). Frames are written at the model's input size
(64 x 96), four ticks per clip, eight frames per tick, as the benchmark stage would list them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tiny_helpers import CLEAR_BELIEF

from vlalert.beliefs.schema import Belief
from vlalert.beliefs.text import belief_text
from vlalert.schemas import table_from_rows, write_table
from vlalert.vlm.config import SFTConfig, VLMConfig
from vlalert.vlm.data import target_corpus, trainable_rows
from vlalert.vlm.tiny import build_tiny_model

FPS = 4.0
N_FRAMES = 16
TICKS = 4
H, W = 64, 96

TARGETS: dict[str, tuple[str, Belief]] = {
    "SILENT": (
        "The road ahead is clear.",
        CLEAR_BELIEF,
    ),
    "OBSERVE": (
        "A car ahead slows down; watch it.",
        Belief(hazard="vehicle", where="ahead", motion="braking", ttc_s=3.0, danger=0.4, ego_involved=True),
    ),
    "ALERT": (
        "A car ahead brakes hard; brake now.",
        Belief(hazard="vehicle", where="ahead", motion="braking", ttc_s=1.0, danger=0.9, ego_involved=True),
    ),
}
POSITIVE_ACTIONS = ("SILENT", "OBSERVE", "ALERT", "ALERT")


def write_clip(folder: Path, positive: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_FRAMES):
        img = np.full((H, W, 3), 90, dtype=np.uint8)
        img[H // 2 :, :] = 60  # road
        img += rng.integers(0, 12, img.shape, dtype=np.uint8)
        if positive:
            half = 2 + i  # the box grows as the car approaches
            img[H // 2 - half // 2 : H // 2 + half, W // 2 - half : W // 2 + half] = (200, 30, 30)
        Image.fromarray(img).save(folder / f"{i:04d}.png")


def clip_rows(root: Path, video_id: str, positive: bool, split: str, seed: int) -> list[dict[str, Any]]:
    folder = root / "clips" / video_id
    write_clip(folder, positive, seed)
    rows = []
    for tick in range(TICKS):
        action = POSITIVE_ACTIONS[tick] if positive else "SILENT"
        analysis, belief = TARGETS[action]
        idx = list(range(2 * tick + 1, 2 * tick + 9))
        rows.append(
            {
                "video_id": video_id,
                "source": "synthetic",
                "tick": tick,
                "t_s": idx[-1] / FPS,
                "frame_idx": idx,
                "action": action,
                "danger": float(belief.danger),
                "rule": "test",
                "excluded": False,
                "parent_id": None,
                "split": split,
                "path": str(folder),
                "fps": FPS,
                "n_frames": N_FRAMES,
                "is_positive": positive,
                "meta": "{}",
                "analysis": analysis,
                "belief": belief.to_json(),
                "belief_text": belief_text(belief),
                "belief_provider": "rules",
            }
        )
    return rows


def make_benchmark(root: Path, n_train: int = 4, n_val: int = 2) -> dict[str, Path]:
    """train.parquet (n_train clips, half positive, plus an excluded and a prefix row) and val.parquet."""
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for c in range(n):
            rows += clip_rows(
                root, f"{split}{c:02d}", positive=c % 2 == 0, split=split, seed=100 * c + len(split)
            )
        if split == "train":
            post = dict(rows[-1], tick=TICKS, excluded=True, rule="post-event")
            post.update(analysis=None, belief=None, belief_text=None, belief_provider=None)
            prefix = dict(rows[0], video_id=f"{rows[0]['video_id']}#prefix", parent_id=rows[0]["video_id"])
            rows += [post, prefix]
        paths[split] = write_table("benchmark", table_from_rows("benchmark", rows), root / f"{split}.parquet")
    return paths


def build_model(root: Path, train: Path, vlm: VLMConfig | None = None) -> Path:
    from vlalert.schemas import read_table

    rows = trainable_rows(read_table("benchmark", train))
    return build_tiny_model(root / "tiny", target_corpus(rows), vlm or VLMConfig(), seed=3)


def sft_config(**overrides: Any) -> SFTConfig:
    """Small and fast: 40 steps of 4 ticks (2 micro-batches of 2), one CPU thread."""
    base: dict[str, Any] = {
        "max_steps": 40,
        "batch_size": 4,
        "micro_batch": 2,
        "lr": 3e-3,
        "warmup_steps": 4,
        "eval_every": 10,
        "save_every": 10,
        "keep_checkpoints": 2,
        "gen_max_ticks": 4,
        "gen_batch": 4,
        "device": "cpu",
        "threads": 1,
        "cache_examples": True,
    }
    return SFTConfig(**(base | overrides))
