"""DAUS, the deployment-aware utility score (DESIGN.md, "Scoring").

A deployed alerter must warn in time (timeliness U, over positive clips) and stay trusted (trust P,
over negative clips); DAUS is their harmonic mean, so that neither always-SILENT (U = 0) nor
always-ALERT (P small) scores well. Everything is computed on onsets of decoded actions, because
an alert the driver experiences is an onset, not a tick: a held ALERT is one warning, and a
flickering one is many.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vlalert.actions import Action, action_codes
from vlalert.metrics.clip import TIME_EPS, ClipSeries
from vlalert.metrics.config import ScoringConfig
from vlalert.metrics.tick import onsets


def clip_timeliness(
    t_s: np.ndarray, actions: np.ndarray, t_risky_s: float, t_event_s: float, cfg: ScoringConfig
) -> float:
    """u of one positive clip.

    Ticks after t_event are cut first: what the alerter does once the crash happened is not scored.
    Window edges are inclusive (with TIME_EPS slack for float tick times).
    """
    t = np.asarray(t_s, dtype=np.float64)
    a = action_codes(actions)
    keep = t <= t_event_s + TIME_EPS
    t, a = t[keep], a[keep]
    alert_mask = onsets(a, Action.ALERT)
    alert_on = t[alert_mask]
    w_lo = t_risky_s - cfg.early_tol_s - TIME_EPS
    in_window = alert_on[alert_on >= w_lo]
    n_early = int(np.count_nonzero(alert_on < w_lo))
    # A jump straight to ALERT before W is an early episode, not an OBSERVE: it earns no beta.
    observe_on = t[onsets(a, Action.OBSERVE) & ~(alert_mask & (t < w_lo))]
    if in_window.size:
        lead = max(t_event_s - float(in_window[0]), 0.0)
        u = cfg.alpha + (1.0 - cfg.alpha) * min(lead / cfg.L_s, 1.0)
    elif np.any(observe_on >= t_risky_s - cfg.observe_s - TIME_EPS):
        u = cfg.beta
    else:
        u = 0.0
    return max(0.0, u - cfg.gamma * n_early)


def clip_trust(actions: np.ndarray, cfg: ScoringConfig) -> float:
    """p of one negative clip: every ALERT onset costs gamma, time spent at OBSERVE+ costs delta."""
    a = action_codes(actions)
    if a.size == 0:
        raise ValueError("a negative clip needs at least one tick")
    n_alerts = int(np.count_nonzero(onsets(a, Action.ALERT)))
    frac_raised = float(np.count_nonzero(a >= Action.OBSERVE)) / a.size
    return max(0.0, 1.0 - cfg.gamma * n_alerts - cfg.delta * frac_raised)


def harmonic(u: float, p: float) -> float:
    """2UP/(U+P), 0 when both are 0, NaN when either is undefined (no clip of that kind)."""
    if math.isnan(u) or math.isnan(p):
        return float("nan")
    if u + p == 0:
        return 0.0
    return 2.0 * u * p / (u + p)


@dataclass(frozen=True)
class DausResult:
    """DAUS with its two parts and the per-clip values (u for positives, p for negatives, by video_id).

    U (P) is NaN when the set holds no positive (negative) clip; DAUS is then NaN too, since a
    harmonic mean with an undefined part would silently report the other part's emptiness as 0.
    """

    daus: float
    U: float
    P: float
    u: dict[str, float] = field(repr=False)
    p: dict[str, float] = field(repr=False)


def daus(clips: Sequence[ClipSeries], cfg: ScoringConfig) -> DausResult:
    """DAUS of a set of clips (decoded actions)."""
    u: dict[str, float] = {}
    p: dict[str, float] = {}
    for c in clips:
        if c.video_id in u or c.video_id in p:
            raise ValueError(f"clip {c.video_id} appears twice")
        if c.is_positive:
            u[c.video_id] = clip_timeliness(c.t_s, c.actions, c.t_risky_s, c.t_event_s, cfg)
        else:
            p[c.video_id] = clip_trust(c.actions, cfg)
    big_u = float(np.mean(list(u.values()))) if u else float("nan")
    big_p = float(np.mean(list(p.values()))) if p else float("nan")
    return DausResult(daus=harmonic(big_u, big_p), U=big_u, P=big_p, u=u, p=p)
