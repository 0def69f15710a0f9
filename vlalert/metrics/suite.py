"""All metrics of a set of clips in one flat dict, per source, and mean ± std over seeds.

Every scorer (our heads, the gate baseline, the VLM's own action, always-SILENT/ALERT) goes
through `summarize`, so baselines and models are compared by the same code on the same ticks.
`summarize` returns a flat dict of floats, which the score stage turns into the
metric × source × seed table; `aggregate_seeds` gives mean ± std over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vlalert.metrics.clip import ClipSeries, anticipation, false_alerts_per_hour, recall_at_k
from vlalert.metrics.config import ScoringConfig
from vlalert.metrics.daus import daus
from vlalert.metrics.tick import tick_metrics

OVERALL = "all"


def recall_key(k: float) -> str:
    """Name of the R@k metric in `summarize`'s dict, e.g. 1.0 -> 'recall_at_1s', 0.5 -> 'recall_at_0.5s'."""
    return f"recall_at_{k:g}s"


def _tick_part(clips: Sequence[ClipSeries]) -> dict[str, float]:
    with_labels = [c for c in clips if c.labels is not None]
    if with_labels and len(with_labels) != len(clips):
        raise ValueError("either every clip or no clip must carry tick labels")
    if not with_labels:
        return tick_metrics(np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0))
    keep = [np.ones(c.t_s.size, bool) if c.excluded is None else ~c.excluded for c in clips]
    return tick_metrics(
        np.concatenate([c.labels[k] for c, k in zip(clips, keep, strict=True)]),
        np.concatenate([c.actions[k] for c, k in zip(clips, keep, strict=True)]),
        np.concatenate([c.p_alert[k] for c, k in zip(clips, keep, strict=True)]),
    )


def summarize(
    clips: Sequence[ClipSeries],
    cfg: ScoringConfig,
    *,
    tick_hz: float,
    clip_score: Literal["p_alert", "p_danger"] = "p_alert",
) -> dict[str, float]:
    """All metrics of one set of clips as a flat dict of floats (NaN where a metric is undefined).

    Keys: n_clips, n_positive, n_negative; daus, daus_U, daus_P; tick_n, tick_n_alert, tick_auroc,
    tick_ap, tick_macro_f1, tick_balanced_acc (over non-excluded ticks, NaN without labels);
    clip_ap, clip_mtta_s, clip_mtta_ustring_s (the reference's convention),
    clip_tta_at_r{target}_s (on `clip_score`); recall_at_{k}s for each k;
    false_alerts_per_hour, negative_hours.
    """
    n_pos = sum(1 for c in clips if c.is_positive)
    out: dict[str, float] = {
        "n_clips": float(len(clips)),
        "n_positive": float(n_pos),
        "n_negative": float(len(clips) - n_pos),
    }
    d = daus(clips, cfg)
    out.update(daus=d.daus, daus_U=d.U, daus_P=d.P)
    out.update(_tick_part(clips))
    ant = anticipation(clips, score=clip_score, recall_target=cfg.tta_recall)
    out.update(
        {
            "clip_ap": ant.ap,
            "clip_mtta_s": ant.mtta_s,
            "clip_mtta_ustring_s": ant.mtta_ustring_s,
            f"clip_tta_at_r{round(cfg.tta_recall * 100):d}_s": ant.tta_at_recall_s,
        }
    )
    out.update({recall_key(k): v for k, v in recall_at_k(clips, cfg.recall_k_s).items()})
    rate, hours = false_alerts_per_hour(clips, tick_hz)
    out.update(false_alerts_per_hour=rate, negative_hours=hours)
    return out


def summarize_by_source(
    clips: Sequence[ClipSeries],
    cfg: ScoringConfig,
    *,
    tick_hz: float,
    clip_score: Literal["p_alert", "p_danger"] = "p_alert",
) -> dict[str, dict[str, float]]:
    """`summarize` per source and over all clips (key 'all'), in sorted source order."""
    by_source: dict[str, list[ClipSeries]] = {}
    for c in clips:
        by_source.setdefault(c.source, []).append(c)
    if OVERALL in by_source:
        raise ValueError(f"a source may not be named {OVERALL!r}: it names the overall summary")
    out = {s: summarize(by_source[s], cfg, tick_hz=tick_hz, clip_score=clip_score) for s in sorted(by_source)}
    out[OVERALL] = summarize(clips, cfg, tick_hz=tick_hz, clip_score=clip_score)
    return out


@dataclass(frozen=True)
class MeanStd:
    """A metric over seeds: mean and sample std (ddof=1) of the finite values, and how many there were.

    A seed whose metric is NaN (e.g. a single-class subset) is left out and `n` says so; std is NaN
    with fewer than two finite values rather than a misleading 0.
    """

    mean: float
    std: float
    n: int


def aggregate_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, MeanStd]:
    """Mean ± std per metric over a list of `summarize` dicts (one per seed); all must share keys."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = list(runs[0])
    for i, r in enumerate(runs[1:], start=1):
        if set(r) != set(keys):
            raise ValueError(f"run {i} has metrics {sorted(set(r) ^ set(keys))} that run 0 lacks or has")
    out: dict[str, MeanStd] = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in runs], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        mean = float(vals.mean()) if vals.size else math.nan
        std = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        out[k] = MeanStd(mean=mean, std=std, n=int(vals.size))
    return out
