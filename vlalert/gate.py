"""The gate stage: a collision probability p_collision(t) per clip and tick.

The relabel stage uses it (BADAS gating, see `vlalert.labels`) to keep ALERT only on clips where a
collision predictor actually sees the ego vehicle in danger. A source's gate is a *chain* of
providers tried in order per clip: the first that has evidence for the clip (any non-null score)
scores all its ticks, and the `provider` column says which one did ("none" when no provider in the
chain has evidence). Consensus rows cover only the test clips of DAD, DoTA and DADA-2000, so a
consensus-only gate would erase every ALERT of the training split; `[consensus, badas]` scores
the training clips with the model, as the published relabeling does. Providers:

- `scene`: synthetic demo clips only; from the renderer's ground-truth time-to-collision.
- `consensus`: from the BADAS consensus row that ingest stored in `meta["consensus"]`.
- `scores_file`: precomputed scores (e.g. Open-BADAS run elsewhere) in a Parquet or CSV file.
- `badas`: Open-BADAS itself (V-JEPA2 encoder + attentive probe, `vlalert.badas`), GPU when present.

Each provider only reads gate configuration and its own inputs (never `labels.*`), so changing a
label rule reruns relabel but not the gate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vlalert.config import GateConfig, SourceConfig, WorkflowConfig
from vlalert.schemas import table_from_rows
from vlalert.sources import consensus
from vlalert.synthetic.truth import read_scene_truth
from vlalert.ticks import TIME_EPS, tick_times

# `scene`: p = clip(1 - ttc / SCENE_TTC_HORIZON_S, 0, 1). With 6 s an ego collision course reads
# p = 0.5 at ttc = 3 s and p = 0.67 at ttc = 2 s (the usual alert lead), so it passes alert_min
# (0.5) around the risky time, while clips that are never on a collision course (ttc null:
# negatives, collisions between other agents) read 0.
SCENE_TTC_HORIZON_S = 6.0

# `consensus`: the ceiling of a clip whose consensus says the ego vehicle is not involved. It
# matches labels.non_ego_danger_cap's default: "something happens, but not to us".
CONSENSUS_NON_EGO_CAP = 0.5


class ProviderNotAvailable(RuntimeError):
    """The configured gate provider cannot run in this installation."""


# ---------------------------------------------------------------- pure score functions


def scene_p_from_ttc(ttc_s: float | None) -> float:
    """Monotone map from time-to-collision to a collision probability (null ttc: not on a course, 0)."""
    if ttc_s is None or (isinstance(ttc_s, float) and math.isnan(ttc_s)):
        return 0.0
    return float(min(max(1.0 - ttc_s / SCENE_TTC_HORIZON_S, 0.0), 1.0))


def consensus_p(t: float, t_alert: float, t_collision: float | None, ego: bool, gate: GateConfig) -> float:
    """Collision probability at time t from a human consensus alert time.

    A stand-in for a learned predictor shaped like one: it rises before the humans' alert time
    (0 at t_alert - consensus_ramp_s, linear to 0.5 at t_alert, so a clip whose risky time is the
    consensus alert time passes gate.alert_min = 0.5 from t_alert on), then linear to 1.0 at the
    consensus collision time (or over consensus_ramp_s / 2 when no later collision time is given),
    1.0 after. A clip whose consensus says "not ego" never exceeds CONSENSUS_NON_EGO_CAP.
    """
    ramp = gate.consensus_ramp_s
    if t < t_alert - ramp:
        p = 0.0
    elif t < t_alert:
        p = 0.5 * (t - (t_alert - ramp)) / ramp
    else:
        end = t_collision if t_collision is not None and t_collision > t_alert else t_alert + ramp / 2
        p = 0.5 + 0.5 * min((t - t_alert) / (end - t_alert), 1.0)
    if not ego:
        p = min(p, CONSENSUS_NON_EGO_CAP)
    return float(p)


def last_at_or_before(times: np.ndarray, values: list[float | None], t: float) -> float | None:
    """The value of the last sample at or before t (`times` ascending), None when there is none."""
    i = int(np.searchsorted(times, t + TIME_EPS, side="right")) - 1
    return None if i < 0 else values[i]


# ---------------------------------------------------------------- providers


def _clip_ticks(clip: dict[str, Any], cfg: WorkflowConfig) -> np.ndarray:
    return tick_times(int(clip["n_frames"]), float(clip["fps"]), cfg.ticks, cfg.window)


def _scene_scorer(videos: list[dict[str, Any]], src: SourceConfig, cfg: WorkflowConfig) -> Callable:
    if not src.scene_truth:
        raise ValueError("gate provider 'scene' needs sources.<name>.scene_truth")
    path = Path(src.scene_truth)
    truth = read_scene_truth(path, src.kind)
    clips = truth.get("clips", {})
    missing = sorted(c["video_id"] for c in videos if c["video_id"] not in clips)
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ValueError(
            f"{path}: no scene truth for clips {shown}. The 'scene' gate provider reads the demo "
            "renderer's ground truth and is for synthetic clips only; use consensus, scores_file "
            "or badas on real data."
        )

    def score(clip: dict[str, Any], ts: np.ndarray) -> list[float | None]:
        timeline = clips[clip["video_id"]]["timeline"]
        times = np.asarray(timeline["t_s"], dtype=np.float64)
        ttc = timeline["ttc_s"]
        if len(ttc) != len(times):
            raise ValueError(f"{path}: clip {clip['video_id']}: timeline t_s and ttc_s differ in length")
        order = np.argsort(times, kind="stable")
        times = times[order]
        ps = [scene_p_from_ttc(ttc[i]) for i in order]
        return [last_at_or_before(times, ps, float(t)) for t in ts]

    return score


def _as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _consensus_scorer(videos: list[dict[str, Any]], src: SourceConfig, cfg: WorkflowConfig) -> Callable:
    def score(clip: dict[str, Any], ts: np.ndarray) -> list[float | None]:
        meta = json.loads(clip["meta"] or "{}")
        row = meta.get("consensus")
        # Times in seconds of this clip, converted by ingest from the consensus file's own clock.
        times = meta.get("consensus_s") or {}
        t_alert = _as_float(times.get(consensus.ALERT)) if row else None
        if t_alert is None:  # no applied consensus row (or no alert time in it): no evidence either way
            return [None] * len(ts)
        t_coll = _as_float(times.get(consensus.COLLISION))
        # Only an explicit "yes" counts as ego: an empty or odd value is treated as not ego (capped).
        ego = str(row.get(consensus.EGO, "")).strip().lower() == "yes"
        return [consensus_p(float(t), t_alert, t_coll, ego, cfg.gate) for t in ts]

    return score


def read_scores_file(path: str | Path) -> pa.Table:
    """A precomputed score file (Parquet, or CSV by its .csv suffix) as video_id, t_s, p_collision."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"video_id": pa.string(), "t_s": pa.float64(), "p_collision": pa.float64()}
            ),
        )
    else:
        table = pq.read_table(path)
    missing = [c for c in ("video_id", "t_s", "p_collision") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: gate score file lacks columns {missing}")
    table = table.select(["video_id", "t_s", "p_collision"]).cast(
        pa.schema([("video_id", pa.string()), ("t_s", pa.float64()), ("p_collision", pa.float64())])
    )
    for col in ("video_id", "t_s"):
        if table.column(col).null_count:
            raise ValueError(f"{path}: column {col!r} holds empty values")
    ps = [p for p in table.column("p_collision").to_pylist() if p is not None]
    bad = [p for p in ps if not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"{path}: p_collision must lie in [0, 1], found {bad[:5]}")
    return table


def _scores_file_scorer(videos: list[dict[str, Any]], src: SourceConfig, cfg: WorkflowConfig) -> Callable:
    if not src.gate_scores:
        raise ValueError("gate provider 'scores_file' needs sources.<name>.gate_scores")
    table = read_scores_file(src.gate_scores)
    per_clip: dict[str, list[tuple[float, float | None]]] = {}
    for vid, t, p in zip(
        *(table.column(c).to_pylist() for c in ("video_id", "t_s", "p_collision")), strict=True
    ):
        per_clip.setdefault(vid, []).append((t, p))
    series = {}
    for vid, pairs in per_clip.items():
        pairs.sort(key=lambda x: x[0])
        series[vid] = (np.array([t for t, _ in pairs], dtype=np.float64), [p for _, p in pairs])

    def score(clip: dict[str, Any], ts: np.ndarray) -> list[float | None]:
        if clip["video_id"] not in series:
            return [None] * len(ts)
        times, values = series[clip["video_id"]]
        return [last_at_or_before(times, values, float(t)) for t in ts]

    return score


def _badas_scorer(videos: list[dict[str, Any]], src: SourceConfig, cfg: WorkflowConfig) -> Callable:
    # torch and transformers load only here, when a source actually uses Open-BADAS.
    try:
        from vlalert.badas.provider import BadasScorer
    except ImportError as err:
        raise ProviderNotAvailable(f"gate provider 'badas' needs torch and transformers: {err}") from None
    return BadasScorer(cfg.gate.badas, total=len(videos))


_PROVIDERS: dict[str, Callable] = {
    "scene": _scene_scorer,
    "consensus": _consensus_scorer,
    "scores_file": _scores_file_scorer,
    "badas": _badas_scorer,
}


NO_PROVIDER = "none"  # the provider column of a clip that no provider of the chain has evidence for


def gate_scores(videos: pa.Table, chain: str | list[str], src: SourceConfig, cfg: WorkflowConfig) -> pa.Table:
    """GATE table: one row per (clip, tick) of `videos`, ticks from `vlalert.ticks.tick_times`.

    `chain` is tried in order per clip; the first provider with any non-null score for a clip scores
    all of its ticks. A provider is built only when a clip reaches it, so `[consensus, badas]` on a
    source whose clips all have consensus rows never loads the model. A null p_collision means no
    provider has evidence at that tick (see `vlalert.labels` for what gating does with it).
    Rows are sorted by video_id, t_s.
    """
    chain = [chain] if isinstance(chain, str) else list(chain)
    unknown = [p for p in chain if p not in _PROVIDERS]
    if unknown or not chain:
        raise ValueError(f"unknown gate provider(s) {unknown or chain}; choose from {sorted(_PROVIDERS)}")
    clips = sorted(videos.to_pylist(), key=lambda c: c["video_id"])
    scorers: dict[str, Callable] = {}
    rows = []
    for i, clip in enumerate(clips):
        ts = _clip_ticks(clip, cfg)
        name, ps = NO_PROVIDER, [None] * len(ts)
        for provider in chain:
            if provider not in scorers:  # built for the clips still unscored from here on
                scorers[provider] = _PROVIDERS[provider](clips[i:], src, cfg)
            got = scorers[provider](clip, ts)
            if any(p is not None for p in got):
                name, ps = provider, got
                break
        for t, p in zip(ts, ps, strict=True):
            rows.append({"video_id": clip["video_id"], "t_s": float(t), "p_collision": p, "provider": name})
    return table_from_rows("gate", rows)
