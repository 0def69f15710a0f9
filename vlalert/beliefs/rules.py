"""The `rules` belief provider: deterministic beliefs and analyses from labels and annotations.

This is the offline default and the fallback of the `llm` provider. It only says what the
annotation supports: the hazard comes from the synthetic scene truth when there is one, else
from the source's own annotation (DoTA anomaly class, DADA-2000 texts/causes, Nexar's event
type), else a generic "vehicle ahead, approaching" (Nexar and DAD are collision datasets of
road vehicles). Where a source does not say on which side the agent is, `where` is "ahead"
(the conflict zone), never an invented side.

Per tick:
- danger = the label's danger target (the label and the belief can never disagree);
- hazard/where/motion are "none" on ticks before the OBSERVE window of a positive clip and on
  every tick of a negative clip (nothing notable yet); inside the window they describe the hazard;
- ttc_s = t_event - t inside the window (for synthetic clips the scene truth's own ttc at t,
  which is null while the agent is not on a collision course), null elsewhere;
- ego_involved = the clip's flag; unknown (None) counts as involved only on ALERT ticks, which
  the gate has confirmed.
The analysis is one sentence built from several templates and phrasings chosen by a hash of
(video_id, tick), so the corpus is varied but every rerun writes the same text (`beliefs.phrasing:
varied`); or always with each slot's first wording (`plain`: one text per meaning). The demo uses
plain: its tiny VLM, SFT'd on a few hundred ticks, decodes greedily, and where the ALERT branch's
probability is split over several wordings (3 timings with numbers against 2 "no collision course")
the greedy path takes the calmer one, so the VLM never said ALERT on the test split (its own action
AUROC 0.52 against 0.71 with plain phrasing, measured on the demo).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlalert.beliefs.schema import ALERT_DANGER_MIN, Belief, TickReply, agreement_errors
from vlalert.beliefs.text import clean_analysis
from vlalert.config import LabelsConfig, Phrasing
from vlalert.labels import effective_t_event
from vlalert.ticks import TIME_EPS

PROVIDER = "rules"
DANGER_TOLERANCE = 1e-3  # float32 danger at a window boundary may sit a hair off 0.5


@dataclass(frozen=True)
class Scene:
    """What the hazard is, where, and how it moves (the three enum fields of a belief)."""

    hazard: str
    where: str
    motion: str


NO_SCENE = Scene("none", "none", "none")
DEFAULT_SCENE = Scene("vehicle", "ahead", "approaching")


@dataclass(frozen=True)
class TickContext:
    """Everything a provider knows about one tick: its label and its clip's annotation."""

    video_id: str
    source: str
    tick: int
    t_s: float
    action: str
    danger: float
    rule: str
    is_positive: bool
    t_risky_s: float | None
    t_event_s: float | None  # effective: the clip's own, else t_risky_s + alert_s
    ego_involved: bool | None
    event_type: str | None
    meta: Mapping[str, Any]
    path: str
    frame_idx: tuple[int, ...]
    scene_clip: Mapping[str, Any] | None = None  # this clip's entry of scene_truth.json


def tick_context(
    label: Mapping[str, Any],
    clip: Mapping[str, Any],
    labels_cfg: LabelsConfig,
    scene_clip: Mapping[str, Any] | None = None,
) -> TickContext:
    """Join one LABELS row with its VIDEOS row (meta parsed from JSON)."""
    meta = clip.get("meta") or {}
    if isinstance(meta, str):
        meta = json.loads(meta) if meta.strip() else {}
    t_r = clip.get("t_risky_s") if clip["is_positive"] else None
    t_e = effective_t_event(t_r, clip.get("t_event_s"), labels_cfg) if t_r is not None else None
    return TickContext(
        video_id=str(label["video_id"]),
        source=str(label.get("source") or clip.get("source") or ""),
        tick=int(label["tick"]),
        t_s=float(label["t_s"]),
        action=str(label["action"]),
        danger=float(label["danger"]),
        rule=str(label.get("rule") or ""),
        is_positive=bool(clip["is_positive"]),
        t_risky_s=t_r,
        t_event_s=t_e,
        ego_involved=clip.get("ego_involved"),
        event_type=clip.get("event_type"),
        meta=meta,
        path=str(clip.get("path") or ""),
        frame_idx=tuple(int(i) for i in (label.get("frame_idx") or ())),
        scene_clip=scene_clip,
    )


