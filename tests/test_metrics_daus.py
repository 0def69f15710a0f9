"""DAUS: hand-computed cases pinned against DESIGN.md "Scoring".

Defaults: α=.5, L=3 s, β=.3, γ=.25, δ=.5, early_tol=1 s, observe=4 s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from vlalert.metrics.clip import ClipSeries
from vlalert.metrics.config import ScoringConfig
from vlalert.metrics.daus import clip_timeliness, clip_trust, daus
from vlalert.metrics.tick import onsets

CFG = ScoringConfig()
CODE = {"S": "SILENT", "O": "OBSERVE", "A": "ALERT"}


def clip(
    vid: str,
    acts: str,
    *,
    t0: float = 0.0,
    positive: bool = False,
    t_r: float | None = None,
    t_e: float | None = None,
) -> ClipSeries:
    """A clip at 1 Hz from a compact action string, e.g. 'SSOOAA'."""
    names = [CODE[ch] for ch in acts]
    return ClipSeries(
        video_id=vid,
        source="src",
        t_s=t0 + np.arange(len(acts), dtype=float),
        actions=names,
        p_alert=np.array([0.9 if n == "ALERT" else 0.1 for n in names]),
        is_positive=positive,
        t_risky_s=t_r,
        t_event_s=t_e,
    )


def u_of(acts: str, t_r: float, t_e: float, t0: float = 0.0, cfg: ScoringConfig = CFG) -> float:
    c = clip("p", acts, t0=t0, positive=True, t_r=t_r, t_e=t_e)
    return clip_timeliness(c.t_s, c.actions, t_r, t_e, cfg)


def test_onsets_start_from_silent_and_count_each_rise():
    a = np.array([2, 1, 2, 0, 0, 2, 2])
    assert np.flatnonzero(onsets(a, 2)).tolist() == [0, 2, 5]
    # OBSERVE-level onsets: rising to >= OBSERVE from below; A->O->A is one raised episode.
    assert np.flatnonzero(onsets(a, 1)).tolist() == [0, 5]
    assert np.flatnonzero(onsets(np.array([0, 0]), 2)).tolist() == []


def test_always_silent_scores_zero():
    clips = [
        clip("p1", "S" * 11, positive=True, t_r=6, t_e=8),
        clip("p2", "S" * 5, t0=2, positive=True, t_r=2.5, t_e=4.5),
        clip("n1", "S" * 10),
    ]
    r = daus(clips, CFG)
    assert r.U == 0.0
    assert r.P == 1.0
    assert r.daus == 0.0


def test_always_alert_scores_low_exactly():
    clips = [
        # Long clip: the onset at t=2 is before W=[7,10] and before the observe range [4,10]: u = 0.
        clip("p1", "A" * 11, t0=2, positive=True, t_r=8, t_e=10),
        # DAD-like short clip: first tick t=2 already lies in W=[1.5,4.5]: u = .5 + .5*(2.5/3) = 11/12.
        clip("p2", "AAA", t0=2, positive=True, t_r=2.5, t_e=4.5),
        # Negative: one onset and every tick raised: p = 1 - .25 - .5 = .25.
        clip("n1", "A" * 10),
    ]
    r = daus(clips, CFG)
    assert r.u == pytest.approx({"p1": 0.0, "p2": 11 / 12})
    assert r.p == pytest.approx({"n1": 0.25})
    assert r.U == pytest.approx(11 / 24)
    assert r.P == pytest.approx(0.25)
    assert r.daus == pytest.approx(11 / 34)


def test_episode_begun_before_the_window_earns_nothing():
    # t_r=7, t_e=9: W=[6,9], observe range [3,9]. ALERT from t=1 on: one early onset, no onset in W.
    assert u_of("SAAAAAAAAAA", t_r=7, t_e=9) == 0.0


def test_early_episode_costs_gamma_against_later_credit():
    # Early episode t=1..2 (costs .25), then a fresh ALERT onset at t=7 in W: .5 + .5*(2/3) - .25 = 7/12.
    assert u_of("SAASSSSAAAA", t_r=7, t_e=9) == pytest.approx(7 / 12)
    # Two early episodes cost 2γ and floor at 0 against the OBSERVE-only credit β.
    assert u_of("ASASSSSOOOO", t_r=7, t_e=9) == 0.0


def test_alert_episode_starting_in_observe_range_before_window():
    # ALERT rising at t=4 is before W=[6,9]: an episode begun before the window earns no credit
    # (not even the OBSERVE-level beta its rise passes through) and costs γ.
    assert u_of("SSSSAAAAAAA", t_r=7, t_e=9) == 0.0
    # An OBSERVE episode at t=4 that escalates to ALERT at t=5 (before W) keeps its beta, minus γ.
    assert u_of("SSSSOAAAAAA", t_r=7, t_e=9) == pytest.approx(0.3 - 0.25)


def test_observe_only_credit_and_its_edges():
    assert u_of("SSSOOOOOOOO", t_r=7, t_e=9) == pytest.approx(0.3)  # onset at t_r - observe_s = 3, inclusive
    assert u_of("SSOOOOOOOOO", t_r=7, t_e=9) == 0.0  # onset at 2: before the observe range, then held
    assert u_of("SSSSSSSSSOO", t_r=7, t_e=9) == pytest.approx(0.3)  # onset at t_event, inclusive


def test_alert_onset_at_window_edges_is_inclusive():
    assert u_of("SSSSSSAAAAA", t_r=7, t_e=9) == pytest.approx(1.0)  # t_a = 6 = t_r - 1: lead 3 = L
    assert u_of("SSSSSSSSSAA", t_r=7, t_e=9) == pytest.approx(0.5)  # t_a = t_event: lead 0
    # t_a = 5: one tick before W, then held: costs γ and earns nothing.
    assert u_of("SSSSSAAAAAA", t_r=7, t_e=9) == 0.0


def test_window_edge_survives_float_rounding():
    # 1.3 - 1.0 == 0.30000000000000004 > 0.3: the tick at 0.3 must still be inside W.
    assert u_of("AAA", t_r=1.3, t_e=2.3, t0=0.3) == pytest.approx(0.5 + 0.5 * 2.0 / 3.0)


def test_ticks_after_event_are_ignored():
    base = u_of("SSSSSSSAAAS", t_r=7, t_e=9)
    assert base == pytest.approx(0.5 + 0.5 * 2 / 3)
    # What happens after t_event (a new onset, a drop to SILENT) changes nothing.
    assert u_of("SSSSSSSAAASASA", t_r=7, t_e=9) == pytest.approx(base)
    # An ALERT that only starts after the event is no warning at all.
    assert u_of("SSSSSSSSSSAAAA", t_r=7, t_e=9) == 0.0


def test_negative_counts_every_separate_alert_episode():
    cfg = CFG
    # ALERT onsets at t=1 and t=9 (an O->A rise is an ALERT onset); raised ticks 1,2,6,7,9 of 10.
    assert clip_trust(clip("n", "SAASSSOOSA").actions, cfg) == pytest.approx(1 - 2 * 0.25 - 0.5 * 0.5)
    # One episode held: one onset, 2 of 10 raised.
    assert clip_trust(clip("n", "SOASSSSSSS").actions, cfg) == pytest.approx(1 - 0.25 - 0.5 * 0.2)
    # OBSERVE only costs time at OBSERVE, no onset cost.
    assert clip_trust(clip("n", "SSOOSSSSSS").actions, cfg) == pytest.approx(0.9)
    # Flickering: five onsets floor at 0.
    assert clip_trust(clip("n", "ASASASASAS").actions, cfg) == 0.0


def label_oracle(t_s: np.ndarray, t_r: float) -> list[str]:
    """The risky-time + 2 s rule as actions; after t_r + alert_s it stays ALERT (post-event, unscored)."""
    return ["ALERT" if t >= t_r else "OBSERVE" if t >= t_r - 4 else "SILENT" for t in t_s]


def test_perfect_oracle_scores_close_to_one():
    t = np.arange(13, dtype=float)
    specs = [("p1", 6.0, 8.0), ("p2", 5.0, 9.0)]  # event 2 s after t_r (u = 5/6) and 4 s after (u = 1)
    clips = [
        ClipSeries(vid, "src", t, label_oracle(t, tr), np.zeros(t.size), True, tr, te)
        for vid, tr, te in specs
    ]
    clips.append(clip("n1", "S" * 12))
    r = daus(clips, CFG)
    assert r.u == pytest.approx({"p1": 5 / 6, "p2": 1.0})
    assert r.P == 1.0
    assert r.U == pytest.approx(11 / 12)
    assert r.daus == pytest.approx(22 / 23)
    # With a shorter full-credit lead L = 2 s the oracle is perfect.
    assert daus(clips, ScoringConfig(L_s=2.0)).daus == pytest.approx(1.0)


def test_harmonic_mean_is_zero_when_both_parts_are_zero_and_nan_when_undefined():
    zero = daus([clip("p", "S" * 5, positive=True, t_r=3, t_e=4), clip("n", "ASASA")], CFG)
    assert (zero.U, zero.P, zero.daus) == (0.0, 0.0, 0.0)
    only_neg = daus([clip("n", "S" * 4)], CFG)
    assert math.isnan(only_neg.U) and only_neg.P == 1.0 and math.isnan(only_neg.daus)


def test_duplicate_clip_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        daus([clip("n", "SS"), clip("n", "SS")], CFG)


def test_config_is_strict_and_consistent():
    with pytest.raises(ValidationError):
        ScoringConfig(alpah=0.4)
    with pytest.raises(ValidationError, match="beta"):
        ScoringConfig(alpha=0.2, beta=0.3)
    with pytest.raises(ValidationError):
        ScoringConfig(recall_k_s=[])
    with pytest.raises(ValidationError):
        CFG.alpha = 0.1  # frozen
    assert ScoringConfig(recall_k_s=[2.0, 0.5]).recall_k_s == [0.5, 2.0]
