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
use the belief-span format SFT trains on, phrased as the `rules` provider phrases its targets, but
not the benchmark's label rules (risky time + 2 s, gating): the model learns to see, the SFT stage
teaches it the task.

Training is next-token loss on the caption (AdamW, warmup then cosine) of every parameter but the
vision tower's, which the first phase trained; on CPU in fp32, deterministic from the seed. Written
by hand rather than with `transformers.Trainer` because it is a few hundred steps over an in-memory
list: no checkpoints, resumption or distribution are wanted here (the rule reruns from scratch in
about two minutes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlalert.beliefs.schema import MOTIONS, WHERES, Belief
from vlalert.beliefs.text import target_text
from vlalert.config import Phrasing, WindowConfig
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
    proximity: float  # exp(-gap / 15 m) to the salient road user in view, 0 with nobody in view


def perception_caption(
    where: str, motion: str, ttc_s: float | None, hazard_kind: str, key: str | None = None, scenario: str = ""
) -> tuple[str, Belief, str]:
    """(analysis, belief, action) of what is visible: the salient road user, and how soon it would hit.

    `where == "none"` means nobody is in view. A road user in view but on no collision course
    (ttc None) is described without being called a hazard, as the scene truth does. The analysis is
    phrased as the `rules` belief provider phrases its targets (`analysis_text`, keyed by `key`, None
    for the plain wording; the no-hazard sentences of the synthetic `scenario`): the demo VLM comes
    to SFT fluent in the targets' wording, as a real one comes fluent in English, and SFT's few
    ticks go to the task's labels.
    """
    from vlalert.beliefs.rules import analysis_text, clear_kind

    if where == "none":
        clear = Belief(hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False)
        return analysis_text(clear, "SILENT", key, clear=clear_kind(scenario)), clear, "SILENT"
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
    return analysis_text(belief, action, key, clear=clear_kind(scenario)), belief, action


def render_corpus(
    cfg: PretrainConfig, window: WindowConfig, phrasing: Phrasing = "varied"
) -> Iterator[CaptionedWindow]:
    """The captioned windows of the corpus, deterministic from `cfg.seed`; each sees `window.frames`
    frames over `window.span_s`, picked as a tick's are (`vlalert.ticks.window_frames`); captions
    worded as the rules provider words its targets with `phrasing`."""
    from vlalert.beliefs.rules import phrasing_key
    from vlalert.synthetic.render import Camera, render_clip_frames
    from vlalert.synthetic.scenarios import (
        POSITIVE_SCENARIOS,
        SCENARIOS,
        TRUTH_HZ,
        draw_times,
        make_scenario,
        stable_rng,
        timeline,
    )
    from vlalert.ticks import window_frames

    cam = Camera.for_size(cfg.width, cfg.height)
    span_s = window.span_s
    for i in range(cfg.scenes):
        rng = stable_rng(cfg.seed, "pretrain", i)
        fps = CORPUS_FPS[i % len(CORPUS_FPS)]
        name = SCENARIOS[int(rng.integers(len(SCENARIOS)))]
        positive = name in POSITIVE_SCENARIOS
        n_all, t_r, t_e = draw_times(fps, rng, cfg.max_duration_s, positive)
        s = make_scenario(name, fps, n_all, t_r, t_e, rng)
        truth = timeline(s)
        hazard_kind = "pedestrian" if name == "pedestrian-crossing" else "vehicle"
        frame_times = s.frame_times()
        for j in range(cfg.windows_per_scene):
            last = s.duration_s - 1.0 / fps
            hi = min(last, t_e) if t_e is not None else last  # the scene freezes after the impact
            lo = span_s
            if t_r is not None and rng.random() < cfg.hazard_share:
                lo = max(span_s, min(t_r, hi))
            t_end = float(rng.uniform(lo, max(hi, lo)))
            idx = window_frames(t_end, fps, n_all, window)
            frames = render_clip_frames(s, cam, idx)
            t = frame_times[idx]
            q = min(int(round(float(t[-1]) * TRUTH_HZ)), len(truth["t_s"]) - 1)
            analysis, belief, action = perception_caption(
                truth["where"][q],
                truth["motion"][q],
                truth["ttc_s"][q],
                hazard_kind,
                phrasing_key(phrasing, f"pretrain{i}|{j}"),
                name,
            )
            gap = truth["gap_m"][q]
            proximity = math.exp(-float(gap) / 15.0) if gap is not None and belief.where != "none" else 0.0
            yield CaptionedWindow(frames, idx, fps, analysis, belief, action, proximity)


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


def vision_targets(windows: list[CaptionedWindow]) -> np.ndarray:
    """[N, 4] float32: proximity, danger, where index, motion index of each window's last instant."""
    return np.array(
        [
            (w.proximity, w.belief.danger, WHERES.index(w.belief.where), MOTIONS.index(w.belief.motion))
            for w in windows
        ],
        dtype=np.float32,
    )


def pretrain_vision(
    model: Any,
    examples: list[dict[str, Any]],
    targets: np.ndarray,
    cfg: PretrainConfig,
    *,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train the vision tower alone on the renderer's truth through a linear probe of its pooled output.

    The probe reads, per temporal group, the mean and the max over the merged tokens (where a road
    user is matters as much as that it is there); it is thrown away after this phase.
    """
    import torch
    import torch.nn.functional as F

    vis = model.model.visual
    dim = int(model.config.vision_config.out_hidden_size)
    grid = examples[0]["video_grid_thw"]
    groups, per_group = (
        int(grid[0, 0]),
        int(grid[0, 1] * grid[0, 2]) // model.config.vision_config.spatial_merge_size**2,
    )
    if any(not torch.equal(e["video_grid_thw"], grid) for e in examples):
        raise ValueError("tiny.pretrain: every window must have the same frame grid")
    y = torch.from_numpy(targets)
    n_val = int(len(examples) * cfg.val_fraction)
    n_train = len(examples) - n_val
    torch.manual_seed(cfg.seed + 1)
    probe = torch.nn.Linear(2 * dim * groups, 2 + len(WHERES) + len(MOTIONS))
    params = [*vis.parameters(), *probe.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.vision_lr, weight_decay=cfg.weight_decay)
    gen = np.random.default_rng(cfg.seed + 1)

    def outputs(idx: torch.Tensor) -> torch.Tensor:
        px = torch.stack([examples[int(i)]["pixel_values_videos"] for i in idx])  # [B, patches, 1536]
        pooled = vis(
            px.reshape(-1, px.shape[-1]), grid_thw=grid.repeat(len(idx), 1), return_dict=True
        ).pooler_output
        pooled = pooled.reshape(len(idx), groups, per_group, dim)
        return probe(torch.cat([pooled.mean(2), pooled.amax(2)], -1).reshape(len(idx), -1))

    def loss_of(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = 2 + len(WHERES)
        return (
            4.0 * F.mse_loss(torch.sigmoid(out[:, :2]), t[:, :2])
            + F.cross_entropy(out[:, 2:w], t[:, 2].long())
            + F.cross_entropy(out[:, w:], t[:, 3].long())
        )

    rows: list[dict[str, float]] = []
    t0 = time.monotonic()
    for step in range(cfg.vision_steps):
        vis.train()
        idx = torch.from_numpy(gen.integers(0, n_train, cfg.vision_batch_size))
        loss = loss_of(outputs(idx), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.vision_steps - 1:
            row = {"step": float(step + 1), "train_loss": float(loss.detach()), "elapsed_s": 0.0}
            if n_val:
                vis.eval()
                with torch.no_grad():
                    idx = torch.arange(n_train, len(examples))
                    out = outputs(idx)
                    row["val_loss"] = float(loss_of(out, y[idx]))
                    danger, truth = torch.sigmoid(out[:, 1]).numpy(), targets[n_train:, 1]
                    if danger.std() > 0 and truth.std() > 0:
                        row["val_danger_corr"] = float(np.corrcoef(danger, truth)[0, 1])
            row["elapsed_s"] = time.monotonic() - t0
            rows.append(row)
            if on_log is not None:
                on_log(row)
    vis.eval()
    return rows


def pretrain(
    model: Any,
    examples: list[dict[str, Any]],
    pad_id: int,
    cfg: PretrainConfig,
    *,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Caption training of `model` in place; returns the logged rows (step, losses, s).

    Every parameter trains but the vision tower's: the vision phase gave it what the renderer knows,
    and the captions' few content tokens would only blur that (measured on the demo: the base model's
    generated danger ranks the test split's ALERT ticks better, and the phase runs ~20% faster).
    """
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
    vision = list(model.model.visual.parameters())
    for p in vision:  # the tower keeps what the vision phase taught it (see the docstring)
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

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
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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
    for p in vision:
        p.requires_grad_(True)
    model.eval()
    return rows