# ---------------------------------------------------------------- what the annotation says

# DoTA anomaly classes (the part after "ego:" / "other:"), DoTA paper table 1.
DOTA_CLASSES: dict[str, Scene] = {
    "start_stop_or_stationary": Scene("vehicle", "ahead", "stopped"),
    "moving_ahead_or_waiting": Scene("vehicle", "ahead", "approaching"),
    "lateral": Scene("vehicle", "ahead", "cutting-in"),
    "oncoming": Scene("vehicle", "ahead", "oncoming"),
    "turning": Scene("vehicle", "ahead", "crossing"),
    "pedestrian": Scene("pedestrian", "ahead", "crossing"),
    "obstacle": Scene("obstacle", "ahead", "stopped"),
    "leave_to_left": Scene("vehicle", "ahead-left", "other"),
    "leave_to_right": Scene("vehicle", "ahead-right", "other"),
    "unknown": Scene("other", "ahead", "other"),
}
# The ego car leaving the road has no other agent: the hazard is the road edge.
DOTA_EGO_LEAVE: dict[str, Scene] = {
    "leave_to_left": Scene("obstacle", "ahead-left", "other"),
    "leave_to_right": Scene("obstacle", "ahead-right", "other"),
}

# Free-text keywords (DADA-2000 texts/causes, event types). Motorcycle before cyclist: "motorbike".
_HAZARD_WORDS: tuple[tuple[str, str], ...] = (
    ("pedestrian", r"pedestrian|person|people|child|children|walker|man\b|woman\b"),
    ("motorcycle", r"motorcycl\w*|motorbike\w*|motor-bike|scooter|moped"),
    ("cyclist", r"cyclist|bicycl\w*|bike\w*|rider"),
    ("animal", r"animal|dog|cat\b|cattle|cow|deer|horse|sheep"),
    ("obstacle", r"obstacle|tree|rock|stone|barrier|pole|debris|cone|guardrail|object"),
    ("vehicle", r"car\b|cars\b|vehicle|truck|bus\b|van\b|taxi|suv|trailer|lorry|tricycle|tanker"),
)
_MOTION_WORDS: tuple[tuple[str, str], ...] = (
    ("cutting-in", r"cut\w* in|lane chang\w*|chang\w* lanes?|merg\w*|overtak\w*|squeez\w*"),
    ("crossing", r"cross\w*|turn\w*|travers\w*"),
    ("oncoming", r"oncoming|opposite direction|head-on|wrong way|retrograde|reverse direction"),
    ("braking", r"brak\w*|sudden(ly)? stop\w*|decelerat\w*|slow\w* down"),
    ("stopped", r"stopped|parked|stationary|standing|waiting"),
    ("approaching", r"approach\w*|rear-end\w*|follow\w*|too close"),
)
_EGO_PHRASES = re.compile(r"\bego[- ]?(?:car|vehicle)s?\b|\bour (?:car|vehicle)\b|\bego\b", re.IGNORECASE)


def _first_match(text: str, table: Sequence[tuple[str, str]], earliest: bool) -> str | None:
    best: tuple[int, int, str] | None = None
    for rank, (value, pattern) in enumerate(table):
        m = re.search(r"\b(?:" + pattern + r")", text)
        if m is None:
            continue
        key = (m.start() if earliest else rank, rank, value)
        if best is None or key < best:
            best = key
    return best[2] if best else None


def scene_from_text(text: str) -> Scene | None:
    """Hazard/motion/side named in free text (DADA-2000 texts and causes), or None if it names none.

    The hazard is the agent mentioned first once the ego car's own mentions are removed; the
    motion the first matching kind in priority order; the side "left"/"right" when the text says so.
    """
    t = _EGO_PHRASES.sub(" ", text.lower())
    hazard = _first_match(t, _HAZARD_WORDS, earliest=True)
    motion = _first_match(t, _MOTION_WORDS, earliest=False)
    if hazard is None and motion is None:
        return None
    left, right = re.search(r"\bleft\b", t), re.search(r"\bright\b", t)
    where = "ahead"
    if left and not right:
        where = "left" if motion in ("cutting-in", "crossing") else "ahead-left"
    elif right and not left:
        where = "right" if motion in ("cutting-in", "crossing") else "ahead-right"
    elif re.search(r"\bbehind\b|from the rear", t):
        where = "behind"
    return Scene(hazard or "vehicle", where, motion or "approaching")


