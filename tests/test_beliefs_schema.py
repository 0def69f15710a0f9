"""The belief schema and its text forms: what the VLM is trained to write and what is parsed back."""

from __future__ import annotations

import itertools
import json

import pytest
from pydantic import ValidationError

from vlalert.beliefs.schema import (
    HAZARDS,
    MOTIONS,
    WHERES,
    Belief,
    TickReply,
    agreement_errors,
    belief_json_schema,
    quantize_danger,
    reply_json_schema,
    response_format,
)
from vlalert.beliefs.text import (
    ACTION_CLOSE,
    ACTION_OPEN,
    BELIEF_CLOSE,
    BELIEF_OPEN,
    SPECIAL_TOKENS,
    BeliefParseError,
    belief_text,
    clean_analysis,
    parse_belief_text,
    parse_generation,
    target_text,
)


def B(**kw) -> Belief:
    base = dict(hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.8, ego_involved=True)
    base.update(kw)
    return Belief(**base)


def test_enums_are_the_designs():
    assert HAZARDS == (
        "none",
        "vehicle",
        "pedestrian",
        "cyclist",
        "motorcycle",
        "animal",
        "obstacle",
        "other",
    )
    assert WHERES == ("none", "ahead", "left", "right", "ahead-left", "ahead-right", "behind")
    assert MOTIONS == (
        "none",
        "approaching",
        "cutting-in",
        "crossing",
        "braking",
        "stopped",
        "oncoming",
        "other",
    )
    assert SPECIAL_TOKENS == ("<|BELIEF|>", "<|/BELIEF|>", "<|ACTION|>", "<|/ACTION|>")


def test_text_form_of_the_designs_example():
    b = B(ego_involved=False)
    assert belief_text(b) == (
        "<|BELIEF|> hazard=vehicle; where=ahead; motion=braking; ttc=1.5s; danger=0.80; ego=no <|/BELIEF|>"
    )
    assert belief_text(B(ttc_s=None, danger=0.0)) == (
        "<|BELIEF|> hazard=vehicle; where=ahead; motion=braking; ttc=none; danger=0.00; ego=yes <|/BELIEF|>"
    )


@pytest.mark.parametrize("ttc", [None, 0.0, 0.1, 1.5, 12.3, 99.9])
def test_round_trip_every_enum_value(ttc):
    # every value of each enum at least once, paired with the others cyclically, both ego flags
    n = max(len(HAZARDS), len(WHERES), len(MOTIONS))
    for i in range(n):
        for ego in (True, False):
            b = Belief(
                hazard=HAZARDS[i % len(HAZARDS)],
                where=WHERES[i % len(WHERES)],
                motion=MOTIONS[i % len(MOTIONS)],
                ttc_s=ttc,
                danger=i / n,
                ego_involved=ego,
            )
            assert parse_belief_text(belief_text(b)) == b
            assert Belief.from_json(b.to_json()) == b


def test_round_trip_all_danger_values_exactly():
    for k in range(101):
        b = B(danger=k / 100)
        assert parse_belief_text(belief_text(b)) == b


def test_belief_is_canonical_and_keeps_the_alert_threshold():
    assert B(danger=0.806).danger == 0.81
    assert B(ttc_s=1.54).ttc_s == 1.5
    assert B(danger=0.4999).danger == 0.49  # never rounded up onto the ALERT side
    assert quantize_danger(0.4951) == 0.49
    assert quantize_danger(0.5) == 0.5
    assert quantize_danger(0.504) == 0.5
    assert B(danger=1.0).danger == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        dict(hazard="truck"),
        dict(where="front"),
        dict(motion="flying"),
        dict(ttc_s=-0.5),
        dict(danger=1.2),
        dict(danger=-0.1),
    ],
)
def test_schema_rejects_out_of_range(bad):
    with pytest.raises(ValidationError):
        B(**bad)


