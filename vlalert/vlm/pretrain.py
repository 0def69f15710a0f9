"""Perception pretraining of the demo's tiny VLM: the stand-in for what a real VLM brings to SFT.

Qwen3-VL comes to the SFT stage having seen billions of images with text about them: its vision
tower already tells a car ahead from an empty road, and SFT only teaches it the task's format and
labels. The tiny demo model starts from random weights, and the demo's ~190 train ticks are far too
few to grow perception from nothing: its generations collapsed to a few texts and its hidden states
carried no more than the clock (issue 14). So the `tiny_model` rule gives it a small pretraining of
its own, the same way a real VLM got it: captioned video of scenes it will later be asked about.

The corpus is rendered by `vlalert.synthetic` from its own seed (`PretrainConfig.seed`, streams
keyed "pretrain", never a demo source's stream), so no clip, scenario draw or frame of the demo
benchmark is in it. Each window (8 frames over 2 s, as a tick sees) is captioned with what the
renderer's truth says is visible at its last frame: hazard, where, motion, time to collision, a
danger read off the time to collision, and an action by time-to-collision thresholds. The captions
use the belief-span format SFT trains on, but not the benchmark's label rules (risky time + 2 s,
gating): the model learns to see, the SFT stage teaches it the task.

Training is plain full-parameter next-token loss on the caption (AdamW, warmup then cosine), on
CPU in fp32, deterministic from the seed. Written by hand rather than with `transformers.Trainer`
because it is a few hundred steps over an in-memory list: no checkpoints, resumption or
distribution are wanted here (the rule reruns from scratch in about two minutes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlalert.beliefs.schema import Belief
from vlalert.beliefs.text import target_text
from vlalert.vlm.config import PretrainConfig

log = logging.getLogger(__name__)

# Kinds whose clock the corpus draws its clips on (frame rates of the demo's sources).
CORPUS_FPS: tuple[float, ...] = (30.0, 10.0, 20.0, 30.0)
ALERT_TTC_S = 2.5  # a caption's action: ALERT when the hazard would hit within this time
OBSERVE_TTC_S = 5.0  # ... OBSERVE within this one
DANGER_TTC_S = 5.0  # danger = 1 - ttc / this, clipped to [0, 1]


@dataclass(frozen=True)
class CaptionedWindow:
    """One corpus example: a tick-like window of frames and the caption of its last instant."""

    frames: np.ndarray  # uint8 [frames, H, W, 3]
    frame_idx: list[int]
    fps: float
    analysis: str
    belief: Belief
    action: str


def perception_caption(
    where: str, motion: str, ttc_s: float | None, hazard_kind: str
) -> tuple[str, Belief, str]:
    """(analysis, belief, action) of what is visible: the salient road user, and how soon it would hit.

    `where == "none"` means nobody is in view. A road user in view but on no collision course
    (ttc None) is described without being called a hazard, as the scene truth does.
    """
    if where == "none":
        clear = Belief(hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False)
        return "The road ahead is clear.", clear, "SILENT"
    ttc = None if ttc_s is None else max(float(ttc_s), 0.0)
    danger = 0.0 if ttc is None else float(min(max(1.0 - ttc / DANGER_TTC_S, 0.0), 1.0))
    action = "SILENT"
    if ttc is not None:
        action = "ALERT" if ttc <= ALERT_TTC_S else ("OBSERVE" if ttc <= OBSERVE_TTC_S else "SILENT")
    hazard = hazard_kind if ttc is not None else "none"
    belief = Belief(
        hazard=hazard,
        where=where,
        motion=motion,
        ttc_s=None if ttc is None else round(ttc, 1),
        danger=round(danger, 2),
        ego_involved=ttc is not None,
    )
    subject = "A pedestrian" if hazard_kind == "pedestrian" else "A vehicle"
    course = "on a collision course" if ttc is not None else "keeping its distance"
    motion_words = "moving" if motion in ("none", "other") else motion.replace("-", " ")
    return f"{subject} {where.replace('-', ' ')}, {motion_words}, {course}.", belief, action


def render_corpus(cfg: PretrainConfig, n_frames: int, span_s: float) -> Iterator[CaptionedWindow]:
    """The captioned windows of the corpus, deterministic from `cfg.seed`."""
    from vlalert.synthetic.render import Camera, _shake, ego_travel, look_for, render_frame, views_at
    from vlalert.synthetic.scenarios import (
        POSITIVE_SCENARIOS,
        SCENARIOS,
        TRUTH_HZ,
        agent_tracks,
        draw_times,
        make_scenario,
        stable_rng,
        timeline,
    )

    cam = Camera.for_size(cfg.width, cfg.height)
    for i in range(cfg.scenes):
        rng = stable_rng(cfg.seed, "pretrain", i)
        fps = CORPUS_FPS[i % len(CORPUS_FPS)]
        name = SCENARIOS[int(rng.integers(len(SCENARIOS)))]
        positive = name in POSITIVE_SCENARIOS
        n_all, t_r, t_e = draw_times(fps, rng, cfg.max_duration_s, positive)
        s = make_scenario(name, fps, n_all, t_r, t_e, rng)
        truth = timeline(s)
        look = look_for(s)
        hazard_kind = "pedestrian" if name == "pedestrian-crossing" else "vehicle"
        frame_times = s.frame_times()
        for _ in range(cfg.windows_per_scene):
            last = s.duration_s - 1.0 / fps
            hi = min(last, t_e) if t_e is not None else last  # the scene freezes after the impact
            t_end = float(rng.uniform(span_s, max(hi, span_s)))
            step = span_s / n_frames
            idx = [
                min(max(math.floor((t_end - span_s + (j + 1) * step) * fps + 1e-6), 0), n_all - 1)
                for j in range(n_frames)
            ]
            t = frame_times[idx]
            tracks = agent_tracks(s, t)
            travel = ego_travel(s, t)
            frames = np.stack(
                [
                    render_frame(cam, look, float(x), views_at(tracks, j), _shake(s, float(tj), cam))
                    for j, (x, tj) in enumerate(zip(travel, t, strict=True))
                ]
            )
            q = min(int(round(float(t[-1]) * TRUTH_HZ)), len(truth["t_s"]) - 1)
            analysis, belief, action = perception_caption(
                truth["where"][q], truth["motion"][q], truth["ttc_s"][q], hazard_kind
            )
            yield CaptionedWindow(frames, idx, fps, analysis, belief, action)


def caption_example(w: CaptionedWindow, tokenizer: Any, vlm_cfg: Any, key: str) -> dict[str, Any]:
    """Model inputs of one window with its caption as the target (the SFT example builder)."""
    from vlalert.vlm.inputs import build_example

    row = {
        "video_id": key,
        "tick": 0,
        "frame_idx": w.frame_idx,
        "fps": w.fps,
        "analysis": w.analysis,
        "belief": w.belief.to_json(),
        "action": w.action,
    }
    return build_example(row, w.frames, tokenizer, vlm_cfg, with_target=True)


def caption_texts(windows: list[CaptionedWindow]) -> list[str]:
    """The corpus' targets as text (added to the tiny tokenizer's corpus, so its vocabulary has them)."""
    return [target_text(w.analysis, w.belief, w.action) for w in windows]


def pretrain(
    model: Any,
    examples: list[dict[str, Any]],
    pad_id: int,
    cfg: PretrainConfig,
    *,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Full-parameter caption training of `model` in place; returns the logged rows (step, losses, s)."""
    import torch

    from vlalert.vlm.inputs import collate
    from vlalert.vlm.loss import loss_sum

    n_val = int(len(examples) * cfg.val_fraction)
    train, val = examples[: len(examples) - n_val], examples[len(examples) - n_val :]
    if not train:
        raise ValueError("tiny.pretrain: the corpus has no training window (raise scenes)")
    strip = ("prompt_length",)

    def batch_of(items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate([{k: v for k, v in e.items() if k not in strip} for e in items], pad_id)

    def val_loss() -> float:
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for a in range(0, len(val), 16):
                s, n = loss_sum(model, batch_of(val[a : a + 16]))
                total, count = total + float(s), count + n
        return total / max(count, 1)

    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        return warm * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    rows: list[dict[str, float]] = []
    t0 = time.monotonic()
    for step in range(cfg.steps):
        model.train()
        picks = gen.integers(0, len(train), cfg.batch_size)
        total, count = loss_sum(model, batch_of([train[int(j)] for j in picks]))
        loss = total / max(count, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {
                "step": float(step + 1),
                "train_loss": float(loss.detach()),
                "val_loss": val_loss() if val else float("nan"),
                "elapsed_s": time.monotonic() - t0,
            }
            rows.append(row)
            if on_log is not None:
                on_log(row)
    model.eval()
    return rows