def scene_from_dota(anomaly_class: str) -> Scene | None:
    """`ego: turning` / `other: lateral` -> Scene; None for a class DoTA does not define."""
    prefix, _, kind = anomaly_class.partition(":")
    kind = kind.strip().lower() if kind else prefix.strip().lower()
    if prefix.strip().lower() == "ego" and kind in DOTA_EGO_LEAVE:
        return DOTA_EGO_LEAVE[kind]
    return DOTA_CLASSES.get(kind)


def annotated_scene(ctx: TickContext) -> Scene:
    """The hazard a real clip's annotation names, in order of specificity."""
    meta = ctx.meta
    if isinstance(meta.get("anomaly_class"), str):
        scene = scene_from_dota(meta["anomaly_class"])
        if scene is not None:
            return scene
    text = " ".join(str(meta[k]) for k in ("texts", "causes") if meta.get(k) not in (None, ""))
    if text:
        scene = scene_from_text(text)
        if scene is not None:
            return scene
    if ctx.event_type:
        scene = scene_from_dota(ctx.event_type) or scene_from_text(ctx.event_type)
        if scene is not None:
            return scene
    return DEFAULT_SCENE


def _timeline_index(timeline: Mapping[str, Sequence[Any]], t: float) -> int:
    ts = timeline["t_s"]
    return min(range(len(ts)), key=lambda i: abs(float(ts[i]) - t))


def scene_truth_at(scene_clip: Mapping[str, Any], t: float) -> tuple[Scene, float | None]:
    """Hazard, side and motion at time t from the renderer's truth, and its ttc there."""
    timeline = scene_clip.get("timeline") or {}
    hazard = str(scene_clip.get("hazard") or "other")
    where, motion = str(scene_clip.get("where") or "ahead"), str(scene_clip.get("motion") or "other")
    ttc = None
    if timeline.get("t_s"):
        i = _timeline_index(timeline, t)
        where = str(timeline.get("where", [where] * (i + 1))[i] or where)
        motion = str(timeline.get("motion", [motion] * (i + 1))[i] or motion)
        ttcs = timeline.get("ttc_s") or []
        ttc = ttcs[i] if i < len(ttcs) else None
    if where == "none":  # the agent is off-screen at t; the truth still names where it will come from
        where = str(scene_clip.get("where") or "ahead")
    if hazard == "none":
        hazard = "other"
    return Scene(hazard, where, motion), (None if ttc is None else max(float(ttc), 0.0))


# ---------------------------------------------------------------- the belief


def in_hazard_window(ctx: TickContext, labels_cfg: LabelsConfig) -> bool:
    """A positive clip's tick at or after t_r - observe_s, or any tick labelled OBSERVE/ALERT."""
    if ctx.action in ("OBSERVE", "ALERT"):
        return True
    if not ctx.is_positive or ctx.t_risky_s is None:
        return False
    return ctx.t_s >= ctx.t_risky_s - labels_cfg.observe_s - TIME_EPS


def label_danger(ctx: TickContext) -> float:
    """The label's danger target, snapped onto the action's side of 0.5 within float32 rounding.

    A label whose danger and action disagree by more than rounding is a bug upstream: raise.
    """
    d = ctx.danger
    if ctx.action == "ALERT" and d < ALERT_DANGER_MIN:
        if d < ALERT_DANGER_MIN - DANGER_TOLERANCE:
            raise ValueError(f"{ctx.video_id} tick {ctx.tick}: ALERT label with danger {d:.4f} < 0.5")
        d = ALERT_DANGER_MIN
    if ctx.action == "SILENT" and d >= ALERT_DANGER_MIN:
        if d >= ALERT_DANGER_MIN + DANGER_TOLERANCE:
            raise ValueError(f"{ctx.video_id} tick {ctx.tick}: SILENT label with danger {d:.4f} >= 0.5")
        d = ALERT_DANGER_MIN - 0.01
    return min(max(d, 0.0), 1.0)


