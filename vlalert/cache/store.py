"""The cache on disk: atomic Parquet writes, resumable chunks, the shard merge, the split index.

A shard job writes its ticks chunk by chunk into `.chunks/part-{shard}/chunk-{k}.parquet` beside
its output (a hidden folder, so the `part-*.parquet` glob of the readers never sees a chunk),
each file written to a temp name and renamed: a killed job leaves only whole chunks. Each chunk
carries a fingerprint (sha256 of what determines its content: the stage's params, the model and
adapter files, the split, its rows' keys) in its Parquet metadata; a rerun keeps the chunks whose
fingerprint still matches and recomputes the others, so a resumed job gives the same cache as an
uninterrupted one, and a job rerun after a change never mixes old and new vectors. When all
chunks are there, they are merged into `part-{shard}.parquet` (checked against the CACHE schema
and the model's widths, written with the heads' read-fast options) and the chunks are removed.

Reading is here too (`read_cache`, `cache_parts`, `fixed_size_list_to_numpy`): the heads and the
score stage read the cache through this module, so the cache's format has one owner.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from vlalert.atomic import atomic_path, sha256_file, write_json_atomic
from vlalert.schemas import SchemaError, check_table

# the vector columns of a cache table: z (belief span, layers concatenated) and r (policy)
VECTOR_COLUMNS: tuple[str, ...] = ("z", "r")


def cache_write_options(table: pa.Table) -> dict:
    """pyarrow.parquet.write_table options that make the vector columns fast to read back.

    Dictionary encoding of float16 vectors (pyarrow's default) never pays (hidden states hardly
    repeat) and makes decoding ~3x slower; byte-stream-split + zstd reads fastest and is the
    smallest. Measured on a 32 k tick cache at hidden 256: 92 MB/s default, 560 MB/s with these.
    """
    vectors = [c for c in VECTOR_COLUMNS if c in table.column_names]
    return {
        "use_dictionary": [c for c in table.column_names if c not in vectors],
        "compression": "zstd",
        "column_encoding": {f"{c}.list.element": "BYTE_STREAM_SPLIT" for c in vectors},
    }


FINGERPRINT_KEY = b"vlalert.cache.fingerprint"
STATS_KEY = b"vlalert.cache.stats"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_float16(mat: np.ndarray) -> tuple[np.ndarray, int]:
    """float16 copy of `mat`, values beyond float16's range clamped to +-65504; and how many were."""
    mat = np.asarray(mat, dtype=np.float32)
    over = int(np.count_nonzero(np.abs(mat) > FLOAT16_MAX))
    return np.clip(mat, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16), over


def vector_array(mat: np.ndarray) -> pa.FixedSizeListArray:
    """[n, w] float16 -> fixed_size_list<halffloat>[w] (w taken from the array, also when n = 0)."""
    flat = pa.array(np.ascontiguousarray(mat, dtype=np.float16).reshape(-1), type=pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])


def cache_table(
    video_ids: Sequence[str], ticks: Sequence[int], vectors: Sequence[Any], z_width: int, r_width: int
) -> tuple[pa.Table, int]:
    """The CACHE table of ticks with their `extract.TickVectors`, and the number of clamped values."""
    n = len(vectors)
    if not len(video_ids) == len(ticks) == n:
        raise ValueError("video_ids, ticks and vectors differ in length")
    z = np.stack([v.z for v in vectors]) if n else np.zeros((0, z_width), np.float32)
    r = np.stack([v.r for v in vectors]) if n else np.zeros((0, r_width), np.float32)
    if z.shape[1] != z_width or r.shape[1] != r_width:
        raise ValueError(
            f"vectors are {z.shape[1]} / {r.shape[1]} wide, the model gives {z_width} / {r_width}"
        )
    z16, z_over = to_float16(z)
    r16, r_over = to_float16(r)
    table = pa.table(
        {
            "video_id": pa.array(list(video_ids), pa.string()),
            "tick": pa.array(list(ticks), pa.int32()),
            "z": vector_array(z16),
            "r": vector_array(r16),
            "generated_text": pa.array([v.generated_text for v in vectors], pa.string()),
            "belief_parsed": pa.array([v.belief_parsed for v in vectors], pa.bool_()),
            "belief_span_found": pa.array([v.belief_span_found for v in vectors], pa.bool_()),
            "teacher_forced": pa.array([v.teacher_forced for v in vectors], pa.bool_()),
            "n_generated_tokens": pa.array([v.n_generated_tokens for v in vectors], pa.int32()),
            "n_belief_tokens": pa.array([v.n_belief_tokens for v in vectors], pa.int32()),
        }
    )
    return check_table("cache", table), z_over + r_over


