"""The Arrow data path: join correctness, training filters, padding, zero-copy, no per-row Python."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlalert.cache.store import CacheError, fixed_size_list_to_numpy, read_cache, write_cache
from vlalert.heads import fsm
from vlalert.heads.data import build_clips, load_clips, make_batch, read_labels
from vlalert.heads.synthetic import synthetic_split
from vlalert.schemas import check_table, write_table

HIDDEN = 2
CODE = {"a": 1, "a#prefix": 3, "b": 2}
# (video_id, tick, action, danger, excluded, parent_id, is_positive)
LABELS = [
    ("b", 1, "SILENT", 0.0, False, None, False),
    ("a", 2, "ALERT", 0.5, False, None, True),
    ("a#prefix", 0, "SILENT", 0.0, False, "a", False),
    ("a", 0, "SILENT", 0.0, False, None, True),
    ("a", 3, "ALERT", 0.75, True, None, True),
    ("b", 0, "SILENT", 0.0, False, None, False),
    ("a", 1, "OBSERVE", 0.25, False, None, True),
    ("a#prefix", 1, "SILENT", 0.0, False, "a", False),
]


def _vectors(keys: list[tuple[str, int]], width: int, scale: float) -> pa.FixedSizeListArray:
    """Row i encodes its own key: [tick, clip code, tick * scale + code, 0, ...]."""
    mat = np.zeros((len(keys), width), dtype=np.float16)
    for i, (vid, tick) in enumerate(keys):
        mat[i, :3] = (tick, CODE[vid], tick * scale + CODE[vid])
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), width)


def _cache_table(keys: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "video_id": pa.array([k[0] for k in keys]),
            "tick": pa.array([k[1] for k in keys], pa.int32()),
            "z": _vectors(keys, 4 * HIDDEN, 10),
            "r": _vectors(keys, HIDDEN * 2, 100),
            "generated_text": pa.array(["x"] * len(keys)),
        }
    )


def _labels_table(rows=LABELS) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "video_id": pa.array(cols[0]),
            "tick": pa.array(cols[1], pa.int32()),
            "action": pa.array(cols[2]),
            "danger": pa.array(cols[3], pa.float32()),
            "excluded": pa.array(cols[4]),
            "parent_id": pa.array(cols[5], pa.string()),
            "is_positive": pa.array(cols[6]),
        }
    )


@pytest.fixture()
def split(tmp_path: Path) -> tuple[Path, Path]:
    """Cache rows in a scrambled order over two parts; labels in yet another order."""
    keys = [("a", 3), ("b", 0), ("a", 1), ("a#prefix", 1), ("a", 0), ("b", 1), ("a#prefix", 0), ("a", 2)]
    write_cache(_cache_table(keys), tmp_path / "cache", part_rows=5)
    pq.write_table(_labels_table(), tmp_path / "labels.parquet")
    return tmp_path / "cache", tmp_path / "labels.parquet"


def test_training_join_groups_sorts_and_filters(split):
    clips = load_clips(*split)
    assert sorted(p.name for p in split[0].iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert clips.video_ids == ["a", "b"]  # prefix clip dropped
    assert clips.offsets.tolist() == [0, 3, 5]  # a: ticks 0-2 (tick 3 excluded), b: ticks 0-1
    assert clips.tick.tolist() == [0, 1, 2, 0, 1]
    assert clips.action.tolist() == [0, 1, 2, 0, 0]
    assert clips.danger.tolist() == [0.0, 0.25, 0.5, 0.0, 0.0]
    assert clips.is_positive.tolist() == [True, False]
    assert clips.z.shape == (8, 4 * HIDDEN) and clips.r.shape == (8, 2 * HIDDEN)
    assert clips.class_counts().tolist() == [3, 1, 1]


def test_batch_gathers_each_ticks_own_vector_and_pads(split):
    clips = load_clips(*split)
    batch = make_batch(clips, np.array([1, 0]))
    assert batch.z.shape == (2, 3, 4 * HIDDEN) and batch.z.dtype.is_floating_point
    assert batch.mask.tolist() == [[True, True, False], [True, True, True]]
    # z encodes (tick, clip): b's ticks 0,1 then padding; a's ticks 0,1,2
    assert batch.z[0, :2, 0].tolist() == [0, 1] and batch.z[0, :2, 1].tolist() == [2, 2]
    assert batch.z[1, :, 0].tolist() == [0, 1, 2] and batch.z[1, :, 1].tolist() == [1, 1, 1]
    assert batch.r[1, :, 2].tolist() == [1, 101, 201]
    assert batch.action.tolist() == [[0, 0, 0], [0, 1, 2]]
    assert batch.danger.tolist() == [[0, 0, 0], [0, 0.25, 0.5]]
    assert batch.is_positive.tolist() == [False, True]


def test_a_batch_may_start_mid_clip_with_the_label_before(split):
    clips = load_clips(*split)
    batch = make_batch(clips, np.array([1, 0]), skip=np.array([0, 2]))
    assert batch.mask.tolist() == [[True, True], [True, False]]
    assert batch.z[1, 0, 0].item() == 2 and batch.action[1, 0].item() == 2  # a starts at its tick 2
    assert batch.prev0.tolist() == [fsm.START, 1]  # b from its start; a after its tick 1 (OBSERVE)
    over = make_batch(clips, np.array([0]), skip=np.array([9]))  # a clip keeps at least its last tick
    assert over.mask.tolist() == [[True]] and over.z[0, 0, 0].item() == 2
    assert make_batch(clips, np.array([0])).prev0.tolist() == [fsm.START]


def test_scoring_mode_keeps_excluded_and_prefix(split):
    clips = load_clips(*split, training=False)
    assert clips.video_ids == ["a", "a#prefix", "b"]
    assert clips.offsets.tolist() == [0, 4, 6, 8]
    assert clips.action.tolist() == [0, 1, 2, 2, 0, 0, 0, 0]


def test_only_requested_vectors_are_read(split):
    clips = load_clips(*split, vectors=("r",))
    assert clips.z is None and clips.r_dim == 2 * HIDDEN
    assert make_batch(clips, np.array([0])).z is None


def test_cache_and_labels_must_agree(tmp_path):
    labels = _labels_table()
    all_keys = [(r[0], r[1]) for r in LABELS]
    with pytest.raises(CacheError, match="no label"):
        build_clips(_cache_table(all_keys + [("b", 2)]), labels)
    with pytest.raises(CacheError, match="no cache row"):
        build_clips(_cache_table([k for k in all_keys if k != ("a", 1)]), labels)
    # an excluded tick missing from the cache is fine for training
    assert build_clips(_cache_table([k for k in all_keys if k != ("a", 3)]), labels).n_ticks == 5
    with pytest.raises(CacheError, match="duplicate"):
        build_clips(_cache_table(all_keys + [("a", 0)]), labels)
    with pytest.raises(CacheError, match="no part"):
        read_cache(tmp_path)


def test_cache_vectors_must_be_float16_fixed_size_lists(tmp_path):
    table = _cache_table([("a", 0)])
    table = table.set_column(2, "z", table.column("z").cast(pa.list_(pa.float32(), 4 * HIDDEN)))
    write_cache(table, tmp_path / "c")
    with pytest.raises(CacheError, match="halffloat"):
        read_cache(tmp_path / "c")


def test_vectors_are_views_of_the_arrow_buffer(split):
    cache = read_cache(split[0])
    single = cache.combine_chunks()  # one chunk per column: the zero-copy case
    clips = build_clips(single, read_labels(split[1]))
    chunk = single.column("z").chunk(0)
    arrow_values = np.frombuffer(chunk.values.buffers()[1], dtype=np.float16)
    assert np.shares_memory(clips.z, arrow_values)
    assert clips.z.ctypes.data == chunk.values.buffers()[1].address + chunk.values.offset * 2
    # a sliced array (offset != 0) maps to the right rows, still without a copy
    sliced = chunk.slice(3, 4)
    view = fixed_size_list_to_numpy(sliced)
    assert np.shares_memory(view, arrow_values)
    np.testing.assert_array_equal(view, np.asarray(chunk.values)[3 * 8 : 7 * 8].reshape(4, 8))


def test_null_vectors_are_refused():
    arr = pa.FixedSizeListArray.from_arrays(
        pa.array(np.zeros(4, np.float16)), 2, mask=pa.array([False, True])
    )
    with pytest.raises(CacheError, match="null"):
        fixed_size_list_to_numpy(arr)


def _count_python_calls(fn, *args) -> int:
    """Python-level and builtin calls made while fn runs (sys.setprofile sees both)."""
    calls = [0]

    def prof(frame, event, arg):
        if event in ("call", "c_call"):
            calls[0] += 1

    sys.setprofile(prof)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return calls[0]


def _python_heap_peak(fn, *args) -> int:
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def short_and_long():
    """The same 12 clips, once with ~10 ticks each and once with ~120: per-clip work is equal."""
    short = synthetic_split(12, 8, seed=1, min_ticks=8, max_ticks=12)
    long = synthetic_split(12, 8, seed=1, min_ticks=100, max_ticks=140)
    assert long[0].num_rows > 8 * short[0].num_rows
    return (short[0].combine_chunks(), short[1]), (long[0].combine_chunks(), long[1])


def test_python_calls_do_not_grow_with_ticks(short_and_long):
    (sc, sl), (lc, ll) = short_and_long
    build_clips(sc, sl)  # warm-up: first-use imports and caches
    assert _count_python_calls(build_clips, lc, ll) == _count_python_calls(build_clips, sc, sl)


def test_no_per_row_python_objects(short_and_long):
    _, (cache, labels) = short_and_long
    build_clips(cache, labels)
    bound = 4 * cache.num_rows  # bytes; one Python object per row costs at least 8 (its list slot)
    assert _python_heap_peak(build_clips, cache, labels) < bound
    # the bound does catch a per-row conversion, even of the cheapest column (small cached ints)
    assert _python_heap_peak(lambda: cache.column("tick").to_pylist()) > bound


def test_synthetic_labels_fit_the_benchmark_schema(tmp_path):
    cache, labels = synthetic_split(12, 3, seed=5, split="val")
    check_table("benchmark", labels)
    write_table("benchmark", labels, tmp_path / "val.parquet")
    assert cache.schema.field("z").type == pa.list_(pa.float16(), 12)
    assert cache.schema.field("r").type == pa.list_(pa.float16(), 3)
    prefix = labels.filter(pa.compute.is_valid(labels.column("parent_id")))
    assert prefix.num_rows > 0
    assert set(prefix.column("video_id").to_pylist()) <= {
        v + "#prefix" for v in labels.column("video_id").to_pylist()
    }