def test_schema_rejects_extra_and_missing_keys():
    good = json.loads(B().to_json())
    with pytest.raises(ValidationError):
        Belief.model_validate({**good, "speed": 3})
    with pytest.raises(ValidationError):
        Belief.model_validate({k: v for k, v in good.items() if k != "ttc_s"})  # null must be explicit


def test_parser_tolerates_spacing_and_case():
    b = parse_belief_text(
        "<|BELIEF|>hazard = Pedestrian ;where=LEFT;motion=crossing; ttc=2 ;danger=0.3;ego=YES;<|/BELIEF|>"
    )
    assert b == Belief(
        hazard="pedestrian", where="left", motion="crossing", ttc_s=2.0, danger=0.3, ego_involved=True
    )
    assert parse_belief_text("hazard=none; where=none; motion=none; ttc=null; danger=0; ego=no").ttc_s is None


@pytest.mark.parametrize(
    "body, why",
    [
        ("hazard=vehicle; where=ahead; motion=braking; ttc=1.5s; danger=0.80", "lacks ego"),
        (
            "hazard=vehicle; where=ahead; motion=braking; ttc=1.5s; danger=0.80; ego=yes; gap=3",
            "unknown belief key",
        ),
        ("hazard=vehicle; where=ahead; motion=braking; ttc=soon; danger=0.80; ego=yes", "ttc='soon'"),
        ("hazard=vehicle; where=ahead; motion=braking; ttc=1s; danger=high; ego=yes", "danger='high'"),
        ("hazard=vehicle; where=ahead; motion=braking; ttc=1s; danger=0.5; ego=maybe", "ego='maybe'"),
        ("hazard=bus; where=ahead; motion=braking; ttc=1s; danger=0.5; ego=yes", "does not fit the schema"),
        ("hazard=vehicle where=ahead; motion=braking; ttc=1s; danger=0.5; ego=yes", "lacks where"),
        ("hazard=vehicle; hazard=car; where=ahead; motion=braking; ttc=1s; danger=0.5; ego=yes", "twice"),
    ],
)
def test_parser_errors_say_what_is_wrong(body, why):
    with pytest.raises(BeliefParseError, match=why.replace("(", r"\(")):
        parse_belief_text(f"{BELIEF_OPEN} {body} {BELIEF_CLOSE}")


def test_json_schema_matches_the_model():
    schema = belief_json_schema()
    props = schema["properties"]
    assert schema["required"] == list(Belief.model_fields)
    assert schema["additionalProperties"] is False
    assert props["hazard"]["enum"] == list(HAZARDS)
    assert props["where"]["enum"] == list(WHERES)
    assert props["motion"]["enum"] == list(MOTIONS)
    assert props["ttc_s"]["type"] == ["number", "null"]
    reply = reply_json_schema()
    assert reply["required"] == list(TickReply.model_fields)
    assert reply["properties"]["action"]["enum"] == ["SILENT", "OBSERVE", "ALERT"]
    fmt = response_format()
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == reply


def test_every_object_in_the_strict_schema_is_closed():
    # OpenAI strict mode: every object lists all its properties as required and allows no others
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert sorted(node["required"]) == sorted(node["properties"])
            for v in node.values():
                walk(v)

    walk(reply_json_schema())


def test_agreement_rules():
    assert agreement_errors(B(danger=0.5), "ALERT") == []
    assert agreement_errors(B(danger=0.49), "ALERT") == ["danger 0.49 < 0.5 on an ALERT tick"]
    assert agreement_errors(B(danger=0.5), "SILENT") == ["danger 0.50 >= 0.5 on a SILENT tick"]
    assert agreement_errors(B(danger=0.9), "OBSERVE") == []  # a gate may hold a dangerous tick at OBSERVE
    none = B(hazard="none", where="none", motion="none", ttc_s=None, danger=0.3)
    assert agreement_errors(none, "OBSERVE") == ["hazard 'none' on an OBSERVE tick"]
    assert agreement_errors(none, "SILENT") == []
    assert agreement_errors(none, "PANIC") == ["unknown action 'PANIC'"]


