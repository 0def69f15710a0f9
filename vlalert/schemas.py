"""The one place where every Parquet file type of the workflow is given its schema.

Writers go through `write_table`, which checks the table against its schema (names, types,
nullability, and the value sets of the enum-like columns) and writes atomically (temp file +
rename), so a killed job never leaves a half-written file that a later rule would trust.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlalert.actions import ACTIONS
from vlalert.atomic import atomic_path


class SchemaError(ValueError):
    """A table that does not match its file type's schema; the message names file and column."""


def _f(name: str, typ: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


VIDEOS = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("source", pa.string()),
        _f("path", pa.string()),
        _f("fps", pa.float64()),
        _f("n_frames", pa.int32()),
        _f("duration_s", pa.float64()),
        _f("width", pa.int32()),
        _f("height", pa.int32()),
        _f("official_split", pa.string(), nullable=True),
        _f("is_positive", pa.bool_()),
        _f("t_risky_s", pa.float64(), nullable=True),
        _f("t_event_s", pa.float64(), nullable=True),
        _f("ego_involved", pa.bool_(), nullable=True),
        _f("event_type", pa.string(), nullable=True),
        _f("meta", pa.string()),  # JSON object: the source's own annotation fields, and where times came from
    ]
)

REJECTED = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("source", pa.string()),
        _f("path", pa.string()),
        _f("reason", pa.string()),
    ]
)

# One row per row of a BADAS consensus CSV: what ingest did with it (applied, applied and flagged
# less2s, not applied because the CSV marks it excluded, rejected, or naming no clip), and whether
# the clip is one that peers evaluate on (kept out of train/val by the benchmark).
CONSENSUS_DECISIONS: tuple[str, ...] = ("applied", "applied-less2s", "excluded", "rejected", "unmatched")
CONSENSUS = pa.schema(
    [
        _f("video_id", pa.string()),  # the project's clip id (the CSV's id mapped by the source kind)
        _f("csv_id", pa.string()),  # the id as the CSV writes it
        _f("csv_file", pa.string()),
        _f("decision", pa.string()),
        _f("article_category", pa.string(), nullable=True),
        _f("peer_test", pa.bool_()),  # a peer evaluates on this clip: never in train or val
        _f("reason", pa.string()),
    ]
)

GATE = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("t_s", pa.float64()),
        _f("p_collision", pa.float64(), nullable=True),  # null: the provider has no score at this time
        _f("provider", pa.string()),
    ]
)

LABELS = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("source", pa.string()),
        _f("tick", pa.int32()),
        _f("t_s", pa.float64()),
        _f("frame_idx", pa.list_(pa.int32())),
        _f("action", pa.string()),
        _f("danger", pa.float32()),
        _f("rule", pa.string()),
        _f("excluded", pa.bool_()),
        _f(
            "parent_id", pa.string(), nullable=True
        ),  # set on `{video_id}#prefix` clips: scored, never trained on
    ]
)

BENCHMARK = pa.schema(
    list(LABELS)
    + [
        _f("split", pa.string()),
        _f("path", pa.string()),
        _f("fps", pa.float64()),
        _f("n_frames", pa.int32()),
        _f("is_positive", pa.bool_()),
        _f("t_risky_s", pa.float64(), nullable=True),
        _f("t_event_s", pa.float64(), nullable=True),
        _f("ego_involved", pa.bool_(), nullable=True),
        _f("event_type", pa.string(), nullable=True),
        _f("meta", pa.string()),
        # from the beliefs stage; null on excluded (post-event) and prefix ticks, which get no belief
        _f("analysis", pa.string(), nullable=True),
        _f("belief", pa.string(), nullable=True),
        _f("belief_text", pa.string(), nullable=True),
        _f("belief_provider", pa.string(), nullable=True),
    ]
)

BELIEFS = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("tick", pa.int32()),
        _f("analysis", pa.string()),
        _f("belief", pa.string()),  # JSON object validated by vlalert.beliefs (one schema)
        _f("belief_text", pa.string()),  # the compact `<|BELIEF|> ... <|/BELIEF|>` span
        _f("provider", pa.string()),  # rules | llm | rules-fallback
        _f("model", pa.string(), nullable=True),
        _f("prompt_sha256", pa.string(), nullable=True),
        _f("cost_usd", pa.float64()),
    ]
)

