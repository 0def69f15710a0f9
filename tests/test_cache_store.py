"""The cache on disk: the CACHE schema at any width, float16 clamping, chunks that are only reused
for the same fingerprint, the shard merge, and the split's index over its parts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlalert.atomic import write_json_atomic
from vlalert.cache.store import (
    build_index,
    cache_parts,
    cache_table,
    chunk_dir,
    chunk_fingerprint,
    chunk_path,
    fixed_size_list_to_numpy,
    gather_split,
    merge_chunks,
    read_cache,
    read_done_chunk,
    remove_chunks,
    to_float16,
    write_chunk,
)
from vlalert.schemas import SchemaError, check_table


def _vec(z, r, text="t", parsed=True):
    return SimpleNamespace(
        z=np.asarray(z, np.float32),
        r=np.asarray(r, np.float32),
        generated_text=text,
        belief_parsed=parsed,
        belief_span_found=parsed,
        teacher_forced=False,
        n_generated_tokens=3,
        n_belief_tokens=2 if parsed else 0,
    )


def _table(n, z_width=6, r_width=3, offset=0.0):
    vecs = [_vec(np.arange(z_width) + i + offset, np.arange(r_width) - i) for i in range(n)]
    return cache_table([f"v{i // 2}" for i in range(n)], [i % 2 for i in range(n)], vecs, z_width, r_width)


def test_to_float16_clamps_and_counts():
    out, n = to_float16(np.array([[1.5, 7e4, -1e5, np.float32(65504)]], np.float32))
    assert out.dtype == np.float16
    assert out.tolist() == [[1.5, 65504.0, -65504.0, 65504.0]]
    assert n == 2


def test_cache_table_has_the_cache_schema_at_the_models_width():
    table, clamped = _table(4, z_width=8, r_width=2)
    assert clamped == 0
    assert table.schema.field("z").type == pa.list_(pa.float16(), 8)
    assert table.schema.field("r").type == pa.list_(pa.float16(), 2)
    assert fixed_size_list_to_numpy(table.column("r"))[3].tolist() == [-3.0, -2.0]
    assert table.column("tick").type == pa.int32()
    with pytest.raises(ValueError, match="wide"):
        cache_table(["a"], [0], [_vec(np.zeros(5), np.zeros(2))], 8, 2)
    empty, _ = cache_table([], [], [], 8, 2)
    assert empty.num_rows == 0 and empty.schema.field("z").type.list_size == 8


def test_check_table_takes_the_width_from_the_table_and_still_checks_the_rest():
    table, _ = _table(2, z_width=10, r_width=5)
    assert check_table("cache", table).schema.field("z").type.list_size == 10
    with pytest.raises(SchemaError, match="missing columns"):
        check_table("cache", table.drop_columns(["generated_text"]))
    nulls = table.set_column(4, "generated_text", pa.array([None, "x"], pa.string()))
    with pytest.raises(ValueError, match="null"):
        check_table("cache", nulls)
    with pytest.raises(SchemaError, match="does not cast"):
        check_table(
            "cache", table.set_column(2, "z", pa.array([[1.0] * 10, [2.0] * 10], pa.list_(pa.float16())))
        )


def test_a_chunk_is_reused_only_for_its_fingerprint_and_row_count(tmp_path):
    part = tmp_path / "part-00000.parquet"
    table, _ = _table(3)
    fp = chunk_fingerprint({"model": "m"}, ["v0", "v0", "v1"], [0, 1, 0])
    path = write_chunk(table, chunk_path(part, 0), fp, {"rows": 3, "seconds": 1.5})
    assert path.parent == chunk_dir(part) and not path.name.startswith("part-")
    got, stats = read_done_chunk(path, fp, 3)
    assert got.equals(table) and stats == {"rows": 3, "seconds": 1.5}
    assert (
        read_done_chunk(path, chunk_fingerprint({"model": "other"}, ["v0", "v0", "v1"], [0, 1, 0]), 3) is None
    )
    assert read_done_chunk(path, fp, 4) is None
    assert read_done_chunk(chunk_path(part, 1), fp, 3) is None  # not written
    path.write_bytes(b"not parquet")
    assert read_done_chunk(path, fp, 3) is None
    # the fingerprint depends on the keys, and on their order
    assert chunk_fingerprint({}, ["a", "b"], [0, 0]) != chunk_fingerprint({}, ["b", "a"], [0, 0])
    assert chunk_fingerprint({}, ["a"], [0]) != chunk_fingerprint({}, ["a"], [1])


def test_merge_writes_one_part_the_heads_can_read_and_chunks_are_invisible_to_readers(tmp_path):
    part = tmp_path / "part-00000.parquet"
    a, _ = _table(2)
    b, _ = _table(2, offset=10.0)
    write_chunk(a, chunk_path(part, 0), "fp", {})
    merge_chunks([a, b], part, 6, 3, row_group=2)
    assert cache_parts(tmp_path) == [part]  # .chunks/ is not globbed
    assert pq.ParquetFile(part).metadata.num_row_groups == 2
    got = read_cache(tmp_path)
    z = fixed_size_list_to_numpy(got.column("z"))
    assert z.shape == (4, 6) and z[2, 0] == 10.0
    with pytest.raises(SchemaError, match="6 wide, the model gives 7"):
        merge_chunks([a], tmp_path / "part-00001.parquet", 7, 3, row_group=2)
    remove_chunks(part)
    assert not (tmp_path / ".chunks").exists()


def test_gather_indexes_the_parts_and_removes_parts_of_an_older_sharding(tmp_path):
    summaries = []
    for k in range(3):  # an older run with 3 shards
        merge_chunks([_table(2)[0]], tmp_path / f"part-{k:05d}.parquet", 6, 3, row_group=2)
        write_json_atomic({"rows": 2}, tmp_path / f"part-{k:05d}.summary.json")
    parts = [tmp_path / f"part-{k:05d}.parquet" for k in range(2)]
    for k, rows in enumerate((3, 1)):  # now 2 shards
        merge_chunks([_table(rows)[0]], parts[k], 6, 3, row_group=4)
        summary = {
            "rows": rows,
            "computed_rows": rows,
            "belief_parsed": rows,
            "compute_s": 2.0,
            "ticks_per_s": 1.5,
        }
        write_json_atomic(summary, tmp_path / f"part-{k:05d}.summary.json")
        summaries.append(tmp_path / f"part-{k:05d}.summary.json")
    index = gather_split(parts, summaries, tmp_path / "index.json", split="val", run="demo")
    assert index["removed_stale"] == ["part-00002.parquet"]
    assert not (tmp_path / "part-00002.summary.json").exists()
    assert [p["path"] for p in index["parts"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert [p["rows"] for p in index["parts"]] == [3, 1]
    assert index["rows"] == 4 and (index["z_width"], index["r_width"]) == (6, 3)
    assert index["totals"]["belief_parsed"] == 4 and index["totals"]["ticks_per_s"] == 3.0
    assert json.loads((tmp_path / "index.json").read_text()) == index
    assert len(index["parts"][0]["sha256"]) == 64
    with pytest.raises(ValueError, match="summary says"):
        build_index(parts, [{"rows": 3}, {"rows": 2}], split="val", run="demo")
