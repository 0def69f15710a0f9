"""One shard job of the cache stage: load the model once, compute the chunks not yet done, merge.

The model is loaded with transformers' Conv3d -> Linear fusion (`cache.patch_embed: library`,
process-global, which is why a shard job is a process of its own), the run's LoRA adapter is
attached with peft and, by default, merged into the weights (one matmul per layer instead of
three). `patch_embed: inplace` swaps the layer after loading instead (vlalert.vlm.patch): for
processes that also need unfused models, and for transformers without the fusion.

Frames are read clip by clip (a video is opened once per chunk) and resized to the model's input
size by `cache.workers` worker *processes*, and the next chunk is prepared while the model works on
the current one. Measured on an H200 with the GPU generating (benchmarks/gpu_suite.py, section
`decode`, 4 workers, 144 ticks of 720p windows resized to 448 x 448): threads delivered 34.2
ticks/s and spent 38.4 CPU s in the model's process; processes delivered 27.3 ticks/s (the frames
travel back pickled, 4.8 MB a tick) and spent 6.4 CPU s there, leaving that process's CPU and
interpreter to input building and the launch loop; add workers for rate. The resize is
`vlm.inputs.resize_frames`, the function `build_example` would run (a no-op on frames already at
size), so the inputs are the same bytes either way (tested). Throughput is the number
of ticks of a chunk over the wall time between the end of the previous chunk and the end of this
one (so it includes waiting for frames), recorded per chunk and per shard in the summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlalert.atomic import write_json_atomic
from vlalert.cache.config import CacheConfig
from vlalert.cache.rows import ROW_COLUMNS, chunk_bounds, select_rows, shard_rows
from vlalert.cache.store import (
    cache_table,
    chunk_fingerprint,
    chunk_path,
    merge_chunks,
    read_done_chunk,
    remove_chunks,
    write_chunk,
)
from vlalert.devices import resolve_device
from vlalert.stage_config import CacheSlice
from vlalert.video import FrameReadError, frame_worker_pool
from vlalert.vlm.config import VLMConfig

log = logging.getLogger("vlalert.cache")


class ModelSettings(Protocol):
    """What loading the model and building its inputs read of a config: the cache stage's slice
    (vlalert.stage_config.CacheSlice), or the workflow config (predict)."""

    @property
    def model(self) -> VLMConfig: ...

    @property
    def cache(self) -> CacheConfig: ...


# ------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelSpec:
    """What a model directory says about its text tower, read without loading weights."""

    hidden_size: int
    num_hidden_layers: int


def read_model_spec(name_or_path: str, revision: str | None = None) -> ModelSpec:
    """The text tower's widths from the model's config (at `revision` for a hub id: model.revision)."""
    from transformers import AutoConfig

    from vlalert.vlm.loading import source_kwargs

    config = AutoConfig.from_pretrained(name_or_path, **source_kwargs(name_or_path, revision))
    text = getattr(config, "text_config", config)
    return ModelSpec(int(text.hidden_size), int(text.num_hidden_layers))


def check_layers(cache: CacheConfig, spec: ModelSpec) -> None:
    if problem := cache.layer_problem(spec.num_hidden_layers):
        raise ValueError(problem)


def _file_identity(folder: Path, patterns: Sequence[str], hash_content: bool) -> list[list[Any]]:
    from vlalert.atomic import sha256_file

    out = []
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            st = p.stat()
            # Weights are not hashed (gigabytes); size and mtime change when they are rewritten.
            ident = sha256_file(p) if hash_content else st.st_mtime_ns
            out.append([p.name, st.st_size, ident])
    return out


def model_files_identity(name_or_path: str) -> dict[str, Any]:
    """The model as the cache fingerprint knows it: a hub id, or a directory with the name, size and
    mtime of its config and weight files (vlalert.vlm.sft.model_config_identity is SFT's, by config text)."""
    path = Path(name_or_path)
    if not path.is_dir():
        return {"hub": name_or_path}
    return {"dir": str(path.resolve()), "files": _file_identity(path, ["*.json", "*.safetensors"], False)}


def adapter_identity(adapter_dir: str | None) -> dict[str, Any] | None:
    if adapter_dir is None:
        return None
    path = Path(adapter_dir)
    return {
        "dir": str(path.resolve()),
        "files": _file_identity(path, ["*.json", "*.safetensors", "*.bin"], True),
    }


def load_extractor(
    model_path: str, adapter_dir: str | None, cfg: ModelSettings, device: str
) -> tuple[Any, dict[str, Any]]:
    """(Extractor, facts for the summary): model fused as configured, adapter attached (and merged)."""
    from vlalert.cache.extract import Extractor
    from vlalert.vlm.loading import load_model, load_tokenizer
    from vlalert.vlm.patch import fuse_patch_embed, fusion_state

    cache = cfg.cache
    model = load_model(
        model_path,
        dtype=cfg.model.dtype,
        device=device,
        fuse_patch_embed=cache.patch_embed == "library",
        revision=cfg.model.revision,
    )
    if adapter_dir is not None:
        from vlalert.vlm.lora import attach_adapter  # safetensors only

        model = attach_adapter(model, adapter_dir)
        if cache.merge_adapter:
            model = model.merge_and_unload()
    if cache.patch_embed == "inplace":
        fuse_patch_embed(model)
    model.eval()
    tokenizer = load_tokenizer(model_path, cfg.model.revision)
    ex = Extractor(
        model=model,
        tokenizer=tokenizer,
        belief_layers=tuple(cache.belief_layers),
        policy_layer=cache.policy_layer,
        max_new_tokens=cfg.model.max_new_tokens,
        hidden_pass=cache.hidden_pass,
        kv_cache=cache.kv_cache,
    )
    facts = {
        "patch_embed": fusion_state(model),
        "device": device,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "adapter_merged": adapter_dir is not None and cache.merge_adapter,
    }
    return ex, facts


# -------------------------------------------------------------------------------------------- data


def _read_clip_frames(
    path: str, frame_lists: Sequence[Sequence[int]], size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """The frames of several ticks of one clip, each needed frame decoded once, in one sorted pass
    (1 Hz ticks with 2 s windows share half their frames; one sequential decode, no seeking),
    resized to `size` (h, w) when given."""
    from vlalert.frames.store import resized_forward
    from vlalert.video import VideoFrames

    wanted = sorted({int(i) for idx in frame_lists for i in idx})
    with VideoFrames(path) as clip:
        frames = np.concatenate(list(resized_forward(clip, wanted, size)))
    return _windows(frames, wanted, frame_lists)


def _windows(
    frames: np.ndarray, wanted: Sequence[int], frame_lists: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """Each tick's window out of the frames at the sorted indices `wanted`."""
    pos = {f: k for k, f in enumerate(wanted)}
    return [frames[[pos[int(i)] for i in idx]] for idx in frame_lists]


def _read_store_frames(
    files: Sequence[str], path: str, frame_lists: Sequence[Sequence[int]], clip: str
) -> list[np.ndarray]:
    """The ticks' windows of one clip from the frames stores (already at the model's size); a frame
    that neighbouring windows share is decoded once."""
    from vlalert.frames.store import open_stores

    wanted = sorted({int(i) for idx in frame_lists for i in idx})
    return _windows(open_stores(files).read(path, wanted, clip), wanted, frame_lists)


def frames_identity(frames: Sequence[str]) -> list[dict[str, Any]] | None:
    """The stores' specs (codec, quality, size): what the model inputs went through, for fingerprints."""
    if not frames:
        return None
    from vlalert.frames.store import FrameStores

    return FrameStores(frames).specs()


def has_target(row: Mapping[str, Any]) -> bool:
    return row.get("analysis") is not None and row.get("belief") is not None


def prepare_examples(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    cfg: ModelSettings | None,
    teacher_forced: bool,
    pool: Executor,
    frames: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Model inputs of `rows` (in order); frames read per clip in `pool` (threads or processes):
    from the frames stores `frames` (the workflow: each clip decoded once by the frames stage), or,
    without stores, decoded from the clip and resized. A row is built with its target (teacher
    forcing) when the split is teacher-forced and the row has one."""
    from vlalert.vlm.inputs import build_example

    size = None if cfg is None else cfg.model.image_size
    by_path: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_path.setdefault(row["path"], []).append(i)
    futures = {
        path: (
            pool.submit(
                _read_store_frames,
                tuple(frames),
                path,
                [rows[i]["frame_idx"] for i in idx],
                rows[idx[0]]["video_id"],
            )
            if frames
            else pool.submit(_read_clip_frames, path, [rows[i]["frame_idx"] for i in idx], size)
        )
        for path, idx in by_path.items()
    }
    frames: list[np.ndarray | None] = [None] * len(rows)
    for path, idx in by_path.items():
        try:
            clip_frames = futures[path].result()
        except FrameReadError as err:  # a file that broke after ingest: say which clip
            raise err.for_clip(rows[idx[0]]["video_id"]) from None
        for i, f in zip(idx, clip_frames, strict=True):
            frames[i] = f
    return [
        build_example(row, f, tokenizer, cfg.model, with_target=teacher_forced and has_target(row))
        for row, f in zip(rows, frames, strict=True)
    ]


def compute_chunk(
    ex: Any, examples: Sequence[Mapping[str, Any]], batch_size: int, on_batch: Callable[[int], None]
) -> list[Any]:
    """Vectors of a chunk's examples in order: teacher-forced ones (with labels) and generated ones
    run in separate, length-sorted batches."""
    from vlalert.cache.extract import run_examples

    results: list[Any] = [None] * len(examples)
    for forced in (True, False):
        idx = [i for i, e in enumerate(examples) if ("labels" in e) == forced]
        if idx:
            vecs = run_examples(ex, [examples[i] for i in idx], batch_size, forced, on_batch)
            for i, v in zip(idx, vecs, strict=True):
                results[i] = v
    return results


# ------------------------------------------------------------------------------------------- shard


def read_split_rows(benchmark_path: str | os.PathLike[str]) -> tuple[pa.Table, dict[str, int]]:
    return select_rows(pq.read_table(benchmark_path, columns=list(ROW_COLUMNS)))


def _summary_counts(table: pa.Table) -> dict[str, int]:
    def count(col: str) -> int:
        return int(pc.sum(table.column(col)).as_py() or 0)

    return {
        "belief_parsed": count("belief_parsed"),
        "belief_unparsed": table.num_rows - count("belief_parsed"),
        "belief_span_found": count("belief_span_found"),
        "fallback_positions": table.num_rows - count("belief_span_found"),
        "teacher_forced": count("teacher_forced"),
        "generated": table.num_rows - count("teacher_forced"),
    }


@dataclass(frozen=True)
class _Chunk:
    """One chunk of a shard: its index, its rows [start, stop), fingerprint, and (table, stats) if done."""

    k: int
    start: int
    stop: int
    fingerprint: str
    done: tuple[pa.Table, dict[str, Any]] | None


@dataclass(frozen=True)
class _ShardPlan:
    """What a shard job computes: its rows, the model's widths, and which chunks are left to do."""

    rows: pa.Table
    selection: Any  # read_split_rows' description of the split's row selection
    spec: Any  # read_model_spec
    z_width: int
    r_width: int
    teacher_forced: bool
    chunks: list[_Chunk]

    @property
    def todo(self) -> list[_Chunk]:
        return [c for c in self.chunks if c.done is None]

    @property
    def resumed_rows(self) -> int:
        return sum(c.stop - c.start for c in self.chunks if c.done is not None)


def plan_shard(
    benchmark_path: str | os.PathLike[str],
    part_path: str | os.PathLike[str],
    *,
    cfg: CacheSlice,
    split: str,
    shard: int,
    model_path: str,
    adapter_dir: str | None,
    frames: Sequence[str] = (),
) -> _ShardPlan:
    """The shard's rows, in chunks, each with its fingerprint and, when a valid one is on disk, its result."""
    cache = cfg.cache
    spec = read_model_spec(model_path, cfg.model.revision)
    check_layers(cache, spec)
    split_rows, selection = read_split_rows(benchmark_path)
    rows = shard_rows(split_rows, cache.shards, shard)
    # the stage's tracked slice: what changes the cache (its speed keys may differ within one resume)
    identity = {
        "stage": cfg.tracked(),
        "model": model_files_identity(model_path),
        "adapter": adapter_identity(adapter_dir),
        "split": split,
        "frames": frames_identity(frames),
    }
    vids, ticks = rows.column("video_id").to_pylist(), rows.column("tick").to_pylist()
    chunks = []
    for k, (a, b) in enumerate(chunk_bounds(rows.num_rows, cache.chunk_ticks)):
        fp = chunk_fingerprint(identity, vids[a:b], ticks[a:b])
        chunks.append(_Chunk(k, a, b, fp, read_done_chunk(chunk_path(part_path, k), fp, b - a)))
    return _ShardPlan(
        rows=rows,
        selection=selection,
        spec=spec,
        z_width=cache.z_width(spec.hidden_size),
        r_width=spec.hidden_size,
        teacher_forced=split in cache.teacher_forced_splits,
        chunks=chunks,
    )


def _compute_chunks(
    plan: _ShardPlan,
    part_path: str | os.PathLike[str],
    *,
    cfg: CacheSlice,
    label: str,
    model_path: str,
    adapter_dir: str | None,
    tables: dict[int, pa.Table],
    chunk_stats: dict[int, dict[str, Any]],
    frames: Sequence[str] = (),
) -> dict[str, Any]:
    """Load the model, compute every chunk not done (frames of the next chunk prepared meanwhile), write
    each as it finishes into `tables`/`chunk_stats`; return the model facts for the summary."""
    import torch
    from tqdm import tqdm

    cache = cfg.cache
    device = resolve_device(cache.device, "cache.device")
    ex, facts = load_extractor(model_path, adapter_dir, cfg, device)
    log.info("model %s (adapter %s) on %s: %s", model_path, adapter_dir, device, facts)
    if ex.model.config.text_config.hidden_size != plan.spec.hidden_size:
        raise ValueError("the loaded model's hidden size differs from its config")
    rows = plan.rows
    row_dicts = rows.to_pylist()
    vids, ticks = rows.column("video_id").to_pylist(), rows.column("tick").to_pylist()
    todo = plan.todo
    bar = tqdm(
        total=rows.num_rows,
        initial=plan.resumed_rows,
        unit="tick",
        disable=not cache.progress,
        desc=f"cache {label}",
        dynamic_ncols=True,
    )
    tokenizer = ex.tokenizer
    with frame_worker_pool(cache.workers) as pool, ThreadPoolExecutor(1) as ahead:

        def prepare(chunk: _Chunk) -> list[dict[str, Any]]:
            return prepare_examples(
                row_dicts[chunk.start : chunk.stop], tokenizer, cfg, plan.teacher_forced, pool, frames
            )

        pending: Future = ahead.submit(prepare, todo[0])
        last = time.perf_counter()
        for j, chunk in enumerate(todo):
            a, b = chunk.start, chunk.stop
            examples = pending.result()
            if j + 1 < len(todo):
                pending = ahead.submit(prepare, todo[j + 1])
            vecs = compute_chunk(ex, examples, cache.batch_size, bar.update)
            table, clamped = cache_table(vids[a:b], ticks[a:b], vecs, plan.z_width, plan.r_width)
            now = time.perf_counter()
            stats = {
                "rows": b - a,
                "seconds": now - last,
                "ticks_per_s": (b - a) / max(now - last, 1e-9),
                "clamped_values": clamped,
                "teacher_forced_without_target": sum(
                    1 for e in examples if plan.teacher_forced and "labels" not in e
                ),
            }
            last = now
            write_chunk(table, chunk_path(part_path, chunk.k), chunk.fingerprint, stats)
            tables[chunk.k] = table
            chunk_stats[chunk.k] = dict(stats, resumed=False)
            bar.set_postfix(ticks_per_s=f"{stats['ticks_per_s']:.2f}")
    bar.close()
    del ex
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return facts


def _shard_summary(
    plan: _ShardPlan,
    chunk_stats: dict[int, dict[str, Any]],
    merged: pa.Table,
    *,
    cfg: CacheSlice,
    split: str,
    shard: int,
    model_path: str,
    adapter_dir: str | None,
    wall_s: float,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """The shard's summary.json: rows computed and resumed, throughput, parse counts, the model's facts."""
    cache = cfg.cache
    computed = [s for s in chunk_stats.values() if not s["resumed"]]
    compute_s = sum(s["seconds"] for s in computed)
    computed_rows = sum(s["rows"] for s in computed)
    return {
        "split": split,
        "shard": shard,
        "shards": cache.shards,
        "rows": plan.rows.num_rows,
        "split_selection": plan.selection,
        "computed_rows": computed_rows,
        "resumed_rows": plan.resumed_rows,
        "chunks": [dict(chunk_stats[c.k], chunk=c.k) for c in plan.chunks],
        "resumed_chunks": sum(1 for s in chunk_stats.values() if s["resumed"]),
        "compute_s": compute_s,
        "ticks_per_s": computed_rows / compute_s if compute_s > 0 else None,
        "wall_s": wall_s,
        "clamped_values": sum(int(s.get("clamped_values", 0)) for s in chunk_stats.values()),
        "teacher_forced_without_target": sum(
            int(s.get("teacher_forced_without_target", 0)) for s in chunk_stats.values()
        ),
        **_summary_counts(merged),
        "model": model_path,
        "adapter": adapter_dir,
        "hidden_size": plan.spec.hidden_size,
        "num_hidden_layers": plan.spec.num_hidden_layers,
        "z_width": plan.z_width,
        "r_width": plan.r_width,
        "belief_layers": list(cache.belief_layers),
        "policy_layer": cache.policy_layer,
        "hidden_pass": cache.hidden_pass,
        "kv_cache": cache.kv_cache,
        "batch_size": cache.batch_size,
        "teacher_forced_split": plan.teacher_forced,
        **facts,
    }


def run_shard(
    benchmark_path: str | os.PathLike[str],
    part_path: str | os.PathLike[str],
    summary_path: str | os.PathLike[str],
    *,
    cfg: CacheSlice,
    split: str,
    shard: int,
    model_path: str,
    adapter_dir: str | None,
    frames: Sequence[str] = (),
) -> dict[str, Any]:
    """Compute (or resume) shard `shard` of `split`; write its part file and summary; return the summary.

    Plan (which chunks are already done, by fingerprint), compute the others, merge, summarise.
    `frames`: the sources' frames stores the ticks' windows are read from (none: from the clips).
    """
    t_start = time.perf_counter()
    where = {"cfg": cfg, "split": split, "shard": shard, "model_path": model_path, "adapter_dir": adapter_dir}
    plan = plan_shard(benchmark_path, part_path, **where, frames=frames)
    log.info(
        "cache %s shard %d/%d: %d rows in %d chunks, %d chunks already done",
        split,
        shard,
        cfg.cache.shards,
        plan.rows.num_rows,
        len(plan.chunks),
        len(plan.chunks) - len(plan.todo),
    )
    facts: dict[str, Any] = {"patch_embed": None, "device": None, "dtype": None, "adapter_merged": None}
    chunk_stats = {c.k: dict(c.done[1], resumed=True) for c in plan.chunks if c.done}
    tables = {c.k: c.done[0] for c in plan.chunks if c.done}
    if plan.todo:
        facts = _compute_chunks(
            plan,
            part_path,
            cfg=cfg,
            label=f"{split}#{shard}",
            model_path=model_path,
            adapter_dir=adapter_dir,
            tables=tables,
            chunk_stats=chunk_stats,
            frames=frames,
        )
    ordered = [tables[c.k] for c in plan.chunks]
    merge_chunks(ordered, part_path, plan.z_width, plan.r_width, row_group=cfg.cache.chunk_ticks)
    merged = pq.read_table(part_path, columns=["belief_parsed", "belief_span_found", "teacher_forced"])
    summary = _shard_summary(
        plan, chunk_stats, merged, **where, wall_s=time.perf_counter() - t_start, facts=facts
    )
    write_json_atomic(summary, summary_path)
    remove_chunks(part_path)
    log.info("cache %s shard %d: %s", split, shard, json.dumps({k: summary[k] for k in _LOGGED}))
    return summary


_LOGGED = ("rows", "computed_rows", "resumed_rows", "belief_parsed", "fallback_positions", "ticks_per_s")