# Policies scored by the score stage: our heads, and the baselines run through the same decoder.
# heads-shuffled: the same heads on z/r shuffled across the scored ticks of each clip (the ablation
# that shows the heads read the tick's hidden states, not the clock); time-only: the action fitted
# on train from the tick's time alone; gate: the gate chain's score through the FSM; badas:
# Open-BADAS's own score through the FSM, on the clips the badas provider scored
POLICIES: tuple[str, ...] = (
    "heads",
    "danger",
    "heads-shuffled",
    "time-only",
    "gate",
    "badas",
    "vlm",
    "always-silent",
    "always-alert",
)

SCORES = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("source", pa.string()),
        _f("tick", pa.int32()),
        _f("t_s", pa.float64()),
        _f("seed", pa.int32()),  # heads seed; seed-independent baselines carry seed 0 once
        _f("policy", pa.string()),
        _f("p_danger", pa.float64(), nullable=True),  # DangerHead output; null where a policy has none
        _f("p_silent", pa.float64(), nullable=True),
        _f("p_observe", pa.float64(), nullable=True),
        _f("p_alert", pa.float64(), nullable=True),
        _f("action", pa.string()),  # decoded by the FSM
        _f("label", pa.string()),  # the benchmark's action
        _f("excluded", pa.bool_()),
        _f("parent_id", pa.string(), nullable=True),
    ]
)

SUMMARY = pa.schema(
    [
        _f("policy", pa.string()),
        _f("source", pa.string()),  # "all" for the overall summary
        _f("metric", pa.string()),
        _f("mean", pa.float64(), nullable=True),  # null: undefined on every seed (e.g. no positive clip)
        _f("std", pa.float64(), nullable=True),  # null: fewer than two seeds with a defined value
        _f("n_seeds", pa.int32()),  # seeds with a defined value
    ]
)

# One row per cached tick (results/cache/{run}/{split}/part-*.parquet, vlalert.cache). z and r are
# float16 vectors as wide as the run's model makes them (len(cache.belief_layers) x hidden, and
# hidden): the list sizes written here are placeholders, `check_table` takes a fixed-size list's
# width from the table itself, and the cache writer checks that width against its model.
CACHE = pa.schema(
    [
        _f("video_id", pa.string()),
        _f("tick", pa.int32()),
        _f("z", pa.list_(pa.float16(), 1)),  # mean over the belief span at each of cache.belief_layers
        _f("r", pa.list_(pa.float16(), 1)),  # the <|/BELIEF|> close tag at cache.policy_layer
        _f("generated_text", pa.string()),  # the generation (or the target, when teacher-forced)
        _f("belief_parsed", pa.bool_()),  # the text's belief span reads back into a valid Belief
        _f("belief_span_found", pa.bool_()),  # False: z/r from the fallback positions (vlalert.cache.extract)
        _f("teacher_forced", pa.bool_()),
        _f("n_generated_tokens", pa.int32()),  # stop token excluded
        _f("n_belief_tokens", pa.int32()),  # tokens averaged into z (0 under the fallback)
    ]
)

# `vlalert predict VIDEO`: one row per tick of any video (vlalert.predict), Parquet or CSV.
PREDICTIONS = pa.schema(
    [
        _f("t_s", pa.float64()),
        _f("tick", pa.int32()),
        _f("frame_idx", pa.list_(pa.int32())),
        _f("generated_text", pa.string()),
        _f("belief_parsed", pa.bool_()),
        _f("p_danger", pa.float64()),
        _f("p_silent", pa.float64()),
        _f("p_observe", pa.float64()),
        _f("p_alert", pa.float64()),
        _f("action", pa.string()),  # decoded by the FSM from the PolicyHead
        _f("vlm_action", pa.string(), nullable=True),  # the VLM's own; null when unparsable
    ]
)

