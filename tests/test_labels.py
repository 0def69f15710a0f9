import pyarrow as pa
import pytest

from vlalert.config import GateConfig, LabelsConfig, TicksConfig, WindowConfig, WorkflowConfig
from vlalert.labels import (
    RULE_ALERT,
    RULE_ALERT_GATE_LOW,
    RULE_ALERT_GATE_MISSING,
    RULE_ALERT_NON_EGO,
    RULE_BEFORE_WINDOW,
    RULE_NEGATIVE,
    RULE_OBSERVE,
    RULE_OBSERVE_GATE_LOW,
    RULE_OBSERVE_GATE_MISSING,
    RULE_POST_EVENT,
    RULE_PREFIX,
    RULES,
    danger_target,
    effective_t_event,
    label_clip,
    label_source,
    prefix_negative,
)
from vlalert.schemas import check_table, table_from_rows

L, G, T, W = LabelsConfig(), GateConfig(), TicksConfig(), WindowConfig()
S, OB, A = "SILENT", "OBSERVE", "ALERT"


def clip(vid="c", fps=30.0, n_frames=331, t_r=7.5, t_e=10.0, ego=True, positive=True, source="s"):
    """30 fps, 331 frames: ticks at 2..11 s. Default t_r = 7.5 s, t_event 10 s (after t_r + alert_s)."""
    return {
        "video_id": vid,
        "source": source,
        "path": f"/v/{vid}.mp4",
        "fps": fps,
        "n_frames": n_frames,
        "duration_s": n_frames / fps,
        "width": 64,
        "height": 48,
        "official_split": None,
        "is_positive": positive,
        "t_risky_s": t_r if positive else None,
        "t_event_s": t_e if positive else None,
        "ego_involved": ego,
        "event_type": None,
        "meta": "{}",
    }


def col(rows, key):
    return [r[key] for r in rows]


def run(c, gate=None, gated=False):
    return label_clip(c, gate, gated, L, G, T, W)


# ticks 2..11 with t_r = 7.5: before-window 2,3 | observe 4..7 | alert 8,9 | post-event 10,11
BASE_ACTIONS = [S, S, OB, OB, OB, OB, A, A, S, S]
BASE_RULES = [RULE_BEFORE_WINDOW] * 2 + [RULE_OBSERVE] * 4 + [RULE_ALERT] * 2 + [RULE_POST_EVENT] * 2


def test_risky_time_rule_sequence():
    rows = run(clip())
    assert col(rows, "t_s") == [float(t) for t in range(2, 12)]
    assert col(rows, "tick") == list(range(10))
    assert col(rows, "action") == BASE_ACTIONS
    assert col(rows, "rule") == BASE_RULES
    assert col(rows, "excluded") == [False] * 8 + [True] * 2
    assert set(col(rows, "parent_id")) == {None}
    assert rows[0]["frame_idx"] == [7, 15, 22, 30, 37, 45, 52, 60]


def test_boundaries_are_half_open():
    # t_r = 6: observe starts at exactly 2.0 (included), alert at exactly 6.0, post-event at exactly 8.0
    rows = run(clip(t_r=6.0))
    assert col(rows, "action") == [OB, OB, OB, OB, A, A, S, S, S, S]
    assert col(rows, "rule")[6:] == [RULE_POST_EVENT] * 4
    # a risky time that is 0.1 * 60 in binary (6.000000000000001) still makes the 6 s tick ALERT
    assert col(run(clip(t_r=0.1 * 60)), "action") == col(rows, "action")


def test_collision_before_alert_window_end_cuts_alert_at_the_event():
    # t_r = 7.5, collision at 8.6 < t_r + 2 s: tick 8 is ALERT, tick 9 (after the collision) post-event
    rows = run(clip(t_e=8.6))
    assert col(rows, "action") == [S, S, OB, OB, OB, OB, A, S, S, S]
    assert col(rows, "rule")[6:] == [RULE_ALERT] + [RULE_POST_EVENT] * 3
    assert col(rows, "excluded") == [False] * 7 + [True] * 3
    # danger reaches 1.0 at the collision: 0.5 + 0.5 * (8 - 7.5) / (8.6 - 7.5) at tick 8
    assert col(rows, "danger")[6:] == pytest.approx([0.5 + 0.5 * 0.5 / 1.1, 1.0, 1.0, 1.0])
    # a tick exactly at the collision is post-event; the collision at t_r leaves no ALERT at all
    assert col(run(clip(t_e=9.0)), "rule")[7] == RULE_POST_EVENT
    assert A not in col(run(clip(t_r=8.0, t_e=8.0)), "action")
    assert danger_target(8.0, 8.0, True, L, t_event=8.0) == 1.0


