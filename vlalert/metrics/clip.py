"""Per-clip series and the clip-level metrics of the collision-anticipation literature.

`ClipSeries` is the one input of every clip metric and of DAUS: the clip's ticks (sorted times,
decoded actions, scores) and its annotation. `clips_from_table` builds them from a per-tick table
(Arrow or polars) with columnar slicing, one Python step per clip, none per tick.

Clip-level AP / mTTA / TTA@R80 follow the `evaluation` function of the DSA / UString code:
a clip is predicted positive at threshold th when any of its scored ticks has p >= th (positives are
scored strictly before t_event, as the reference scores frames [:toa] and as the labels make a tick
at the collision post-event; negatives over all ticks); precision, recall and TTA are taken
per threshold, collapsed per distinct recall level (max precision, max TTA), AP is the area under
that PR curve (first point times its recall plus trapezoids), mTTA the mean TTA over the recall
levels, TTA@R80 the TTA of the recall level nearest 0.8. Where we depart from that code, and why:
- thresholds are the distinct scores themselves, not a 0.001 grid: the curve only changes there, so
  this is the exact limit of an ever finer grid and needs no assumption that scores lie in [0, 1];
- TTA (`mtta_s`) is in seconds, t_event − t_a (t_a: first tick time with p >= th), averaged over the
  true-positive clips. The reference's convention, (1 − f/toa)·T/fps with f the first frame at or
  above th, toa the accident frame and T the clip's frame count, is reported beside it as
  `mtta_ustring_s` (per clip (1 − t_a/t_event)·duration_s, NaN without clip durations). The two
  differ by the factor T/toa per clip (duration / t_event): on DAD, toa = 90 of T = 100 frames, the
  reference reads 1.11× ours; they coincide only where the accident is the clip's last frame;
- the last recall level takes the max like every other level (the reference takes one arbitrary
  element there, an artefact of its loop bounds), and recall 0 is dropped by its value rather than
  by position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from vlalert.actions import Action, action_codes
from vlalert.metrics.tick import onsets

if TYPE_CHECKING:  # polars loads on use: parsing the Snakefile imports this package
    import polars as pl

# Ticks are placed at k / tick_hz in float; comparing times with this slack keeps window edges
# inclusive when t_r - 1.0 lands a rounding step below a tick time.
TIME_EPS = 1e-9

CLIP_COLUMNS: tuple[str, ...] = ("source", "is_positive", "t_risky_s", "t_event_s")


@dataclass(frozen=True, eq=False)
class ClipSeries:
    """One clip's ticks and annotation, validated once so every metric can trust it.

    `actions` (and `labels`) are converted to int8 codes; t_s must be strictly increasing; positives
    need both t_risky_s and t_event_s (a clip without an event time gets t_r + alert_s from the caller).
    `labels` and `excluded` are only used by the tick-level metrics; `excluded` ticks are left out
    there but kept for DAUS and the clip metrics, whose own rules say which ticks count.
    """

    video_id: str
    source: str
    t_s: np.ndarray
    actions: np.ndarray
    p_alert: np.ndarray
    is_positive: bool
    t_risky_s: float | None = None
    t_event_s: float | None = None
    p_danger: np.ndarray | None = None
    labels: np.ndarray | None = None
    excluded: np.ndarray | None = None
    duration_s: float | None = None  # the clip's length (frames / fps): only the UString-style mTTA needs it

    def __post_init__(self) -> None:
        t = np.asarray(self.t_s, dtype=np.float64)
        n = t.size
        if n == 0:
            raise ValueError(f"clip {self.video_id}: no ticks")
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError(f"clip {self.video_id}: t_s must be finite and strictly increasing")
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "actions", self._sized("actions", action_codes(self.actions), n))
        object.__setattr__(self, "p_alert", self._score("p_alert", self.p_alert, n))
        if self.p_danger is not None:
            object.__setattr__(self, "p_danger", self._score("p_danger", self.p_danger, n))
        if self.labels is not None:
            object.__setattr__(self, "labels", self._sized("labels", action_codes(self.labels), n))
        if self.excluded is not None:
            object.__setattr__(self, "excluded", self._sized("excluded", np.asarray(self.excluded, bool), n))
        object.__setattr__(self, "is_positive", bool(self.is_positive))
        if self.is_positive:
            tr, te = self.t_risky_s, self.t_event_s
            if tr is None or te is None or not (math.isfinite(tr) and math.isfinite(te)):
                raise ValueError(f"positive clip {self.video_id}: t_risky_s and t_event_s are required")
            if te < tr:
                raise ValueError(f"positive clip {self.video_id}: t_event_s {te} before t_risky_s {tr}")
            object.__setattr__(self, "t_risky_s", float(tr))
            object.__setattr__(self, "t_event_s", float(te))

    def _sized(self, name: str, arr: np.ndarray, n: int) -> np.ndarray:
        if arr.shape != (n,):
            raise ValueError(f"clip {self.video_id}: {name} has {arr.size} values for {n} ticks")
        return arr

    def _score(self, name: str, values: Any, n: int) -> np.ndarray:
        arr = self._sized(name, np.asarray(values, dtype=np.float64), n)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"clip {self.video_id}: {name} holds NaN or infinite values")
        return arr

    def scored_mask(self) -> np.ndarray:
        """Ticks that clip metrics look at: strictly before t_event for positives, all for negatives."""
        if not self.is_positive:
            return np.ones(self.t_s.size, dtype=bool)
        return self.t_s < self.t_event_s - TIME_EPS


def _to_polars(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    import polars as pl

    if isinstance(table, pl.DataFrame):
        return table
    if isinstance(table, pa.Table):
        return pl.from_arrow(table)
    raise TypeError(f"expected a pyarrow Table or polars DataFrame, got {type(table).__name__}")


def clips_from_table(
    ticks: pa.Table | pl.DataFrame,
    clips: pa.Table | pl.DataFrame | None = None,
    *,
    action_col: str = "action",
    label_col: str | None = None,
    excluded_col: str | None = None,
    alert_s: float | None = None,
) -> list[ClipSeries]:
    """Group a per-tick table into one `ClipSeries` per video_id, ordered by video_id.

    `ticks` needs video_id, t_s, p_alert and `action_col` (decoded actions), optionally p_danger,
    `label_col` (label actions) and `excluded_col`. The clip columns (source, is_positive, t_risky_s,
    t_event_s) come from `clips` (one row per video_id, e.g. videos.parquet) or, without it, from
    `ticks` itself, where they must be constant within a clip. A positive without t_event_s gets
    t_risky_s + `alert_s` when `alert_s` is given, else it is an error.
    """
    df = _checked_ticks(ticks, clips, action_col, label_col, excluded_col, alert_s)
    return _series(df, action_col, label_col, excluded_col) if df.height else []


def _checked_ticks(
    ticks: pa.Table | pl.DataFrame,
    clips: pa.Table | pl.DataFrame | None,
    action_col: str,
    label_col: str | None,
    excluded_col: str | None,
    alert_s: float | None,
) -> pl.DataFrame:
    """The per-tick table with its clip columns joined and checked, sorted by (video_id, t_s)."""
    import polars as pl

    df = _to_polars(ticks)
    if "video_id" not in df.columns or df["video_id"].null_count():
        raise ValueError("per-tick table needs a video_id on every row")
    if clips is not None:
        cdf = _to_polars(clips)
        cdf = cdf.select(
            ["video_id", *CLIP_COLUMNS, *(["duration_s"] if "duration_s" in cdf.columns else [])]
        )
        if cdf["video_id"].is_duplicated().any():
            raise ValueError("clips table holds a video_id more than once")
        own = [c for c in (*CLIP_COLUMNS, "duration_s") if c in df.columns and c in cdf.columns]
        df = df.drop(own).join(cdf, on="video_id", how="left")
        unknown = df.filter(pl.col("is_positive").is_null())["video_id"].unique().to_list()
        if unknown:
            raise ValueError(f"ticks of clips missing from the clips table: {sorted(unknown)[:5]}")
    optional = [c for c in (label_col, excluded_col) if c is not None]
    needed = ["video_id", "t_s", "p_alert", action_col, *CLIP_COLUMNS, *optional]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"per-tick table lacks columns {missing}")
    nulls = [c for c in ("source", "is_positive", "t_s") if df[c].null_count()]
    if nulls:
        raise ValueError(f"per-tick table holds nulls in {nulls}")
    df = df.with_columns(pl.col("t_s", "p_alert", "t_risky_s", "t_event_s").cast(pl.Float64))
    if df.height == 0:
        return df

    varying = (
        df.group_by("video_id")
        .agg([pl.col(c).n_unique().alias(c) for c in CLIP_COLUMNS])
        .filter(pl.any_horizontal([pl.col(c) > 1 for c in CLIP_COLUMNS]))
    )
    if varying.height:
        raise ValueError(f"clip columns vary within clips {sorted(varying['video_id'].to_list())[:5]}")

    df = df.sort(["video_id", "t_s"])
    if alert_s is not None:
        df = df.with_columns(
            pl.when(pl.col("is_positive") & pl.col("t_event_s").is_null())
            .then(pl.col("t_risky_s") + alert_s)
            .otherwise(pl.col("t_event_s"))
            .alias("t_event_s")
        )
    return df


def _series(
    df: pl.DataFrame, action_col: str, label_col: str | None, excluded_col: str | None
) -> list[ClipSeries]:
    """One ClipSeries per clip of a checked, sorted per-tick table: numpy views sliced per clip."""
    import polars as pl

    n = df.height
    vid = df["video_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, vid[1:] != vid[:-1]])
    ends = np.r_[starts[1:], n]
    t = df["t_s"].to_numpy()
    actions = action_codes(df[action_col].to_numpy())
    p_alert = df["p_alert"].to_numpy()
    p_danger = df["p_danger"].to_numpy().astype(np.float64) if "p_danger" in df.columns else None
    labels = action_codes(df[label_col].to_numpy()) if label_col else None
    excluded = df[excluded_col].to_numpy().astype(bool) if excluded_col else None
    source = df["source"].to_numpy()
    is_pos = df["is_positive"].to_numpy()
    t_r = df["t_risky_s"].to_numpy()
    t_e = df["t_event_s"].to_numpy()
    duration = df["duration_s"].cast(pl.Float64).to_numpy() if "duration_s" in df.columns else None

    out: list[ClipSeries] = []
    for a, b in zip(starts, ends, strict=True):
        sl = slice(a, b)
        out.append(
            ClipSeries(
                video_id=str(vid[a]),
                source=str(source[a]),
                t_s=t[sl],
                actions=actions[sl],
                p_alert=p_alert[sl],
                is_positive=bool(is_pos[a]),
                t_risky_s=None if math.isnan(t_r[a]) else float(t_r[a]),
                t_event_s=None if math.isnan(t_e[a]) else float(t_e[a]),
                p_danger=None if p_danger is None else p_danger[sl],
                labels=None if labels is None else labels[sl],
                excluded=None if excluded is None else excluded[sl],
                duration_s=None if duration is None or math.isnan(duration[a]) else float(duration[a]),
            )
        )
    return out


@dataclass(frozen=True, eq=False)
class Anticipation:
    """Clip-level PR curve with TTA per recall level, and the numbers derived from it.

    `recall`, `precision`, `tta_s` are the collapsed curve (one point per distinct recall, ascending),
    kept for the report's figures. All numbers are NaN when there is no positive clip or no positive
    clip has a scored tick.
    """

    ap: float
    mtta_s: float
    tta_at_recall_s: float
    recall_target: float
    recall: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    tta_s: np.ndarray = field(repr=False)
    mtta_ustring_s: float = float("nan")


def _score_of(clip: ClipSeries, score: str) -> np.ndarray:
    values = getattr(clip, score)
    if values is None:
        raise ValueError(f"clip {clip.video_id} has no {score}")
    return values


def anticipation(
    clips: Sequence[ClipSeries],
    *,
    score: Literal["p_alert", "p_danger"] = "p_alert",
    recall_target: float = 0.8,
) -> Anticipation:
    """Clip-level AP, mTTA and TTA@R (see the module docstring for the convention).

    Runs in O(ticks · log ticks): per positive clip, the first crossing time of a threshold is a
    step function of the threshold whose steps are the clip's running maxima, so its TTA is added to
    a difference array over the thresholds instead of being recomputed for every threshold.
    """
    windows = []
    for c in clips:
        m = c.scored_mask()
        windows.append((c, _score_of(c, score)[m], c.t_s[m]))
    n_pos = sum(1 for c, _, _ in windows if c.is_positive)
    empty = np.zeros(0)
    nan = float("nan")
    scored = [s for _, s, _ in windows if s.size]
    if n_pos == 0 or not scored:
        return Anticipation(nan, nan, nan, recall_target, empty, empty, empty)
    thr = np.unique(np.concatenate(scored))

    maxima = np.array([s.max() if s.size else -np.inf for _, s, _ in windows])
    positive = np.array([c.is_positive for c, _, _ in windows])
    n_pred = maxima.size - np.searchsorted(np.sort(maxima), thr, side="left")
    tp = positive.sum() - np.searchsorted(np.sort(maxima[positive]), thr, side="left")

    starts, stops, values, values_u = [], [], [], []
    for c, s, t in windows:
        if not c.is_positive or s.size == 0:
            continue
        run_max = np.maximum.accumulate(s)
        first = np.flatnonzero(np.r_[True, run_max[1:] > run_max[:-1]])
        levels = run_max[first]
        hi = np.searchsorted(thr, levels, side="right")
        starts.append(np.r_[0, hi[:-1]])
        stops.append(hi)
        values.append(c.t_event_s - t[first])
        duration = c.duration_s if c.duration_s is not None else float("nan")
        values_u.append((1.0 - t[first] / c.t_event_s) * duration if c.t_event_s > 0 else t[first] * np.nan)

    def per_threshold(vals: list[np.ndarray]) -> np.ndarray:
        diff = np.zeros(thr.size + 1)
        v = np.concatenate(vals)
        np.add.at(diff, np.concatenate(starts), v)
        np.add.at(diff, np.concatenate(stops), -v)
        return np.cumsum(diff)[: thr.size]

    tta_sum = per_threshold(values)
    tta_u_sum = per_threshold(values_u)

    valid = tp > 0
    tp_v = tp[valid]
    precision_t = tp_v / n_pred[valid]
    tta_t = tta_sum[valid] / tp_v
    levels_tp, inverse = np.unique(tp_v, return_inverse=True)
    precision = np.full(levels_tp.size, -np.inf)
    tta = np.full(levels_tp.size, -np.inf)
    np.maximum.at(precision, inverse, precision_t)
    np.maximum.at(tta, inverse, tta_t)
    tta_u = np.full(levels_tp.size, -np.inf)
    with np.errstate(invalid="ignore"):  # NaN without clip durations, by design
        np.maximum.at(tta_u, inverse, tta_u_sum[valid] / tp_v)
    recall = levels_tp / n_pos

    ap = precision[0] * recall[0] + float(np.sum((precision[1:] + precision[:-1]) * np.diff(recall) / 2))
    at = int(np.argmin(np.abs(recall - recall_target)))
    return Anticipation(
        ap=float(ap),
        mtta_s=float(np.mean(tta)),
        tta_at_recall_s=float(tta[at]),
        recall_target=recall_target,
        mtta_ustring_s=float(np.mean(tta_u)),
        recall=recall,
        precision=precision,
        tta_s=tta,
    )


def recall_at_k(clips: Sequence[ClipSeries], ks: Sequence[float]) -> dict[float, float]:
    """R@k s: fraction of positive clips with an ALERT onset at t_a <= t_event - k, for each k.

    Any ALERT tick at or before t_event - k implies such an onset (the level before a clip is
    SILENT), so the first ALERT tick decides. NaN for every k when there is no positive clip.
    """
    lead = []
    for c in clips:
        if not c.is_positive:
            continue
        alert_t = c.t_s[(c.actions == Action.ALERT) & c.scored_mask()]
        lead.append(c.t_event_s - alert_t[0] if alert_t.size else -np.inf)
    if not lead:
        return {k: float("nan") for k in ks}
    lead_arr = np.asarray(lead)
    return {k: float(np.mean(lead_arr >= k - TIME_EPS)) for k in ks}


def false_alerts_per_hour(clips: Sequence[ClipSeries], tick_hz: float) -> tuple[float, float]:
    """ALERT onsets on negative clips per hour of negative driving, and those hours.

    Each tick stands for 1 / tick_hz seconds of driving, so a clip lasts n_ticks / tick_hz: this
    counts the driving the alerter was actually asked about (ticks start once a full frame window
    exists) and is independent of gaps in t_s. NaN when there is no negative tick.
    """
    if tick_hz <= 0:
        raise ValueError("tick_hz must be positive")
    n_onsets = 0
    n_ticks = 0
    for c in clips:
        if c.is_positive:
            continue
        n_onsets += int(np.count_nonzero(onsets(c.actions, Action.ALERT)))
        n_ticks += c.t_s.size
    hours = n_ticks / tick_hz / 3600.0
    return (n_onsets / hours if hours > 0 else float("nan")), hours
