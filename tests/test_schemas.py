"""`vlalert.schemas.check_table`: a table that does not fit its file type is refused with the file and
the column named (missing or extra columns, types, nulls, values outside an enum's set), and one that
fits comes back cast to the schema, in its column order."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlalert.actions import ACTIONS
from vlalert.schemas import (
    ENUMS,
    POLICIES,
    SCHEMAS,
    SchemaError,
    check_table,
    read_table,
    table_from_rows,
    write_table,
)

PATH = "results/labels/dota.parquet"


def _labels(**columns) -> pa.Table:
    """A two-row labels table as a writer might build it (plain Python types: int64, double, ...)."""
    base = {
        "video_id": ["a", "a"],
        "source": ["dota", "dota"],
        "tick": [0, 1],
        "t_s": [2.0, 3.0],
        "frame_idx": [[1, 2], [3, 4]],
        "action": ["SILENT", "ALERT"],
        "danger": [0.0, 0.9],
        "rule": ["r", "r"],
        "excluded": [False, False],
        "parent_id": pa.array([None, "b"], pa.string()),
    }
    return pa.table(base | columns)


def test_a_fitting_table_comes_back_cast_and_in_schema_order():
    table = _labels()
    shuffled = table.select(list(reversed(table.column_names)))
    out = check_table("labels", shuffled, PATH)
    assert out.column_names == SCHEMAS["labels"].names
    assert out.schema.field("tick").type == pa.int32() and out.schema.field("danger").type == pa.float32()
    assert out.schema.field("frame_idx").type == pa.list_(pa.int32())
    assert out.column("parent_id").to_pylist() == [None, "b"]  # nulls where the schema allows them


def test_missing_and_unexpected_columns_are_named_with_the_file():
    table = _labels().drop_columns(["rule"]).append_column("comment", pa.array(["x", "y"]))
    with pytest.raises(SchemaError) as err:
        check_table("labels", table, PATH)
    assert str(err.value) == (
        f"{PATH}: labels table: missing columns ['rule'], unexpected columns ['comment']"
    )


def test_a_value_of_the_wrong_type_is_refused():
    with pytest.raises(SchemaError, match=rf"^{re.escape(PATH)}: labels table does not cast to its schema: "):
        check_table("labels", _labels(t_s=["two", "three"]), PATH)


@pytest.mark.parametrize(
    ("kind", "column", "bad", "allowed"),
    [
        ("labels", "action", ["PANIC", "ALERT"], ACTIONS),
        ("benchmark", "split", ["dev", "test"], ("train", "val", "test")),
        ("scores", "policy", ["oracle", "heads"], POLICIES),
        ("consensus", "decision", ["maybe", "applied"], ENUMS["consensus"]["decision"]),
    ],
)
def test_a_value_outside_an_enum_is_named_with_the_allowed_set(kind, column, bad, allowed):
    table = _fitting(kind).set_column(
        SCHEMAS[kind].get_field_index(column), column, pa.array(bad, pa.string())
    )
    with pytest.raises(SchemaError) as err:
        check_table(kind, table, PATH)
    assert str(err.value) == f"{PATH}: column {column!r} holds {[bad[0]]}, allowed {list(allowed)}"


def test_every_bad_value_is_listed_once_and_sorted():
    four = pa.concat_tables([_labels(action=["WAIT", "PANIC"]), _labels(action=["PANIC", "SILENT"])])
    with pytest.raises(
        SchemaError, match=r"holds \['PANIC', 'WAIT'\], allowed \['SILENT', 'OBSERVE', 'ALERT'\]"
    ):
        check_table("labels", four, PATH)


def test_every_enum_column_is_a_column_of_its_schema():
    for kind, columns in ENUMS.items():
        assert set(columns) <= set(SCHEMAS[kind].names), kind


def test_nulls_in_a_non_nullable_column_are_named_with_the_file():
    table = _labels(source=pa.array(["dota", None], pa.string()))
    with pytest.raises(SchemaError) as err:
        check_table("labels", table, PATH)
    assert str(err.value) == f"{PATH}: column 'source' holds nulls but is not nullable"


def test_nulls_in_a_non_nullable_column_are_refused():
    with pytest.raises(SchemaError, match="source"):
        check_table("labels", _labels(source=pa.array(["dota", None], pa.string())), PATH)
    with pytest.raises(SchemaError, match="action"):
        check_table("labels", _labels(action=pa.array(["ALERT", None], pa.string())), PATH)


def test_a_cache_vector_is_as_wide_as_the_table_makes_it():
    """z and r are fixed-size lists whose width is the model's: any width passes, the type does not."""
    rows = {
        "video_id": ["a"],
        "tick": pa.array([0], pa.int32()),
        "z": pa.array([[0.5] * 6], pa.list_(pa.float16(), 6)),
        "r": pa.array([[0.5] * 3], pa.list_(pa.float16(), 3)),
        "generated_text": ["x"],
        "belief_parsed": [False],
        "belief_span_found": [False],
        "teacher_forced": [False],
        "n_generated_tokens": pa.array([1], pa.int32()),
        "n_belief_tokens": pa.array([0], pa.int32()),
    }
    out = check_table("cache", pa.table(rows))
    assert out.schema.field("z").type == pa.list_(pa.float16(), 6)
    assert out.schema.field("r").type == pa.list_(pa.float16(), 3)
    text = pa.table(rows | {"z": pa.array([["a"] * 6], pa.list_(pa.string(), 6))})
    with pytest.raises(SchemaError, match="<table>: cache table does not cast"):
        check_table("cache", text)


def test_write_and_read_go_through_the_check(tmp_path):
    path = tmp_path / "labels.parquet"
    with pytest.raises(SchemaError, match=rf"^{re.escape(str(path))}: column 'action' holds \['PANIC'\]"):
        write_table("labels", _labels(action=["PANIC", "ALERT"]), path)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file
    pq.write_table(_labels(action=["PANIC", "ALERT"]), path)  # written around the check
    with pytest.raises(SchemaError, match=rf"^{re.escape(str(path))}: column 'action'"):
        read_table("labels", path)
    write_table("labels", _labels(), path)
    assert read_table("labels", path).schema.equals(SCHEMAS["labels"], check_metadata=False)


def _fitting(kind: str) -> pa.Table:
    """Two rows of `kind` that pass check_table, every enum column at its first allowed value."""

    def value(typ: pa.DataType):
        if pa.types.is_list(typ):
            return [0]
        if pa.types.is_string(typ):
            return "x"
        return False if pa.types.is_boolean(typ) else 0

    row = {field.name: value(field.type) for field in SCHEMAS[kind]}
    row |= {column: allowed[0] for column, allowed in ENUMS.get(kind, {}).items()}
    table = table_from_rows(kind, [row, row])
    assert check_table(kind, table).num_rows == 2
    return table
