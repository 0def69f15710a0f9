"""Which benchmark ticks a split's cache holds, and how they are cut into shards and chunks.

Rows: every tick that is not excluded (post-event ticks are neither trained on nor scored), of
every clip. A prefix clip (`parent_id` set) re-uses its parent's ticks, and the heads and the
scorer read the parent's cache row for it, so prefix ticks get no row of their own, except where
the parent's (video_id, tick) is not itself cached (then the prefix tick is cached under its own
video_id, counted in the summary as `prefix_own_rows`): no tick the scorer asks for is ever missing.

Order: (video_id, tick). Shard k of S takes the contiguous slice [k n / S, (k + 1) n / S), so each
shard holds whole runs of a clip's ticks (its video is opened once) and the split's parts,
read in shard order, are again sorted. Chunks cut a shard the same way, `chunk_ticks` at a time.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

ROW_COLUMNS: tuple[str, ...] = (
    "video_id",
    "tick",
    "path",
    "fps",
    "frame_idx",
    "parent_id",
    "excluded",
    "analysis",
    "belief",
    "action",
)


def select_rows(benchmark: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """The rows to cache (ROW_COLUMNS, sorted by video_id, tick) and how they were chosen."""
    missing = [c for c in ROW_COLUMNS if c not in benchmark.column_names]
    if missing:
        raise ValueError(f"benchmark table lacks columns {missing}")
    table = benchmark.select(list(ROW_COLUMNS))
    kept = table.filter(pc.invert(table.column("excluded")))
    is_prefix = pc.is_valid(kept.column("parent_id"))
    own = kept.filter(pc.invert(is_prefix))
    prefix = kept.filter(is_prefix)
    own_keys = pa.table({"video_id": own.column("video_id"), "tick": own.column("tick")})
    index = pa.array(range(prefix.num_rows), pa.int64())
    parent_keys = pa.table(
        {"video_id": prefix.column("parent_id"), "tick": prefix.column("tick"), "i": index}
    )
    covered = parent_keys.join(own_keys, ["video_id", "tick"], join_type="left semi")
    uncovered_mask = pc.invert(pc.is_in(index, covered.column("i")))
    orphans = prefix.filter(uncovered_mask)
    rows = pa.concat_tables([own, orphans]).sort_by([("video_id", "ascending"), ("tick", "ascending")])
    keys = pa.table({"video_id": rows.column("video_id"), "tick": rows.column("tick")})
    if keys.group_by(["video_id", "tick"]).aggregate([]).num_rows != rows.num_rows:
        raise ValueError("benchmark holds duplicate (video_id, tick) rows")
    counts = {
        "benchmark_rows": benchmark.num_rows,
        "excluded_rows": benchmark.num_rows - kept.num_rows,
        "prefix_rows": prefix.num_rows,
        "prefix_on_parent_rows": prefix.num_rows - orphans.num_rows,
        "prefix_own_rows": orphans.num_rows,
        "rows": rows.num_rows,
    }
    return rows, counts


def slice_bounds(n: int, parts: int, index: int) -> tuple[int, int]:
    """[start, stop) of part `index` of `parts` near-equal contiguous parts of n items."""
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"part {index} of {parts} does not exist")
    return n * index // parts, n * (index + 1) // parts


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive chunks of at most `chunk` items covering n items."""
    if chunk < 1:
        raise ValueError("chunk size must be positive")
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def shard_rows(rows: pa.Table, shards: int, shard: int) -> pa.Table:
    start, stop = slice_bounds(rows.num_rows, shards, shard)
    return rows.slice(start, stop - start)
