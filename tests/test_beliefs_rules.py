"""The `rules` belief provider and the stage's choice of ticks, on a small varied source.

Labels are made by the real relabel code (vlalert.labels.label_source) so that the beliefs are
checked against exactly what the pipeline feeds them.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from llm_server import base_config, clip_row

from vlalert.beliefs.rules import (
    DEFAULT_SCENE,
    Scene,
    analysis_text,
    clear_kind,
    label_danger,
    scene_from_dota,
    scene_from_text,
    tick_context,
)
from vlalert.beliefs.schema import Belief, agreement_errors
from vlalert.beliefs.stage import belief_contexts, generate_beliefs
from vlalert.beliefs.text import parse_belief_text, parse_generation, target_text
from vlalert.config import validate_config
from vlalert.labels import label_source
from vlalert.schemas import check_table, table_from_rows
from vlalert.stage_config import BeliefsSlice
from vlalert.synthetic.truth import read_scene_truth


def _timeline(duration: float, t_e: float) -> dict:
    ts = [round(i / 10, 1) for i in range(int(duration * 10) + 1)]
    return {
        "t_s": ts,
        "ttc_s": [None if t < 3.0 or t >= t_e else round(t_e - t, 3) for t in ts],
        "gap_m": [40.0 - 4 * t for t in ts],
        "where": ["right" if t < 5.5 else "ahead" for t in ts],
        "motion": ["none" if t < 4.0 else "cutting-in" for t in ts],
    }


SCENE_TRUTH = {
    "format": "vlalert-scene-truth/1",
    "source": "dota",
    "fps": 10.0,
    "clips": {
        "syn_cutin": {
            "scenario": "cut-in",
            "hazard": "vehicle",
            "where": "right",
            "motion": "cutting-in",
            "ego_involved": True,
            "t_risky_s": 5.0,
            "t_event_s": 7.0,
            "duration_s": 8.0,
            "timeline": _timeline(8.0, 7.0),
        },
        "syn_neg": {
            "scenario": "negative-following",
            "hazard": "none",
            "where": "none",
            "motion": "none",
            "ego_involved": False,
            "t_risky_s": None,
            "t_event_s": None,
            "duration_s": 8.0,
            "timeline": {
                "t_s": [0.0, 8.0],
                "ttc_s": [None, None],
                "where": ["ahead"] * 2,
                "motion": ["none"] * 2,
            },
        },
    },
}

CLIPS = [
    clip_row("pos_dota", event_type="turning", meta={"anomaly_class": "ego: turning"}),
    clip_row("other_lateral", ego=False, event_type="lateral", meta={"anomaly_class": "other: lateral"}),
    clip_row(
        "dada",
        fps=30.0,
        n_frames=300,
        t_risky_s=6.0,
        t_event_s=7.5,
        meta={
            "type": 12,
            "texts": "a pedestrian suddenly crosses the road from the left",
            "causes": "jaywalking",
        },
    ),
    clip_row("nexar_pos", fps=30.0, n_frames=360, t_risky_s=9.0, t_event_s=10.0),
    clip_row("dad_gated", fps=20.0, n_frames=140, ego=None),
    clip_row("nexar_neg", fps=30.0, n_frames=150, positive=False, ego=False),
    clip_row("syn_cutin", t_event_s=7.0, meta={"anomaly_class": "ego: oncoming"}),
    clip_row("syn_neg", positive=False, ego=False),
]
GATE = [(2.0, 0.1), (3.0, 0.4), (4.0, 0.6), (5.0, 0.9), (6.0, 0.9)]


@pytest.fixture(scope="module")
def cfg():
    return validate_config(base_config())


@pytest.fixture(scope="module")
def source(cfg):
    videos = pa.Table.from_pylist(CLIPS)
    gate = table_from_rows(
        "gate", [{"video_id": "dad_gated", "t_s": t, "p_collision": p, "provider": "test"} for t, p in GATE]
    )
    labels = label_source(videos, gate, "mix", cfg)
    return videos, labels


@pytest.fixture(scope="module")
def beliefs(source, cfg):
    videos, labels = source
    return generate_beliefs(labels, videos, cfg, scene_truth=SCENE_TRUTH)


def _rows(beliefs) -> dict[tuple[str, int], dict]:
    return {(r["video_id"], r["tick"]): r for r in beliefs.to_pylist()}


def _belief(beliefs, vid, tick) -> Belief:
    return Belief.from_json(_rows(beliefs)[(vid, tick)]["belief"])


def test_one_row_per_trainable_tick(source, beliefs):
    _, labels = source
    want = {
        (r["video_id"], r["tick"]) for r in labels.to_pylist() if not r["excluded"] and r["parent_id"] is None
    }
    assert any(r["parent_id"] for r in labels.to_pylist()), "the fixture must hold a prefix clip"
    assert any(r["excluded"] for r in labels.to_pylist()), "the fixture must hold post-event ticks"
    assert set(_rows(beliefs)) == want
    assert len(beliefs) == len(want)
    check_table("beliefs", beliefs)
    assert beliefs.column("provider").to_pylist() == ["rules"] * len(want)
    assert set(beliefs.column("cost_usd").to_pylist()) == {0.0}
    assert beliefs.column("model").null_count == len(want)
    keys = list(zip(beliefs.column("video_id").to_pylist(), beliefs.column("tick").to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_the_beliefs_slice_stands_in_for_the_config(source, cfg, beliefs):
    """The beliefs script hands its slice where generate_beliefs takes the workflow config."""
    videos, labels = source
    job = BeliefsSlice.of(cfg, "mix")
    job = BeliefsSlice.from_params(job.tracked(), job.untracked())
    assert generate_beliefs(labels, videos, job, scene_truth=SCENE_TRUTH).equals(beliefs)


def test_hand_computed_beliefs(beliefs):
    # DoTA "ego: turning", t_r 5, no event time -> t_e = 7; tick 4 is t = 6 s (ALERT)
    assert _belief(beliefs, "pos_dota", 4) == Belief(
        hazard="vehicle", where="ahead", motion="crossing", ttc_s=1.0, danger=0.75, ego_involved=True
    )
    # tick 0 is t = 2 s: OBSERVE, danger 0.5 * (2 - 1) / 4 = 0.125 -> 0.12, ttc 5 s
    assert _belief(beliefs, "pos_dota", 0) == Belief(
        hazard="vehicle", where="ahead", motion="crossing", ttc_s=5.0, danger=0.12, ego_involved=True
    )
    # non-ego: ALERT held at OBSERVE by the labels, danger capped at 0.5
    assert _belief(beliefs, "other_lateral", 4) == Belief(
        hazard="vehicle", where="ahead", motion="cutting-in", ttc_s=1.0, danger=0.5, ego_involved=False
    )
    # DADA texts: pedestrian crossing from the left; t = 7 s, event 7.5 s before t_r + 2 s = 8 s, so
    # the danger target reaches 1 at the event: 0.5 + 0.5 * (7 - 6) / (7.5 - 6) = 0.83
    assert _belief(beliefs, "dada", 5) == Belief(
        hazard="pedestrian", where="left", motion="crossing", ttc_s=0.5, danger=0.83, ego_involved=True
    )
    # Nexar before the window (t = 3 s < 9 - 4): nothing yet; t = 9 s ALERT onset, 1 s to the event
    assert _belief(beliefs, "nexar_pos", 1) == Belief(
        hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False
    )
    assert _belief(beliefs, "nexar_pos", 7) == Belief(
        hazard="vehicle", where="ahead", motion="approaching", ttc_s=1.0, danger=0.5, ego_involved=True
    )


def test_gated_clip_without_ego_ground_truth(source, beliefs):
    _, labels = source
    lab = {(r["video_id"], r["tick"]): r for r in labels.to_pylist()}
    # t = 2 s: gate 0.1 < observe_min, SILENT inside the window: the hazard is described, danger stays low
    assert lab[("dad_gated", 0)]["action"] == "SILENT"
    assert _belief(beliefs, "dad_gated", 0) == Belief(
        hazard="vehicle", where="ahead", motion="approaching", ttc_s=5.0, danger=0.12, ego_involved=False
    )
    # ALERT confirmed by the gate: unknown ego involvement counts as involved
    assert lab[("dad_gated", 3)]["action"] == "ALERT"
    assert _belief(beliefs, "dad_gated", 3).ego_involved is True
    assert _belief(beliefs, "dad_gated", 1).ego_involved is False  # OBSERVE: not confirmed
    # ...but not known to be uninvolved either: no "it does not involve us" advice, unlike a non-ego clip
    rows = _rows(beliefs)
    assert not any("other road users" in rows[("dad_gated", t)]["analysis"] for t in (1, 2))
    assert not any("does not involve us" in rows[("dad_gated", t)]["analysis"] for t in (1, 2))
    assert all(
        "other road users" in rows[("other_lateral", t)]["analysis"]
        or "does not involve us" in rows[("other_lateral", t)]["analysis"]
        for t in range(5)
    )


def test_scene_truth_wins_and_is_read_at_the_tick_time(beliefs):
    # the annotation says "ego: oncoming" but the renderer's truth is a cut-in from the right
    assert _belief(beliefs, "syn_cutin", 0) == Belief(  # t = 2: still in its lane, not on a collision course
        hazard="vehicle", where="right", motion="none", ttc_s=None, danger=0.12, ego_involved=True
    )
    assert _belief(beliefs, "syn_cutin", 2) == Belief(  # t = 4: cutting in, 3 s to contact
        hazard="vehicle", where="right", motion="cutting-in", ttc_s=3.0, danger=0.38, ego_involved=True
    )
    assert _belief(beliefs, "syn_cutin", 4) == Belief(  # t = 6: in our lane, 1 s to contact
        hazard="vehicle", where="ahead", motion="cutting-in", ttc_s=1.0, danger=0.75, ego_involved=True
    )


def test_negatives_are_empty_scenes(beliefs):
    for (vid, _), row in _rows(beliefs).items():
        if vid in ("nexar_neg", "syn_neg"):
            assert Belief.from_json(row["belief"]) == Belief(
                hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False
            )
    following = [r["analysis"] for (vid, _), r in _rows(beliefs).items() if vid == "syn_neg"]
    assert all("ahead" in a or "car ahead" in a for a in following)  # the lead car of the scenario


def test_every_row_agrees_with_its_label(source, beliefs, cfg):
    videos, labels = source
    lab = {(r["video_id"], r["tick"]): r for r in labels.to_pylist()}
    for key, row in _rows(beliefs).items():
        label = lab[key]
        b = Belief.from_json(row["belief"])
        assert agreement_errors(b, label["action"]) == [], key
        assert abs(b.danger - label["danger"]) <= 0.005 + 1e-9, key
        assert parse_belief_text(row["belief_text"]) == b
        parsed = parse_generation(target_text(row["analysis"], b, label["action"]))
        assert parsed.ok and parsed.belief == b and parsed.action == label["action"]
        if label["action"] == "ALERT":
            assert b.danger >= 0.5 and b.hazard != "none"
        if label["action"] == "SILENT":
            assert b.danger < 0.5
        if b.ttc_s is not None and b.ttc_s > 0:
            assert f"{b.ttc_s:.1f} s" in row["analysis"], row["analysis"]
        if b.ttc_s == 0.0:  # at the event itself
            assert "contact" in row["analysis"] and "0.0 s" not in row["analysis"]


def test_deterministic_and_independent_of_row_order(source, beliefs, cfg):
    videos, labels = source
    again = generate_beliefs(labels, videos, cfg, scene_truth=SCENE_TRUTH)
    assert again.equals(beliefs)
    shuffled = labels.take(list(reversed(range(len(labels)))))
    assert generate_beliefs(shuffled, videos, cfg, scene_truth=SCENE_TRUTH).equals(beliefs)


def test_analyses_vary_with_the_scene(beliefs):
    analyses = beliefs.column("analysis").to_pylist()
    assert len(set(analyses)) >= 5
    hazard_rows = [r for r in beliefs.to_pylist() if Belief.from_json(r["belief"]).hazard != "none"]
    assert len({r["analysis"] for r in hazard_rows}) >= 0.8 * len(hazard_rows)
    dada = _rows(beliefs)[("dada", 5)]["analysis"]
    assert any(w in dada for w in ("pedestrian", "person on foot"))
    assert any(w in dada for w in ("left",))
    alert = [r["analysis"] for r in hazard_rows if r["video_id"] == "pos_dota" and r["tick"] == 4][0]
    assert any(w in alert for w in ("brake now", "braking now", "react immediately"))


def test_plain_phrasing_writes_one_text_per_meaning(source, beliefs):
    """`beliefs.phrasing: plain`: the same beliefs and actions, each meaning worded one way only."""
    videos, labels = source
    plain = generate_beliefs(labels, videos, validate_config(base_config(phrasing="plain")), SCENE_TRUTH)
    assert plain.column("belief").to_pylist() == beliefs.column("belief").to_pylist()
    by_meaning: dict[tuple[str, str], set[str]] = {}  # (clip, belief): one clip has one scenario and ego flag
    for row in plain.to_pylist():
        by_meaning.setdefault((row["video_id"], row["belief"]), set()).add(row["analysis"])
    assert max(len(texts) for texts in by_meaning.values()) == 1
    assert sum(len(texts) for texts in by_meaning.values()) < plain.num_rows  # ticks did share a meaning
    assert plain.column("analysis").to_pylist() != beliefs.column("analysis").to_pylist()


def test_analysis_wording_is_keyed_and_plain_takes_the_first():
    belief = Belief(
        hazard="vehicle", where="ahead", motion="braking", ttc_s=1.2, danger=0.8, ego_involved=True
    )
    plain = analysis_text(belief, "ALERT", None)
    assert plain == "A vehicle ahead is braking hard, about 1.2 s away; braking now avoids contact."
    assert analysis_text(belief, "ALERT", "v1|3") == analysis_text(belief, "ALERT", "v1|3")
    assert len({analysis_text(belief, "ALERT", f"v{i}|3") for i in range(20)}) > 3
    clear = Belief(hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False)
    assert analysis_text(clear, "SILENT", None, clear=clear_kind("negative-following")).startswith(
        "A vehicle ahead"
    )


def test_scene_from_annotation_texts():
    assert scene_from_dota("ego: turning") == Scene("vehicle", "ahead", "crossing")
    assert scene_from_dota("other: pedestrian") == Scene("pedestrian", "ahead", "crossing")
    assert scene_from_dota("ego: leave_to_left") == Scene("obstacle", "ahead-left", "other")
    assert scene_from_dota("other: leave_to_right") == Scene("vehicle", "ahead-right", "other")
    assert scene_from_dota("ego: teleport") is None
    assert scene_from_text("The ego-car hits a motorbike that cuts in from the right") == Scene(
        "motorcycle", "right", "cutting-in"
    )
    assert scene_from_text("a truck ahead brakes suddenly") == Scene("vehicle", "ahead", "braking")
    assert scene_from_text("a dog runs onto the road") == Scene("animal", "ahead", "approaching")
    assert scene_from_text("bad weather, poor visibility") is None


def test_unknown_annotation_falls_back_to_a_vehicle_ahead(cfg):
    clip = clip_row("x", event_type=None, meta={})
    label = {"video_id": "x", "tick": 3, "t_s": 5.0, "action": "ALERT", "danger": 0.5, "frame_idx": [1]}
    from vlalert.beliefs.rules import annotated_scene

    assert annotated_scene(tick_context(label, clip, cfg.labels)) == DEFAULT_SCENE


def test_a_label_that_contradicts_itself_is_an_error(cfg):
    clip = clip_row("x")
    bad = {"video_id": "x", "tick": 3, "t_s": 5.0, "action": "ALERT", "danger": 0.3, "frame_idx": [1]}
    with pytest.raises(ValueError, match="ALERT label with danger 0.3000"):
        label_danger(tick_context(bad, clip, cfg.labels))
    # float32 rounding at the window boundary is not a contradiction
    edge = {**bad, "danger": 0.49999997}
    assert label_danger(tick_context(edge, clip, cfg.labels)) == 0.5


def test_labels_naming_unknown_clips_are_an_error(source, cfg):
    videos, labels = source
    with pytest.raises(ValueError, match="videos.parquet lacks"):
        belief_contexts(labels, videos.filter(pa.compute.field("video_id") != "dada"), cfg)


def test_read_scene_truth_checks_the_format(tmp_path):
    good = tmp_path / "scene_truth.json"
    good.write_text(json.dumps(SCENE_TRUTH))
    assert read_scene_truth(good)["clips"].keys() == SCENE_TRUTH["clips"].keys()
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a scene truth file .*expected .vlalert-scene-truth/1."):
        read_scene_truth(bad)