def rules_belief(ctx: TickContext, labels_cfg: LabelsConfig) -> Belief:
    """The belief of one tick (see module docstring for the rules)."""
    danger = label_danger(ctx)
    if not in_hazard_window(ctx, labels_cfg):
        return Belief(
            hazard="none", where="none", motion="none", ttc_s=None, danger=danger, ego_involved=False
        )
    t_e = ctx.t_event_s
    ttc = None if t_e is None else max(t_e - ctx.t_s, 0.0)
    if ctx.scene_clip is not None:
        scene, ttc = scene_truth_at(ctx.scene_clip, ctx.t_s)
    else:
        scene = annotated_scene(ctx)
    ego = ctx.ego_involved
    if ego is None and ctx.scene_clip is not None and ctx.scene_clip.get("ego_involved") is not None:
        ego = bool(ctx.scene_clip["ego_involved"])
    if ego is None:
        ego = ctx.action == "ALERT"
    return Belief(
        hazard=scene.hazard,
        where=scene.where,
        motion=scene.motion,
        ttc_s=ttc,
        danger=danger,
        ego_involved=ego,
    )


# ---------------------------------------------------------------- the analysis

_AGENT = {
    "vehicle": ("a vehicle", "a car", "another vehicle"),
    "pedestrian": ("a pedestrian", "a person on foot"),
    "cyclist": ("a cyclist", "a bicycle rider"),
    "motorcycle": ("a motorcyclist", "a motorbike"),
    "animal": ("an animal", "an animal on the road"),
    "obstacle": ("an obstacle", "an object on the road"),
    "other": ("a road user", "something on the road"),
}
_PLACE = {
    "ahead": ("ahead", "in our lane ahead", "in front of us"),
    "left": ("on the left", "in the left lane"),
    "right": ("on the right", "in the right lane"),
    "ahead-left": ("ahead on the left", "ahead to the left"),
    "ahead-right": ("ahead on the right", "ahead to the right"),
    "behind": ("behind us", "close behind"),
    "none": ("nearby",),
}
_MOTION = {
    "approaching": ("is closing in", "is getting closer fast"),
    "cutting-in": ("is cutting in", "is merging into our lane"),
    "crossing": ("is crossing our path", "is moving across the road"),
    "braking": ("is braking hard", "is slowing sharply"),
    "stopped": ("has stopped", "is standing still"),
    "oncoming": ("is coming towards us", "is heading straight at us"),
    "other": ("is moving unpredictably", "is behaving erratically"),
    "none": ("is in view", "is present"),
}
_TIMING = ("about {t:.1f} s away", "with contact in about {t:.1f} s", "roughly {t:.1f} s from contact")
_NO_TTC_ALERT = ("and the situation is turning critical", "which is about to become critical")
_CONTACT = ("at the moment of contact", "with contact happening now")  # ttc 0: at or past the event
_NO_TTC = ("not yet on a collision course", "with no collision course yet")
_ADVICE = {
    "ALERT": ("braking now avoids contact", "brake now", "the driver must react immediately"),
    "OBSERVE": ("worth watching, no action yet", "keep an eye on it and be ready to brake", "stay alert"),
    "OBSERVE-other": (
        "the conflict is between other road users, keep a safe distance",
        "it does not involve us, but slow down and keep clear",
    ),
    "SILENT": ("it poses no threat to us yet", "no action is needed for now"),
}
_SENTENCES = {
    "hazard": (
        "{Agent} {place} {motion}, {timing}; {advice}.",
        "{Agent} {motion} {place}, {timing}; {advice}.",
        "Watch {agent} {place}: it {motion}, {timing}; {advice}.",
        "{Place_cap}, {agent} {motion}, {timing}; {advice}.",
    ),
    "clear": (
        "The road ahead is clear and traffic flows normally; no action is needed.",
        "Traffic keeps its distance and nothing is on a collision course.",
        "Normal driving: no road user threatens our path.",
        "Nothing in view calls for attention; the lane ahead is free.",
        "Surrounding traffic behaves normally; no hazard is developing.",
    ),
    "clear-lead": (
        "A vehicle ahead keeps a steady gap; nothing calls for action.",
        "We follow the car ahead at a safe distance; no hazard.",
        "The lead vehicle drives steadily ahead of us; all is normal.",
    ),
    "clear-oncoming": (
        "Oncoming traffic stays in its own lane; no hazard.",
        "Cars pass in the opposite lane at a safe distance; nothing to do.",
    ),
}


