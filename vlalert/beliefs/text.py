"""Text forms of a belief: the compact `<|BELIEF|> ... <|/BELIEF|>` span and the SFT target.

The span is what the VLM learns to write and what the cache stage reads hidden states from, so
its format is fixed here once, with its parser, and both directions are tested on every enum
value. Format (keys always in this order, one space inside the tags):

    <|BELIEF|> hazard=vehicle; where=ahead; motion=braking; ttc=1.5s; danger=0.80; ego=yes <|/BELIEF|>

`ttc=none` when there is no time to contact (null), `ego=yes|no` for ego_involved.

The target of a tick (DESIGN.md, "Model I/O") is
`[Analysis] <analysis> [Safety Assessment] <belief span> <|ACTION|> ACTION <|/ACTION|>`.
`parse_generation` reads it back out of whatever a model generated, tolerating text before,
between and after the parts, and reports what is missing instead of raising: a bad generation
is a fact to record, not a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from vlalert.actions import ACTIONS
from vlalert.beliefs.schema import Belief, validation_message

BELIEF_OPEN = "<|BELIEF|>"
BELIEF_CLOSE = "<|/BELIEF|>"
ACTION_OPEN = "<|ACTION|>"
ACTION_CLOSE = "<|/ACTION|>"
SPECIAL_TOKENS: tuple[str, ...] = (BELIEF_OPEN, BELIEF_CLOSE, ACTION_OPEN, ACTION_CLOSE)
ANALYSIS_TAG = "[Analysis]"
ASSESSMENT_TAG = "[Safety Assessment]"

_KEYS = ("hazard", "where", "motion", "ttc", "danger", "ego")
_NULLS = frozenset({"none", "null", "n/a", "na", "-"})
_YES = frozenset({"yes", "true", "1", "y"})
_NO = frozenset({"no", "false", "0", "n"})

_BELIEF_RE = re.compile(re.escape(BELIEF_OPEN) + r"(.*?)" + re.escape(BELIEF_CLOSE), re.DOTALL)
_ACTION_RE = re.compile(re.escape(ACTION_OPEN) + r"\s*([A-Za-z]+)\s*" + re.escape(ACTION_CLOSE))


class BeliefParseError(ValueError):
    """A belief span that cannot be read back into a `Belief`; the message says which part."""


def belief_text(belief: Belief) -> str:
    """The compact span of a belief (see module docstring for the format)."""
    ttc = "none" if belief.ttc_s is None else f"{belief.ttc_s:.1f}s"
    ego = "yes" if belief.ego_involved else "no"
    body = (
        f"hazard={belief.hazard}; where={belief.where}; motion={belief.motion}; "
        f"ttc={ttc}; danger={belief.danger:.2f}; ego={ego}"
    )
    return f"{BELIEF_OPEN} {body} {BELIEF_CLOSE}"


def _parse_ttc(value: str) -> float | None:
    if value in _NULLS:
        return None
    v = value[:-1] if value.endswith("s") else value
    try:
        return float(v)
    except ValueError:
        raise BeliefParseError(f"ttc={value!r} is neither a number of seconds nor 'none'") from None


def _parse_ego(value: str) -> bool:
    if value in _YES:
        return True
    if value in _NO:
        return False
    raise BeliefParseError(f"ego={value!r} is neither 'yes' nor 'no'")


def parse_belief_text(text: str) -> Belief:
    """Read a belief span (with or without its tags) back into a `Belief`.

    Tolerant of spacing and letter case and of a trailing ';'; strict about the set of keys,
    so that a span that silently lost a field is an error rather than a default.
    """
    m = _BELIEF_RE.search(text)
    body = m.group(1) if m else text
    fields: dict[str, str] = {}
    for part in body.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise BeliefParseError(f"belief part {part!r} is not key=value")
        key, value = (s.strip().lower() for s in part.split("=", 1))
        if key not in _KEYS:
            raise BeliefParseError(f"unknown belief key {key!r} (expected {', '.join(_KEYS)})")
        if key in fields:
            raise BeliefParseError(f"belief key {key!r} given twice")
        fields[key] = value
    missing = [k for k in _KEYS if k not in fields]
    if missing:
        raise BeliefParseError(f"belief span lacks {', '.join(missing)}")
    try:
        danger = float(fields["danger"])
    except ValueError:
        raise BeliefParseError(f"danger={fields['danger']!r} is not a number") from None
    try:
        return Belief(
            hazard=fields["hazard"],
            where=fields["where"],
            motion=fields["motion"],
            ttc_s=_parse_ttc(fields["ttc"]),
            danger=danger,
            ego_involved=_parse_ego(fields["ego"]),
        )
    except ValidationError as err:
        raise BeliefParseError(f"belief span does not fit the schema: {validation_message(err)}") from None


def clean_analysis(text: str) -> str:
    """Analysis prose as it may appear in a target: one line, no tags or special tokens.

    A special token inside the analysis would open a second belief span in the training text,
    and the cache stage would read hidden states from the wrong tokens.
    """
    flat = " ".join(str(text).split())
    for bad in (*SPECIAL_TOKENS, ANALYSIS_TAG, ASSESSMENT_TAG):
        if bad in flat:
            raise ValueError(f"analysis must not contain {bad!r}")
    if not flat:
        raise ValueError("analysis is empty")
    return flat


def target_text(analysis: str, belief: Belief, action: str) -> str:
    """The SFT target of a tick: analysis, belief span, action span."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {list(ACTIONS)}, got {action!r}")
    return (
        f"{ANALYSIS_TAG} {clean_analysis(analysis)} {ASSESSMENT_TAG} {belief_text(belief)} "
        f"{ACTION_OPEN} {action} {ACTION_CLOSE}"
    )