def test_danger_target_values():
    rows = run(clip())
    expected = [0.0, 0.0, 0.0625, 0.1875, 0.3125, 0.4375, 0.625, 0.875, 1.0, 1.0]
    assert col(rows, "danger") == pytest.approx(expected)
    assert danger_target(7.5, 7.5, True, L) == 0.5
    assert danger_target(3.5, 7.5, True, L) == 0.0
    assert danger_target(9.5, 7.5, True, L) == 1.0
    assert danger_target(5.0, None, None, L) == 0.0
    assert danger_target(9.0, 7.5, None, L) == pytest.approx(0.875)  # unknown ego: not capped


def test_negative_clip_is_silent_everywhere():
    rows = run(clip(positive=False, ego=False))
    assert col(rows, "action") == [S] * 10
    assert col(rows, "rule") == [RULE_NEGATIVE] * 10
    assert col(rows, "danger") == [0.0] * 10
    assert col(rows, "excluded") == [False] * 10
    # gating does not apply to negatives either
    assert col(run(clip(positive=False, ego=None), gate={}, gated=True), "rule") == [RULE_NEGATIVE] * 10


def test_non_ego_ungated_clip_never_alerts_and_danger_is_capped():
    rows = run(clip(ego=False))
    assert col(rows, "action") == [S, S, OB, OB, OB, OB, OB, OB, S, S]
    assert col(rows, "rule")[6:8] == [RULE_ALERT_NON_EGO] * 2
    assert col(rows, "rule")[2:6] == [RULE_OBSERVE] * 4  # ungated: OBSERVE needs no gate score
    assert col(rows, "danger") == pytest.approx([0, 0, 0.0625, 0.1875, 0.3125, 0.4375, 0.5, 0.5, 0.5, 0.5])


GATE_HIGH = {
    2.0: 0.0,
    3.0: 0.0,
    4.0: 0.1,
    5.0: 0.3,
    6.0: 0.2,
    7.0: 0.4,
    8.0: 0.6,
    9.0: 0.9,
    10.0: 1.0,
    11.0: 1.0,
}


def test_gated_clip_with_high_gate_keeps_alert_and_filters_observe():
    rows = run(clip(), gate=GATE_HIGH, gated=True)
    assert col(rows, "action") == [S, S, S, OB, S, OB, A, A, S, S]
    assert col(rows, "rule") == [
        RULE_BEFORE_WINDOW, RULE_BEFORE_WINDOW, RULE_OBSERVE_GATE_LOW, RULE_OBSERVE,
        RULE_OBSERVE_GATE_LOW, RULE_OBSERVE, RULE_ALERT, RULE_ALERT, RULE_POST_EVENT, RULE_POST_EVENT,
    ]  # fmt: skip
    # gating changes actions, not the danger target
    assert col(rows, "danger") == col(run(clip()), "danger")


def test_gate_below_alert_min_in_lookback_interval():
    # lookback interval [6.5, 9.5) holds ticks 7, 8, 9; high scores at 6 and 10 lie outside it
    gate = {**GATE_HIGH, 6.0: 0.9, 7.0: 0.4, 8.0: 0.45, 9.0: 0.49, 10.0: 0.95}
    rows = run(clip(), gate=gate, gated=True)
    assert col(rows, "action") == [S, S, S, OB, OB, OB, OB, OB, S, S]
    assert col(rows, "rule")[6:8] == [RULE_ALERT_GATE_LOW] * 2
    # exactly alert_min at the lookback's first tick (7 s, before t_r) is enough
    rows = run(clip(), gate={**gate, 7.0: 0.5}, gated=True)
    assert col(rows, "action")[6:8] == [A, A]


def test_gate_missing_downgrades_both_windows():
    rows = run(clip(ego=None), gate={}, gated=True)
    assert col(rows, "action") == [S, S, S, S, S, S, OB, OB, S, S]
    assert col(rows, "rule")[2:8] == [RULE_OBSERVE_GATE_MISSING] * 4 + [RULE_ALERT_GATE_MISSING] * 2
    assert run(clip(ego=None), gate=None, gated=True) == rows
    # a null score at one observe tick; the non-null ones in the lookback decide the alert check
    gate = {**GATE_HIGH, 5.0: None, 8.0: None}
    rows = run(clip(ego=None), gate=gate, gated=True)
    assert col(rows, "rule")[2:8] == [
        RULE_OBSERVE_GATE_LOW, RULE_OBSERVE_GATE_MISSING, RULE_OBSERVE_GATE_LOW, RULE_OBSERVE,
        RULE_ALERT, RULE_ALERT,
    ]  # fmt: skip


def test_gated_non_ego_clip_downgrades_even_with_high_gate():
    rows = run(clip(ego=False), gate=GATE_HIGH, gated=True)
    assert col(rows, "action") == [S, S, S, OB, S, OB, OB, OB, S, S]
    assert col(rows, "rule")[6:8] == [RULE_ALERT_NON_EGO] * 2


def test_ungated_clip_ignores_gate():
    assert run(clip(), gate={t: 0.0 for t in GATE_HIGH}, gated=False) == run(clip())


