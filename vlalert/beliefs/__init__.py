"""Beliefs: the structured safety belief of each tick, its text forms, and the providers that write it.

Public API (see DESIGN.md, "Beliefs" and "Model I/O"):
- `Belief`, `TickReply`, `belief_json_schema`, `agreement_errors` (schema);
- `belief_text`, `parse_belief_text`, `target_text`, `parse_generation` and the special
  token strings (text);
- `generate_beliefs` (stage), with `BudgetExceeded`, `RequestsFailed` (llm) and `LLMError` (request).
"""

from vlalert.beliefs.llm import BeliefsIncomplete, BudgetExceeded, RequestsFailed
from vlalert.beliefs.request import LLMError
from vlalert.beliefs.schema import (
    HAZARDS,
    MOTIONS,
    WHERES,
    Belief,
    TickReply,
    agreement_errors,
    belief_json_schema,
    reply_json_schema,
)
from vlalert.beliefs.stage import generate_beliefs
from vlalert.beliefs.text import (
    ACTION_CLOSE,
    ACTION_OPEN,
    ANALYSIS_TAG,
    ASSESSMENT_TAG,
    BELIEF_CLOSE,
    BELIEF_OPEN,
    SPECIAL_TOKENS,
    BeliefParseError,
    ParsedGeneration,
    belief_text,
    parse_belief_text,
    parse_generation,
    target_text,
)

__all__ = [
    "ACTION_CLOSE",
    "ACTION_OPEN",
    "ANALYSIS_TAG",
    "ASSESSMENT_TAG",
    "BELIEF_CLOSE",
    "BELIEF_OPEN",
    "HAZARDS",
    "MOTIONS",
    "SPECIAL_TOKENS",
    "WHERES",
    "Belief",
    "BeliefParseError",
    "BeliefsIncomplete",
    "BudgetExceeded",
    "LLMError",
    "ParsedGeneration",
    "RequestsFailed",
    "TickReply",
    "agreement_errors",
    "belief_json_schema",
    "belief_text",
    "generate_beliefs",
    "parse_belief_text",
    "parse_generation",
    "reply_json_schema",
    "target_text",
]