# One row per logged step of an SFT run (results/sft/{run}/train_log.parquet, vlalert.vlm.sft).
SFT_TRAIN_LOG = pa.schema(
    [
        _f("step", pa.int32()),  # optimiser steps done; 0: before training
        _f("epoch", pa.float64()),  # train ticks seen / number of train ticks
        _f("lr", pa.float64()),  # learning rate of this step
        _f("train_loss", pa.float64(), nullable=True),  # token-mean loss of the step's global batch
        _f("val_loss", pa.float64(), nullable=True),  # where evaluated (every eval_every, and last)
        _f("seconds", pa.float64()),  # wall seconds since the run began (resumes add up)
    ]
)

# One row per epoch of a head's training (results/heads/{run}/{head}/seed{seed}/train_log.parquet,
# vlalert.heads.train).
HEADS_TRAIN_LOG = pa.schema(
    [
        _f("epoch", pa.int32()),
        _f("train_loss", pa.float64()),
        _f("val_loss", pa.float64()),
        _f("lr", pa.float64()),
        _f("seconds", pa.float64()),
        _f("ss_prob", pa.float64()),  # policy: scheduled-sampling probability; danger: 0
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "videos": VIDEOS,
    "rejected": REJECTED,
    "consensus": CONSENSUS,
    "gate": GATE,
    "labels": LABELS,
    "benchmark": BENCHMARK,
    "beliefs": BELIEFS,
    "cache": CACHE,
    "scores": SCORES,
    "summary": SUMMARY,
    "predictions": PREDICTIONS,
    "sft_train_log": SFT_TRAIN_LOG,
    "heads_train_log": HEADS_TRAIN_LOG,
}

# Columns whose values come from a closed set.
ENUMS: dict[str, dict[str, tuple[str, ...]]] = {
    "labels": {"action": ACTIONS},
    "consensus": {"decision": CONSENSUS_DECISIONS},
    "benchmark": {"action": ACTIONS, "split": ("train", "val", "test")},
    "scores": {"policy": POLICIES, "action": ACTIONS, "label": ACTIONS},
    "summary": {"policy": POLICIES},
}


def empty_table(kind: str) -> pa.Table:
    return SCHEMAS[kind].empty_table()


def table_from_rows(kind: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Build a table of file type `kind` from row dicts; missing nullable columns become null."""
    schema = SCHEMAS[kind]
    if not rows:
        return schema.empty_table()
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    try:
        return pa.Table.from_pydict(cols, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise SchemaError(f"{kind}: rows do not fit the schema: {err}") from None


def _bind_list_widths(schema: pa.Schema, table: pa.Table) -> pa.Schema:
    """`schema` with each fixed-size-list field as wide as the table's column of that name.

    Vector widths depend on the model (see CACHE); names, value types and nullability are still checked.
    """
    fields = []
    for field in schema:
        typ = field.type
        if pa.types.is_fixed_size_list(typ) and field.name in table.column_names:
            have = table.schema.field(field.name).type
            if pa.types.is_fixed_size_list(have):
                typ = pa.list_(typ.value_field, have.list_size)
        fields.append(field.with_type(typ))
    return pa.schema(fields, metadata=schema.metadata)


def check_table(kind: str, table: pa.Table, path: str | os.PathLike[str] = "<table>") -> pa.Table:
    """Return `table` cast to the schema of `kind`, or raise SchemaError naming file and column."""
    schema = _bind_list_widths(SCHEMAS[kind], table)
    names = table.column_names
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra:
        raise SchemaError(f"{path}: {kind} table: missing columns {missing}, unexpected columns {extra}")
    table = table.select(schema.names)
    # nulls first: pyarrow's cast refuses them in a non-nullable field with a bare ValueError
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{path}: column {field.name!r} holds nulls but is not nullable")
    try:
        table = table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise SchemaError(f"{path}: {kind} table does not cast to its schema: {err}") from None
    for col, allowed in ENUMS.get(kind, {}).items():
        values = set(table.column(col).unique().to_pylist())
        bad = values - set(allowed)
        if bad:
            raise SchemaError(f"{path}: column {col!r} holds {sorted(bad)}, allowed {list(allowed)}")
    return table


def write_table(kind: str, table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Check `table` against its schema and write it to `path` atomically."""
    path = Path(path)
    table = check_table(kind, table, path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(kind: str, path: str | os.PathLike[str]) -> pa.Table:
    """Read a Parquet file and check it against the schema of `kind`."""
    return check_table(kind, pq.read_table(path), path)