@dataclass(frozen=True)
class ParsedGeneration:
    """What could be read out of a generated text; `errors` says what could not."""

    analysis: str | None
    belief: Belief | None
    belief_text: str | None  # the span as generated, tags included
    belief_span: tuple[int, int] | None  # character offsets [start, end) of that span in the text
    action: str | None
    errors: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.errors and None not in (self.analysis, self.belief, self.action)


def parse_generation(text: str) -> ParsedGeneration:
    """Extract analysis, belief and action from generated text, tolerating junk around them.

    The first complete belief span is used; the action is the first action span after it (or
    anywhere, when there is no belief span); the analysis is the text after `[Analysis]` up to
    `[Safety Assessment]` (or up to the belief span when that tag is missing).
    """
    errors: list[str] = []
    m = _BELIEF_RE.search(text)
    belief = span_text = span = None
    if m is None:
        errors.append("no complete <|BELIEF|> ... <|/BELIEF|> span")
    else:
        span_text, span = m.group(0), (m.start(), m.end())
        try:
            belief = parse_belief_text(span_text)
        except BeliefParseError as err:
            errors.append(str(err))

    a = _ACTION_RE.search(text, span[1] if span else 0)
    action = None
    if a is None:
        errors.append("no <|ACTION|> ... <|/ACTION|> span" + (" after the belief" if span else ""))
    elif a.group(1).upper() not in ACTIONS:
        errors.append(f"unknown action {a.group(1)!r}")
    else:
        action = a.group(1).upper()

    analysis = None
    i = text.find(ANALYSIS_TAG)
    if i < 0:
        errors.append(f"no {ANALYSIS_TAG} tag")
    else:
        start = i + len(ANALYSIS_TAG)
        end_candidates = [j for j in (text.find(ASSESSMENT_TAG, start),) if j >= 0]
        if span and span[0] >= start:
            end_candidates.append(span[0])
        end = min(end_candidates) if end_candidates else len(text)
        analysis = " ".join(text[start:end].split()) or None
        if analysis is None:
            errors.append("empty analysis")
    return ParsedGeneration(analysis, belief, span_text, span, action, tuple(errors))