def test_no_event_time_rule():
    # DoTA without consensus: the event is taken at t_r + alert_s; the labels follow t_r only
    assert effective_t_event(7.5, None, L) == 9.5
    assert effective_t_event(7.5, 8.0, L) == 8.0
    assert effective_t_event(None, None, L) is None
    assert run(clip(t_e=None)) == run(clip(t_e=9.5))
    assert col(run(clip(t_e=None)), "excluded") == [False] * 8 + [True] * 2


def test_positive_without_risky_time_is_an_error():
    c = clip()
    c["t_risky_s"] = None
    with pytest.raises(ValueError, match="without t_risky_s"):
        run(c)


def test_frame_idx_10fps_clip():
    rows = run(clip(fps=10.0, n_frames=50, t_r=3.0))
    assert col(rows, "t_s") == [2.0, 3.0, 4.0]
    assert [r["frame_idx"] for r in rows] == [
        [2, 5, 7, 10, 12, 15, 17, 20],
        [12, 15, 17, 20, 22, 25, 27, 30],
        [22, 25, 27, 30, 32, 35, 37, 40],
    ]
    assert col(rows, "action") == [OB, A, A]


def test_prefix_negative_emitted():
    # t_r = 10: cut at 10 - 4 - 0.5 = 5.5 s >= 2 + 2 -> ticks 2, 3, 4, 5
    rows = prefix_negative(clip(vid="p", n_frames=361, t_r=10.0), L, T, W)
    assert col(rows, "video_id") == ["p#prefix"] * 4
    assert col(rows, "parent_id") == ["p"] * 4
    assert col(rows, "t_s") == [2.0, 3.0, 4.0, 5.0]
    assert col(rows, "tick") == [0, 1, 2, 3]
    assert col(rows, "action") == [S] * 4
    assert col(rows, "rule") == [RULE_PREFIX] * 4
    assert col(rows, "danger") == [0.0] * 4
    assert col(rows, "excluded") == [False] * 4
    assert rows[0]["frame_idx"] == [7, 15, 22, 30, 37, 45, 52, 60]
    # cut exactly at span + extra = 4.0 s: emitted, the tick at the cut belongs to the prefix
    assert col(prefix_negative(clip(t_r=8.5), L, T, W), "t_s") == [2.0, 3.0, 4.0]


def test_prefix_negative_not_emitted():
    assert prefix_negative(clip(t_r=8.0), L, T, W) == []  # cut 3.5 s < 4 s
    assert prefix_negative(clip(positive=False), L, T, W) == []


def cfg_for(tmp_path, prefix=True, gated_sources=("dota",)):
    return WorkflowConfig.model_validate(
        {
            "sources": {
                "dota": {
                    "kind": "dota",
                    "root": str(tmp_path),
                    "scene_truth": "x.json",
                    "prefix_negatives": prefix,
                },
                "nexar": {"kind": "nexar", "root": str(tmp_path), "scene_truth": "y.json"},
            },
            "labels": {"gated_sources": list(gated_sources)},
            "demo": {"enabled": False},
        }
    )


def gate_table(gates):
    rows = [
        {"video_id": vid, "t_s": t, "p_collision": p, "provider": "scene"}
        for vid, g in gates.items()
        for t, p in g.items()
    ]
    return table_from_rows("gate", rows)


def test_label_source_gating_decision_and_prefixes(tmp_path):
    cfg = cfg_for(tmp_path)
    low = {t: 0.0 for t in range(2, 15)}
    videos = table_from_rows("videos", [clip("b", n_frames=361, t_r=10.0), clip("a")])
    gate = gate_table({"a": low, "b": low})
    out = check_table("labels", label_source(videos, gate, "dota", cfg))
    ids = out.column("video_id").to_pylist()
    assert ids == ["a"] * 10 + ["b"] * 11 + ["b#prefix"] * 4  # a (t_r 7.5): too short for a prefix
    assert set(out.column("source").to_pylist()) == {"dota"}
    a_rules = out.column("rule").to_pylist()[:10]
    assert a_rules[6:8] == [RULE_ALERT_GATE_LOW] * 2  # dota is gated: the low gate downgrades

    # nexar is not gated and has no prefix negatives: ego known -> gate ignored; ego unknown -> gated
    videos = table_from_rows("videos", [clip("k"), clip("u", ego=None)])
    out = label_source(videos, gate_table({"k": low, "u": low}), "nexar", cfg)
    rules = out.column("rule").to_pylist()
    assert rules[6:8] == [RULE_ALERT] * 2
    assert rules[16:18] == [RULE_ALERT_GATE_LOW] * 2
    assert set(out.column("rule").to_pylist()) <= RULES


def test_label_source_without_gate(tmp_path):
    cfg = cfg_for(tmp_path)
    videos = table_from_rows("videos", [clip("k")])
    assert label_source(videos, None, "nexar", cfg).num_rows == 10
    with pytest.raises(ValueError, match="no gate table"):
        label_source(videos, None, "dota", cfg)
    empty = label_source(table_from_rows("videos", []), None, "dota", cfg)
    assert empty.num_rows == 0 and isinstance(empty, pa.Table)