def check_widths(table: pa.Table, z_width: int, r_width: int, path: str | os.PathLike[str]) -> None:
    for name, width in (("z", z_width), ("r", r_width)):
        have = table.schema.field(name).type.list_size
        if have != width:
            raise SchemaError(f"{path}: column {name!r} is {have} wide, the model gives {width}")


def write_parquet_atomic(
    table: pa.Table,
    path: str | os.PathLike[str],
    metadata: Mapping[bytes, bytes] | None = None,
    row_group: int | None = None,
) -> Path:
    """Write a cache table to `path` via a temp file in the same folder and a rename."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:
        size = max(row_group or table.num_rows, 1)
        pq.write_table(table, tmp, row_group_size=size, **cache_write_options(table))
    return Path(path)


# ------------------------------------------------------------------------------------------- chunks


def chunk_dir(part_path: str | os.PathLike[str]) -> Path:
    part_path = Path(part_path)
    return part_path.parent / ".chunks" / part_path.name.removesuffix(".parquet")


def chunk_path(part_path: str | os.PathLike[str], index: int) -> Path:
    return chunk_dir(part_path) / f"chunk-{index:05d}.parquet"


def chunk_fingerprint(identity: Mapping[str, Any], video_ids: Sequence[str], ticks: Sequence[int]) -> str:
    """sha256 of what determines a chunk: `identity` (params, model, split...) and its rows' keys."""
    h = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for vid, tick in zip(video_ids, ticks, strict=True):
        h.update(f"\0{vid}\0{int(tick)}".encode())
    return h.hexdigest()


def write_chunk(table: pa.Table, path: str | os.PathLike[str], fp: str, stats: Mapping[str, Any]) -> Path:
    meta = {FINGERPRINT_KEY: fp.encode(), STATS_KEY: json.dumps(dict(stats), sort_keys=True).encode()}
    return write_parquet_atomic(table, path, meta)


def read_done_chunk(path: str | os.PathLike[str], fp: str, rows: int) -> tuple[pa.Table, dict] | None:
    """The chunk at `path` and its stats if it is complete and was computed for `fp`, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(FINGERPRINT_KEY, b"").decode() != fp:
            return None
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid):  # unreadable: recompute it
        return None
    if table.num_rows != rows:
        return None
    return table.replace_schema_metadata(None), json.loads(meta.get(STATS_KEY, b"{}"))


def merge_chunks(
    tables: Sequence[pa.Table], part_path: str | os.PathLike[str], z_width: int, r_width: int, row_group: int
) -> Path:
    """Concatenate a shard's chunks (in order) into its part file, checked and written atomically."""
    checked = [check_table("cache", t, part_path) for t in tables]
    table = pa.concat_tables(checked) if checked else cache_table([], [], [], z_width, r_width)[0]
    check_widths(table, z_width, r_width, part_path)
    return write_parquet_atomic(table, part_path, row_group=row_group)


def remove_chunks(part_path: str | os.PathLike[str]) -> None:
    folder = chunk_dir(part_path)
    if folder.is_dir():
        shutil.rmtree(folder)
    try:
        folder.parent.rmdir()  # .chunks, once no shard of the split has chunks left
    except OSError:
        pass


# -------------------------------------------------------------------------------------------- index


def remove_stale_parts(
    split_dir: str | os.PathLike[str], keep: Sequence[str | os.PathLike[str]]
) -> list[str]:
    """Delete `part-*.parquet` (and their summaries) of `split_dir` not in `keep`; return their names.

    A split re-cut into fewer shards would otherwise leave old parts that every reader globs.
    """
    keep_names = {Path(p).name for p in keep}
    removed = []
    for p in sorted(Path(split_dir).glob("part-*.parquet")):
        if p.name not in keep_names:
            p.unlink()
            summary = p.with_name(p.name.removesuffix(".parquet") + ".summary.json")
            if summary.exists():
                summary.unlink()
            removed.append(p.name)
    return removed


_COUNT_KEYS = (
    "rows",
    "computed_rows",
    "resumed_rows",
    "belief_parsed",
    "belief_span_found",
    "fallback_positions",
    "teacher_forced",
    "generated",
    "teacher_forced_without_target",
    "clamped_values",
)


