"""Clip-level metrics (AP, mTTA, TTA@R80, R@k, false alerts/h), the per-clip series, and summaries."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from vlalert.metrics.clip import (
    ClipSeries,
    anticipation,
    clips_from_table,
    false_alerts_per_hour,
    recall_at_k,
)
from vlalert.metrics.config import ScoringConfig
from vlalert.metrics.suite import aggregate_seeds, summarize, summarize_by_source

CODE = {"S": "SILENT", "O": "OBSERVE", "A": "ALERT"}


def scored(vid, p, *, positive=False, t_e=None, t0=0.0, acts=None, source="src"):
    p = np.asarray(p, dtype=float)
    names = [CODE[ch] for ch in acts] if acts else ["SILENT"] * p.size
    return ClipSeries(
        video_id=vid,
        source=source,
        t_s=t0 + np.arange(p.size, dtype=float),
        actions=names,
        p_alert=p,
        is_positive=positive,
        t_risky_s=None if t_e is None else t_e - 2.0,
        t_event_s=t_e,
    )


def naive_anticipation(clips, recall_target=0.8):
    """Straight from the definition: every threshold, every clip, every tick; then collapse per recall."""
    eps = 1e-9

    def window(c):
        return [
            (t, p)
            for t, p in zip(c.t_s, c.p_alert, strict=True)
            if not c.is_positive or t < c.t_event_s - eps
        ]

    thresholds = sorted({p for c in clips for _, p in window(c)})
    n_pos = sum(1 for c in clips if c.is_positive)
    best = {}
    for th in thresholds:
        tp, predicted, tta_total = 0, 0, 0.0
        for c in clips:
            hits = [t for t, p in window(c) if p >= th]
            if hits:
                predicted += 1
                if c.is_positive:
                    tp += 1
                    tta_total += c.t_event_s - hits[0]
        if tp == 0:
            continue
        recall, precision, tta = tp / n_pos, tp / predicted, tta_total / tp
        old_p, old_t = best.get(recall, (-math.inf, -math.inf))
        best[recall] = (max(old_p, precision), max(old_t, tta))
    recalls = sorted(best)
    precisions = [best[r][0] for r in recalls]
    ttas = [best[r][1] for r in recalls]
    ap = precisions[0] * recalls[0]
    for i in range(1, len(recalls)):
        ap += (precisions[i - 1] + precisions[i]) * (recalls[i] - recalls[i - 1]) / 2
    nearest = min(range(len(recalls)), key=lambda i: (abs(recalls[i] - recall_target), i))
    return ap, sum(ttas) / len(ttas), ttas[nearest], recalls, precisions, ttas


def random_clips(rng, n_clips):
    clips = []
    for i in range(n_clips):
        n = int(rng.integers(1, 15))
        positive = bool(rng.random() < 0.5)
        t0 = float(rng.integers(0, 4)) + (0.5 if rng.random() < 0.3 else 0.0)
        # One decimal: many ties within and across clips.
        p = np.round(rng.random(n), 1)
        # Events sometimes before the first tick (nothing scored), sometimes between ticks.
        t_e = t0 + float(rng.integers(-1, n + 1)) + (0.5 if rng.random() < 0.3 else 0.0) if positive else None
        clips.append(scored(f"c{i}", p, positive=positive, t_e=t_e, t0=t0))
    return clips


def test_hand_computed_anticipation():
    clips = [
        scored("p1", [0.1, 0.6, 0.9, 0.95], positive=True, t_e=2.5),  # 0.95 is after the event
        scored("p2", [0.2, 0.3, 0.7], positive=True, t_e=2.5),
        scored("n1", [0.05, 0.8, 0.1]),
    ]
    a = anticipation(clips)
    # Recall .5 (th .8, .9): best precision 1, TTA 0.5 (p1 at t=2). Recall 1 (th <= .7): best
    # precision 2/3 (all three clips fire), best TTA 2.5 (both positives fire at t=0 for th <= .1).
    assert a.recall.tolist() == [0.5, 1.0]
    assert a.precision == pytest.approx([1.0, 2 / 3])
    assert a.tta_s == pytest.approx([0.5, 2.5])
    assert a.ap == pytest.approx(0.5 + (1 + 2 / 3) * 0.5 / 2)
    assert a.mtta_s == pytest.approx(1.5)
    assert a.tta_at_recall_s == pytest.approx(2.5)  # recall 1 is nearer 0.8 than 0.5
    assert math.isnan(a.mtta_ustring_s)  # no clip durations given


def test_tick_at_the_event_is_not_scored_and_ustring_mtta_differs_by_duration_over_toa():
    # DAD geometry: 100 frames at 20 fps (5 s), accident at frame 90 (4.5 s); ticks every 0.5 s
    t = np.arange(3.0, 5.0, 0.5)  # scored from 3 s (frame 60) on
    p = np.full(t.size, 0.9)
    p[t == 4.5] = 1.0  # a spike exactly at the event: not scored (the reference scores frames [:toa])
    pos = ClipSeries("p", "dad", t, np.zeros(t.size, np.int8), p, True, 2.5, 4.5, duration_s=5.0)
    neg = ClipSeries("n", "dad", t, np.zeros(t.size, np.int8), np.full(t.size, 0.5), False, duration_s=5.0)
    a = anticipation([pos, neg])
    assert a.recall.tolist() == [1.0] and a.precision == pytest.approx([1.0])
    assert a.mtta_s == pytest.approx(4.5 - 3.0)
    # (1 - f/toa) * T/fps = (1 - 60/90) * 5 = 1.667: ours times T/toa = 100/90
    assert a.mtta_ustring_s == pytest.approx((1 - 60 / 90) * 5.0)
    assert a.mtta_ustring_s == pytest.approx(a.mtta_s * 100 / 90)


def test_scores_after_the_event_do_not_count():
    clips = [scored("p", [0.1, 0.2, 0.99], positive=True, t_e=1.0), scored("n", [0.5])]
    # Without the 0.99 (t=2 > t_event) the positive is never ranked above the negative.
    assert anticipation(clips).ap == pytest.approx(0.5)


def test_no_positive_gives_nan():
    a = anticipation([scored("n", [0.2, 0.4])])
    assert math.isnan(a.ap) and math.isnan(a.mtta_s) and math.isnan(a.tta_at_recall_s)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_fast_anticipation_matches_naive_definition(seed):
    rng = np.random.default_rng(seed)
    clips = random_clips(rng, int(rng.integers(3, 30)))
    if not any(c.is_positive and c.scored_mask().any() for c in clips):
        clips.append(scored("extra", [0.3, 0.7], positive=True, t_e=1.0))
    fast = anticipation(clips, recall_target=0.8)
    ap, mtta, tta80, recalls, precisions, ttas = naive_anticipation(clips, 0.8)
    np.testing.assert_allclose(fast.recall, recalls)
    np.testing.assert_allclose(fast.precision, precisions)
    np.testing.assert_allclose(fast.tta_s, ttas, atol=1e-9)
    assert fast.ap == pytest.approx(ap)
    assert fast.mtta_s == pytest.approx(mtta, abs=1e-9)
    assert fast.tta_at_recall_s == pytest.approx(tta80, abs=1e-9)


def test_anticipation_on_danger_score():
    c = ClipSeries(
        "p", "s", np.arange(3.0), ["SILENT"] * 3, np.zeros(3), True, 0.0, 2.0, p_danger=[0.1, 0.9, 0.2]
    )
    n = ClipSeries("n", "s", np.arange(2.0), ["SILENT"] * 2, np.ones(2), False, p_danger=[0.5, 0.5])
    a = anticipation([c, n], score="p_danger")
    # Danger ranks the positive first (AP 1); at the lowest threshold it fires at t=0: TTA 2.
    assert a.ap == pytest.approx(1.0) and a.tta_at_recall_s == pytest.approx(2.0)
    # p_alert ranks the negative above the positive: AP 0.5.
    assert anticipation([c, n]).ap == pytest.approx(0.5)
    with pytest.raises(ValueError, match="p_danger"):
        anticipation([scored("x", [0.1], positive=True, t_e=0.0)], score="p_danger")


def test_recall_at_k_uses_alert_lead_before_event():
    clips = [
        scored("p1", [0] * 10, positive=True, t_e=8.0, acts="SSSSSAAAAA"),  # first ALERT t=5: lead 3
        scored("p2", [0] * 10, positive=True, t_e=8.0, acts="SSSSSSSAAA"),  # lead 1
        scored("p3", [0] * 10, positive=True, t_e=8.0, acts="SSSSSSSSSA"),  # only after the event
        scored("p4", [0] * 10, positive=True, t_e=8.0, acts="SSSSOOOOOO"),  # never ALERT
        scored("n1", [0] * 4, acts="AAAA"),  # negatives do not enter recall
    ]
    assert recall_at_k(clips, [1.0, 2.0, 3.0, 3.5]) == pytest.approx(
        {1.0: 0.5, 2.0: 0.25, 3.0: 0.25, 3.5: 0.0}
    )
    assert all(math.isnan(v) for v in recall_at_k([clips[-1]], [1.0]).values())


def test_false_alerts_per_hour_counts_onsets_over_negative_driving():
    clips = [
        scored("n1", [0] * 5, acts="SAASA"),  # 2 onsets, 5 ticks
        scored("n2", [0] * 4, acts="AAAA"),  # 1 onset, 4 ticks
        scored("p1", [0] * 4, positive=True, t_e=3.0, acts="ASAS"),  # positives do not count
    ]
    rate, hours = false_alerts_per_hour(clips, tick_hz=1.0)
    assert hours == pytest.approx(9 / 3600)
    assert rate == pytest.approx(3 / (9 / 3600))
    assert false_alerts_per_hour(clips, tick_hz=2.0)[0] == pytest.approx(3 / (4.5 / 3600))
    assert math.isnan(false_alerts_per_hour(clips[2:], tick_hz=1.0)[0])


def test_clip_series_validation():
    with pytest.raises(ValueError, match="increasing"):
        ClipSeries("c", "s", [0.0, 0.0], ["SILENT"] * 2, [0.1, 0.2], False)
    with pytest.raises(ValueError, match="values for"):
        ClipSeries("c", "s", [0.0, 1.0], ["SILENT"], [0.1, 0.2], False)
    with pytest.raises(ValueError, match="required"):
        ClipSeries("c", "s", [0.0, 1.0], ["SILENT"] * 2, [0.1, 0.2], True, 1.0, None)
    with pytest.raises(ValueError, match="before"):
        ClipSeries("c", "s", [0.0, 1.0], ["SILENT"] * 2, [0.1, 0.2], True, 1.0, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        ClipSeries("c", "s", [0.0, 1.0], ["SILENT"] * 2, [0.1, np.nan], False)
    with pytest.raises(ValueError, match="no ticks"):
        ClipSeries("c", "s", [], [], [], False)


def tick_table():
    # Rows deliberately out of order; clip b has no event time (DoTA without consensus).
    return pl.DataFrame(
        {
            "video_id": ["b", "a", "b", "a", "a", "c"],
            "t_s": [3.0, 1.0, 2.0, 0.0, 2.0, 5.0],
            "action": ["ALERT", "OBSERVE", "SILENT", "SILENT", "ALERT", "SILENT"],
            "label": ["ALERT", "OBSERVE", "OBSERVE", "SILENT", "ALERT", "SILENT"],
            "excluded": [False, False, False, False, True, False],
            "p_alert": [0.9, 0.4, 0.2, 0.1, 0.8, 0.05],
        }
    )


def clip_table():
    return pl.DataFrame(
        {
            "video_id": ["a", "b", "c"],
            "source": ["dad", "dota", "dad"],
            "is_positive": [True, True, False],
            "t_risky_s": [1.0, 2.5, None],
            "t_event_s": [2.0, None, None],
        }
    )


def test_clips_from_table_groups_sorts_and_joins():
    clips = clips_from_table(
        tick_table(), clip_table(), label_col="label", excluded_col="excluded", alert_s=2.0
    )
    assert [c.video_id for c in clips] == ["a", "b", "c"]
    a, b, c = clips
    assert a.t_s.tolist() == [0.0, 1.0, 2.0]
    assert a.actions.tolist() == [0, 1, 2]
    assert a.p_alert.tolist() == [0.1, 0.4, 0.8]
    assert a.excluded.tolist() == [False, False, True]
    assert (a.source, a.is_positive, a.t_risky_s, a.t_event_s) == ("dad", True, 1.0, 2.0)
    assert b.t_event_s == 4.5  # t_r + alert_s
    assert b.labels.tolist() == [1, 2]
    assert (c.is_positive, c.t_risky_s, c.t_event_s) == (False, None, None)
    # Same result from an Arrow table with the clip columns already joined in.
    joined = tick_table().join(clip_table(), on="video_id").to_arrow()
    again = clips_from_table(joined, alert_s=2.0)
    assert [x.t_s.tolist() for x in again] == [x.t_s.tolist() for x in clips]


def test_clips_from_table_rejects_bad_input():
    with pytest.raises(ValueError, match="required"):
        clips_from_table(tick_table(), clip_table())  # b has no event time and no alert_s
    with pytest.raises(ValueError, match="missing from the clips table"):
        clips_from_table(tick_table(), clip_table().filter(pl.col("video_id") != "c"), alert_s=2.0)
    varying = (
        tick_table()
        .join(clip_table(), on="video_id")
        .with_columns(
            pl.when(pl.col("t_s") == 0.0).then(pl.lit("dota")).otherwise(pl.col("source")).alias("source")
        )
    )
    with pytest.raises(ValueError, match="vary"):
        clips_from_table(varying, alert_s=2.0)
    with pytest.raises(ValueError, match="nulls"):
        clips_from_table(tick_table().join(clip_table(), on="video_id").with_columns(is_positive=None))
    with pytest.raises(ValueError, match="lacks columns"):
        clips_from_table(tick_table().drop("p_alert"), clip_table(), alert_s=2.0)


def test_summarize_flat_dict_and_by_source():
    cfg = ScoringConfig()
    clips = clips_from_table(
        tick_table(), clip_table(), label_col="label", excluded_col="excluded", alert_s=2.0
    )
    m = summarize(clips, cfg, tick_hz=1.0)
    assert (m["n_clips"], m["n_positive"], m["n_negative"]) == (3, 2, 1)
    # a: ALERT onset at t=2 = t_event in W=[0,2]: u = .5; b: ALERT onset at t=3 in W=[1.5,4.5]: .5+.5*(1.5/3).
    assert m["daus_U"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["daus_P"] == 1.0
    assert m["daus"] == pytest.approx(2 * 0.625 / 1.625)
    assert m["tick_n"] == 5  # the excluded tick of a is left out
    assert m["recall_at_1s"] == pytest.approx(0.5) and m["recall_at_2s"] == 0.0
    assert m["false_alerts_per_hour"] == 0.0 and m["negative_hours"] == pytest.approx(1 / 3600)
    assert {"clip_ap", "clip_mtta_s", "clip_tta_at_r80_s", "tick_auroc"} <= set(m)
    by = summarize_by_source(clips, cfg, tick_hz=1.0)
    assert sorted(by) == ["all", "dad", "dota"]
    assert by["all"].keys() == m.keys()
    assert all(by["all"][k] == v or (math.isnan(by["all"][k]) and math.isnan(v)) for k, v in m.items())
    assert by["dota"]["n_clips"] == 1 and math.isnan(by["dota"]["daus"])  # no negatives there


def test_aggregate_seeds_mean_std_and_nan_handling():
    runs = [
        {"daus": 0.5, "tick_auroc": 0.7},
        {"daus": 0.7, "tick_auroc": float("nan")},
        {"daus": 0.9, "tick_auroc": 0.9},
    ]
    agg = aggregate_seeds(runs)
    assert (
        agg["daus"].mean == pytest.approx(0.7)
        and agg["daus"].std == pytest.approx(0.2)
        and agg["daus"].n == 3
    )
    assert agg["tick_auroc"].mean == pytest.approx(0.8) and agg["tick_auroc"].n == 2
    assert math.isnan(aggregate_seeds([{"daus": 0.5}])["daus"].std)
    with pytest.raises(ValueError, match="lacks or has"):
        aggregate_seeds([{"daus": 0.5}, {"dau": 0.5}])