def test_target_text_and_its_parse():
    b = B()
    text = target_text("A vehicle ahead is braking hard; brake now.", b, "ALERT")
    assert text == (
        "[Analysis] A vehicle ahead is braking hard; brake now. [Safety Assessment] "
        "<|BELIEF|> hazard=vehicle; where=ahead; motion=braking; ttc=1.5s; danger=0.80; ego=yes <|/BELIEF|> "
        "<|ACTION|> ALERT <|/ACTION|>"
    )
    p = parse_generation(text)
    assert p.ok and p.errors == ()
    assert (p.analysis, p.belief, p.action) == ("A vehicle ahead is braking hard; brake now.", b, "ALERT")
    assert text[p.belief_span[0] : p.belief_span[1]] == belief_text(b)


def test_parse_generation_tolerates_junk_around_the_parts():
    b = B(hazard="cyclist", where="right", motion="cutting-in", ttc_s=None, danger=0.3, ego_involved=False)
    core = target_text("A cyclist on the right  is\ncutting in.", b, "OBSERVE")
    text = f"<|im_start|>assistant\nSure! {core}<|im_end|> trailing {ACTION_OPEN} ALERT {ACTION_CLOSE}"
    p = parse_generation(text)
    assert p.ok
    assert p.analysis == "A cyclist on the right is cutting in."
    assert p.belief == b
    assert p.action == "OBSERVE"  # the first action after the belief, not a later one


def test_parse_generation_reports_what_is_missing():
    p = parse_generation("[Analysis] something <|BELIEF|> hazard=vehicle; where=ahead")
    assert not p.ok
    assert p.belief is None and p.action is None
    assert p.analysis == "something <|BELIEF|> hazard=vehicle; where=ahead"
    assert any("no complete <|BELIEF|>" in e for e in p.errors)
    assert any("no <|ACTION|>" in e for e in p.errors)

    p = parse_generation(f"{BELIEF_OPEN} hazard=vehicle {BELIEF_CLOSE} {ACTION_OPEN} PANIC {ACTION_CLOSE}")
    assert p.belief is None and p.action is None and p.analysis is None
    assert p.belief_text == f"{BELIEF_OPEN} hazard=vehicle {BELIEF_CLOSE}"
    assert any("lacks" in e for e in p.errors)
    assert "unknown action 'PANIC'" in p.errors
    assert "no [Analysis] tag" in p.errors

    # no [Safety Assessment] tag: the analysis ends at the belief span
    p = parse_generation(f"[Analysis] Clear road. {belief_text(B())} {ACTION_OPEN} alert {ACTION_CLOSE}")
    assert p.ok and p.analysis == "Clear road." and p.action == "ALERT"


@pytest.mark.parametrize("bad", [*SPECIAL_TOKENS, "[Analysis]", "[Safety Assessment]"])
def test_analysis_may_not_hold_tags(bad):
    with pytest.raises(ValueError, match="must not contain"):
        target_text(f"look {bad} here", B(), "ALERT")
    with pytest.raises(ValueError, match="empty"):
        clean_analysis(" \n ")


def test_target_text_rejects_unknown_action():
    with pytest.raises(ValueError, match="action must be one of"):
        target_text("ok", B(), "BRAKE")


def test_tick_reply_validates_the_whole_answer():
    ok = {"analysis": "x", "belief": json.loads(B().to_json()), "action": "ALERT"}
    assert TickReply.model_validate(ok).belief == B()
    for broken in (
        {**ok, "action": "alert"},
        {**ok, "analysis": ""},
        {**ok, "extra": 1},
        {k: v for k, v in ok.items() if k != "belief"},
    ):
        with pytest.raises(ValidationError):
            TickReply.model_validate(broken)


def test_every_combination_survives_the_target_round_trip():
    for h, w, m in itertools.islice(itertools.product(HAZARDS, WHERES, MOTIONS), 0, None, 7):
        b = Belief(hazard=h, where=w, motion=m, ttc_s=0.7, danger=0.66, ego_involved=True)
        assert parse_generation(target_text("x", b, "ALERT")).belief == b