def build_index(
    parts: Sequence[str | os.PathLike[str]],
    summaries: Sequence[Mapping[str, Any]],
    *,
    split: str,
    run: str,
    removed_stale: Sequence[str] = (),
) -> dict[str, Any]:
    """The split's index.json: every part (rows, bytes, sha256, its summary) and the totals."""
    if len(parts) != len(summaries):
        raise ValueError("one summary per part is required")
    entries, widths = [], set()
    for path, summary in zip(parts, summaries, strict=True):
        meta = pq.ParquetFile(path)
        rows = meta.metadata.num_rows
        if rows != summary["rows"]:
            raise ValueError(f"{path}: {rows} rows, its summary says {summary['rows']}")
        schema = meta.schema_arrow
        widths.add((schema.field("z").type.list_size, schema.field("r").type.list_size))
        entries.append(
            {
                "path": Path(path).name,
                "rows": rows,
                "bytes": os.path.getsize(path),
                "sha256": sha256_file(path),
                "summary": dict(summary),
            }
        )
    if len(widths) > 1:
        raise ValueError(f"parts of split {split} differ in vector widths: {sorted(widths)}")
    totals = {k: sum(int(s.get(k, 0)) for s in summaries) for k in _COUNT_KEYS}
    compute_s = sum(float(s.get("compute_s", 0.0)) for s in summaries)
    totals["compute_s"] = compute_s
    # Shards run in parallel on their own devices: the split's rate is the sum of theirs.
    totals["ticks_per_s"] = sum(float(s.get("ticks_per_s") or 0.0) for s in summaries)
    z_width, r_width = widths.pop() if widths else (None, None)
    return {
        "run": run,
        "split": split,
        "rows": totals["rows"],
        "z_width": z_width,
        "r_width": r_width,
        "parts": entries,
        "totals": totals,
        "removed_stale": list(removed_stale),
    }


def gather_split(
    parts: Sequence[str | os.PathLike[str]],
    summaries: Sequence[str | os.PathLike[str]],
    index_path: str | os.PathLike[str],
    *,
    split: str,
    run: str,
) -> dict[str, Any]:
    """Write the split's index.json over its shard parts (removing parts of an older sharding)."""
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    removed = remove_stale_parts(Path(index_path).parent, parts)
    index = build_index(parts, loaded, split=split, run=run, removed_stale=removed)
    write_json_atomic(index, index_path)
    return index


# ------------------------------------------------------------------------------ reading the cache


class CacheError(ValueError):
    """Cache files that are missing, malformed, or disagree with the labels."""


def cache_parts(cache_dir: str | Path) -> list[Path]:
    """The cache's part files in name order (atomic writers leave only complete `part-*.parquet`)."""
    parts = sorted(Path(cache_dir).glob("part-*.parquet"))
    if not parts:
        raise CacheError(f"{cache_dir}: no part-*.parquet files")
    return parts


def read_cache(cache_dir: str | Path, vectors: Sequence[str] = VECTOR_COLUMNS) -> pa.Table:
    """Read video_id, tick and the requested vector columns of every part (generated_text is skipped)."""
    bad = [v for v in vectors if v not in VECTOR_COLUMNS]
    if bad:
        raise CacheError(f"unknown vector columns {bad}; the cache has {list(VECTOR_COLUMNS)}")
    dataset = pads.dataset([str(p) for p in cache_parts(cache_dir)], format="parquet")
    missing = [c for c in ("video_id", "tick", *vectors) if c not in dataset.schema.names]
    if missing:
        raise CacheError(f"{cache_dir}: cache lacks columns {missing}")
    table = dataset.to_table(columns=["video_id", "tick", *vectors])
    for name in vectors:
        typ = table.schema.field(name).type
        if not (pa.types.is_fixed_size_list(typ) and pa.types.is_float16(typ.value_type)):
            raise CacheError(f"{cache_dir}: column {name!r} is {typ}, expected fixed_size_list<halffloat>")
    return table


def fixed_size_list_to_numpy(column: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    """[n] fixed_size_list<T>[w] -> numpy [n, w] of T, a view of the Arrow buffer when single-chunk.

    `.values` ignores a sliced array's offset, so the child is sliced explicitly. Nulls are refused:
    a cache vector is never null, and a null would otherwise read as garbage.
    """
    if isinstance(column, pa.ChunkedArray):
        arr = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
    else:
        arr = column
    if not pa.types.is_fixed_size_list(arr.type):
        raise CacheError(f"expected a fixed_size_list column, got {arr.type}")
    if arr.null_count:
        raise CacheError(f"vector column holds {arr.null_count} null rows")
    width = arr.type.list_size
    values = arr.values.slice(arr.offset * width, len(arr) * width)
    return values.to_numpy(zero_copy_only=True).reshape(len(arr), width)


def write_cache(table: pa.Table, cache_dir: str | Path, part_rows: int = 4096) -> list[Path]:
    """Write a cache table as part-00000.parquet, part-00001.parquet, ... (one row group each)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), part_rows)):
        path = cache_dir / f"part-{i:05d}.parquet"
        part = table.slice(start, part_rows)
        with atomic_path(path) as tmp:
            pq.write_table(part, tmp, row_group_size=part_rows, **cache_write_options(part))
        paths.append(path)
    return paths