def _pick(key: str | None, slot: str, options: Sequence[str]) -> str:
    if key is None:
        return options[0]
    digest = hashlib.sha256(f"{key}|{slot}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


CLEAR_KINDS: dict[str, str] = {"negative-following": "clear-lead", "negative-oncoming": "clear-oncoming"}


def clear_kind(scenario: str | None) -> str:
    """Which set of no-hazard sentences fits a synthetic scenario (a steady lead car, oncoming traffic)."""
    return CLEAR_KINDS.get(scenario or "", "clear")


def analysis_text(
    belief: Belief, action: str, key: str | None, *, other_road_users: bool = False, clear: str = "clear"
) -> str:
    """One sentence naming the agent, its side, its motion, the timing and the advice.

    The wording of each slot is picked by a hash of (`key`, slot), so a corpus is varied and a rerun
    writes the same text; `key` None: the plain phrasing, each slot's first wording (one text per
    meaning). `other_road_users`: an OBSERVE whose conflict is known not to involve us.
    `clear`: the set of sentences of a tick without hazard (`clear_kind`). Shared by the `rules`
    provider and the tiny model's caption pretraining (vlalert.vlm.pretrain), so the demo VLM comes
    to SFT already speaking the targets' phrasing, as a real VLM comes fluent in English.
    """
    if belief.hazard == "none":
        return clean_analysis(_pick(key, "sentence", _SENTENCES[clear]))
    agent = _pick(key, "agent", _AGENT[belief.hazard])
    place = _pick(key, "place", _PLACE[belief.where])
    motion = _pick(key, "motion", _MOTION[belief.motion])
    if belief.ttc_s is not None and belief.ttc_s < 0.05:
        timing = _pick(key, "timing", _CONTACT)
    elif belief.ttc_s is not None:
        timing = _pick(key, "timing", _TIMING).format(t=belief.ttc_s)
    elif action == "ALERT":  # no collision course yet, but the label says act now
        timing = _pick(key, "timing", _NO_TTC_ALERT)
    else:
        timing = _pick(key, "timing", _NO_TTC)
    advice_key = "OBSERVE-other" if action == "OBSERVE" and other_road_users else action
    advice = _pick(key, "advice", _ADVICE[advice_key])
    template = _pick(key, "sentence", _SENTENCES["hazard"])
    text = template.format(
        Agent=_cap(agent),
        agent=agent,
        place=place,
        Place_cap=_cap(place),
        motion=motion,
        timing=timing,
        advice=advice,
    )
    return clean_analysis(text)


def phrasing_key(phrasing: Phrasing, key: str) -> str | None:
    """`analysis_text`'s key for `phrasing`: `key` when varied, None when plain."""
    return key if phrasing == "varied" else None


def rules_analysis(ctx: TickContext, belief: Belief, phrasing: Phrasing = "varied") -> str:
    """The analysis of one tick; varied `phrasing` picks its wording by a hash of (video_id, tick)."""
    return analysis_text(
        belief,
        ctx.action,
        phrasing_key(phrasing, f"{ctx.video_id}|{ctx.tick}"),
        other_road_users=ctx.ego_involved is False,  # known, not merely unconfirmed
        clear=clear_kind(str((ctx.scene_clip or {}).get("scenario") or "")),
    )


def rules_reply(ctx: TickContext, labels_cfg: LabelsConfig, phrasing: Phrasing = "varied") -> TickReply:
    """Analysis + belief + action of one tick; the action is the label's, and they always agree."""
    belief = rules_belief(ctx, labels_cfg)
    errs = agreement_errors(belief, ctx.action)
    if errs:  # only reachable with a label that contradicts the design's own rules
        raise ValueError(f"{ctx.video_id} tick {ctx.tick}: rules belief disagrees with the label: {errs}")
    return TickReply(analysis=rules_analysis(ctx, belief, phrasing), belief=belief, action=ctx.action)
