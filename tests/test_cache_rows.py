"""Which benchmark ticks the cache holds, and how they are cut into shards and chunks."""

from __future__ import annotations

import pyarrow as pa
import pytest

from vlalert.cache.rows import ROW_COLUMNS, chunk_bounds, select_rows, shard_rows, slice_bounds


def _bench(rows):
    cols = {c: [r.get(c) for r in rows] for c in ROW_COLUMNS}
    cols["frame_idx"] = [[0] * 8 for _ in rows]
    cols["fps"] = [10.0] * len(rows)
    cols["path"] = ["p"] * len(rows)
    return pa.table(
        {
            **{
                c: pa.array(v)
                for c, v in cols.items()
                if c not in ("tick", "parent_id", "analysis", "belief")
            },
            "tick": pa.array(cols["tick"], pa.int32()),
            "parent_id": pa.array(cols["parent_id"], pa.string()),
            "analysis": pa.array(cols["analysis"], pa.string()),
            "belief": pa.array(cols["belief"], pa.string()),
        }
    )


def _r(vid, tick, parent=None, excluded=False):
    return {"video_id": vid, "tick": tick, "parent_id": parent, "excluded": excluded, "action": "SILENT"}


def test_selection_drops_excluded_and_prefix_ticks_the_parent_covers():
    bench = _bench(
        [
            _r("b", 1),
            _r("a", 2),
            _r("a", 0),
            _r("a", 1),
            _r("a", 3, excluded=True),  # post-event: neither trained on nor scored
            _r("a#prefix", 0, parent="a"),  # the parent's row serves it
            _r("a#prefix", 1, parent="a"),
            _r("a#prefix", 3, parent="a"),  # parent tick 3 is excluded: cached on its own
            _r("a#prefix", 4, parent="a", excluded=True),
            _r("b", 0),
        ]
    )
    rows, counts = select_rows(bench)
    keys = list(zip(rows.column("video_id").to_pylist(), rows.column("tick").to_pylist(), strict=True))
    assert keys == [("a", 0), ("a", 1), ("a", 2), ("a#prefix", 3), ("b", 0), ("b", 1)]
    assert counts == {
        "benchmark_rows": 10,
        "excluded_rows": 2,
        "prefix_rows": 3,  # not excluded
        "prefix_on_parent_rows": 2,
        "prefix_own_rows": 1,
        "rows": 6,
    }
    assert rows.column_names == list(ROW_COLUMNS)


def test_duplicate_ticks_and_missing_columns_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        select_rows(_bench([_r("a", 0), _r("a", 0)]))
    with pytest.raises(ValueError, match="lacks columns"):
        select_rows(_bench([_r("a", 0)]).drop_columns(["frame_idx"]))


def test_shards_are_contiguous_near_equal_and_cover_everything():
    assert [slice_bounds(10, 3, k) for k in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [slice_bounds(2, 4, k) for k in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError):
        slice_bounds(10, 3, 3)
    table = pa.table({"i": list(range(7))})
    parts = [shard_rows(table, 3, k).column("i").to_pylist() for k in range(3)]
    assert parts == [[0, 1], [2, 3], [4, 5, 6]]


def test_chunks():
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(0, 2) == []
    with pytest.raises(ValueError):
        chunk_bounds(3, 0)
