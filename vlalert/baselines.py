"""The score stage's baselines: single scores as action distributions, the clock, the shuffle ablation.

Every policy of the score stage is decoded by the same FSM; this module turns the baselines'
signals into the (p_silent, p_observe, p_alert) rows the decoder reads (`single_score_probs`,
`danger_probs`, `one_hot_probs`, `vlm_actions`), fits the `time-only` baseline on the train split
(`TimeOnly`), and draws the within-clip shuffle of the `heads-shuffled` ablation. The policies
themselves are described in `vlalert.score`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from vlalert.actions import Action, action_codes
from vlalert.beliefs.text import parse_generation
from vlalert.heads import fsm
from vlalert.heads.config import FSMConfig, HeadsTrainConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- probabilities


def single_score_probs(p: np.ndarray) -> np.ndarray:
    """One score per tick -> (p_silent, p_observe, p_alert) = (1 - p, 0, p), p clipped to [0, 1]."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    out = np.zeros((p.size, 3), dtype=np.float64)
    out[:, Action.SILENT] = 1.0 - p
    out[:, Action.ALERT] = p
    return out


def danger_probs(p_danger: np.ndarray, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """The `danger` policy's (p_silent, p_observe, p_alert) from the DangerHead's per-tick danger.

    With the head's calibration (`vlalert.heads.train.danger_calibration`, fitted on val):
    p_alert = sigmoid(a logit(p) + b) of its `alert` map and p_observe + p_alert = the same of its
    `observe` map (never below p_alert). A signal whose map is null (or a head without calibration)
    reads p itself, as `single_score_probs` does.
    """
    p = np.clip(np.asarray(p_danger, dtype=np.float64), 0.0, 1.0)
    if not calibration:
        return single_score_probs(p)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(q) - np.log1p(-q)

    def signal(name: str) -> np.ndarray:
        ab = calibration.get(name)
        return p if ab is None else 1.0 / (1.0 + np.exp(-(ab[0] * logit + ab[1])))

    p_alert = signal("alert")
    p_up = np.maximum(signal("observe"), p_alert)
    return np.stack([1.0 - p_up, p_up - p_alert, p_alert], axis=1)


def one_hot_probs(codes: np.ndarray) -> np.ndarray:
    """Action codes [N] -> one-hot probabilities [N, 3]."""
    return np.eye(3, dtype=np.float64)[np.asarray(codes, dtype=np.int64)]


def decode_clips(probs: np.ndarray, offsets: np.ndarray, cfg: FSMConfig) -> np.ndarray:
    """FSM-decode every clip (clip c = rows offsets[c]:offsets[c+1]) in one batched pass.

    Clips are padded at the end to the longest; the decoder is causal, so padding never changes a
    real tick. The Python loop runs over tick positions, not over clips or ticks.
    """
    probs = np.asarray(probs, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64)
    pos = np.arange(int(lengths.max()))
    valid = pos[None, :] < lengths[:, None]
    entry = offsets[:-1, None] + np.minimum(pos[None, :], lengths[:, None] - 1)
    return fsm.decode(probs[entry], cfg)[valid]


def vlm_actions(texts: Sequence[str | None]) -> tuple[np.ndarray, int]:
    """Action codes parsed from generated texts; an unparsable (or null) text is SILENT.

    Returns (codes [N], number of unparsable texts). Only the action span is needed here, so a
    generation with a broken belief span but a valid action still counts as that action.
    """
    codes = np.zeros(len(texts), dtype=np.int64)
    bad = 0
    for i, text in enumerate(texts):
        action = parse_generation(text).action if text is not None else None
        if action is None:
            bad += 1
        else:
            codes[i] = Action[action]
    return codes, bad


# ----------------------------------------------------------------------------- the clock


def time_features(t_s: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[N, 2]: each tick's time since the clip's start (t_s) and since the clip's first tick.

    Clip c owns rows offsets[c]:offsets[c+1], in tick order. A prefix clip's times are its parent's
    (its ticks are the parent's), so its first tick is the parent's first tick too.
    """
    t = np.asarray(t_s, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    first = np.repeat(t[offsets[:-1]], np.diff(offsets)) if t.size else t
    return np.stack([t, t - first], axis=1)


def _time_basis(features: np.ndarray) -> np.ndarray:
    """Both times and their squares: lets p(action | time) rise and fall again within a clip."""
    return np.concatenate([features, features**2], axis=1)


@dataclass(frozen=True)
class TimeOnly:
    """The `time-only` baseline: p(action | time since clip start, time since first tick), nothing else.

    A multinomial logistic regression on the two times and their squares (standardised), fitted on
    the train split's trained ticks (not excluded, no prefix clip: the ticks the heads learn from),
    weighted like the heads' losses (`balance`: inverse-frequency class weights capped at
    `max_class_weight`; none with balance = none). A head that learns only where in the clip a tick
    lies scores like this baseline; the summary puts the two side by side.
    """

    mean: np.ndarray  # [F] of the basis
    scale: np.ndarray  # [F]
    coef: np.ndarray  # [3, F], rows in ACTIONS order
    intercept: np.ndarray  # [3]; -inf for an action the train split never shows

    def probs(self, features: np.ndarray) -> np.ndarray:
        """(p_silent, p_observe, p_alert) [N, 3] of ticks with `time_features` [N, 2]."""
        x = (_time_basis(np.asarray(features, dtype=np.float64)) - self.mean) / self.scale
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("mean", "scale", "coef", "intercept")}


def fit_time_only(train: pa.Table, heads_cfg: HeadsTrainConfig) -> TimeOnly:
    """Fit `TimeOnly` on a benchmark split (the train split) with the heads' class balance."""
    from sklearn.linear_model import LogisticRegression

    from vlalert.heads.train import class_weights

    df = (
        pl.from_arrow(train.select(["video_id", "tick", "t_s", "action", "excluded", "parent_id"]))
        .with_columns(pl.col("tick").cast(pl.Int32), pl.col("t_s").cast(pl.Float64))
        .sort(["video_id", "tick"])
    )
    vid = df["video_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, vid[1:] != vid[:-1]]) if vid.size else np.zeros(0, np.int64)
    features = time_features(df["t_s"].to_numpy(), np.append(starts, df.height))
    keep = (~df["excluded"].to_numpy()) & df["parent_id"].is_null().to_numpy()
    y = action_codes(df["action"].to_numpy()).astype(np.int64)[keep]
    if y.size == 0:
        raise ValueError("time-only baseline: the train split has no trained tick")
    basis = _time_basis(features[keep])
    mean, scale = basis.mean(axis=0), basis.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    x = (basis - mean) / scale
    coef = np.zeros((3, x.shape[1]))
    intercept = np.full(3, -np.inf)
    present = np.unique(y)
    if present.size == 1:  # one action only: it gets probability 1 everywhere
        intercept[present[0]] = 0.0
        return TimeOnly(mean, scale, coef, intercept)
    weight = np.ones(y.size)
    if heads_cfg.balance != "none":
        weight = class_weights(np.bincount(y, minlength=3), heads_cfg.max_class_weight)[y].astype(np.float64)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(x, y, sample_weight=weight)
    if present.size == 2:  # sklearn fits one logit for two classes: p(second) = sigmoid(w x + b)
        coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
        intercept[present[0]] = 0.0
    else:
        coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    return TimeOnly(mean, scale, coef, intercept)


# ----------------------------------------------------------------------------- the shuffle ablation

SHUFFLE_SALT = 14  # the shuffle of seed s draws from default_rng([SHUFFLE_SALT, s])


def shuffle_within_clips(rows: np.ndarray, offsets: np.ndarray, scored: np.ndarray, seed: int) -> np.ndarray:
    """`rows` with the cache rows of each clip's scored ticks permuted among those ticks.

    The `heads-shuffled` policy runs the heads of seed `seed` on these rows: every tick keeps its
    time, its label and its clip, but reads the z/r of another scored tick of the same clip. What
    the heads score beyond the clock and the clip's identity comes from which tick's hidden states
    they read; a head wired to the wrong tokens, or ticks misaligned with their labels, loses
    nothing here. Excluded (post-event) ticks keep their own rows: they are not scored, and moving
    the collision's frames before the event would hand the shuffled heads evidence they never had.
    """
    rng = np.random.default_rng([SHUFFLE_SALT, int(seed)])
    out = np.asarray(rows, dtype=np.int64).copy()
    scored = np.asarray(scored, dtype=bool)
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        idx = a + np.flatnonzero(scored[a:b])
        out[idx] = out[rng.permutation(idx)]
    return out
