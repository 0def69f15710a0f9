"""Every GPU number the project reports, in one command, at the pipeline's own settings.

On one GPU, with the full-width Qwen3-VL-4B architecture and random weights in bf16 (nothing is
downloaded; the widths are those of Qwen/Qwen3-VL-4B-Instruct's config.json, see
cache_throughput.QWEN3_VL_4B), the sections run in this order and each adds its part to the JSON as
soon as it ends, so a run stopped by its time limit keeps what it measured:

1. peak        measured dense bf16 matmul throughput (8192^3): the denominator of MFU; and the memory
               bandwidth of a 2 GiB device copy (what a memory-bound decoding step streams at).
2. extract     cache extraction (greedy generation + the cached hidden-state pass, vlalert.cache.extract)
               at several batch sizes, Conv3d patch embedding vs its Linear rewrite, ticks/s and MFU
               (FLOPs of one batch at the pipeline's batch size counted by torch's FlopCounterMode).
               Settings are the pipeline's: config/full.yaml's frames (8 at 448 x 448) and
               model.max_new_tokens; random weights never emit the stop token, so every tick
               generates exactly max_new_tokens tokens, as many or more than a trained model writes.
               At the pipeline's batch also with the static key/value cache (--kv-caches), which
               transformers compiles on CUDA (its warm-up, compilation included, is reported).
               The best rate against the roofline of the measured peak and bandwidth
               (benchmarks/extraction_roofline.py): the share of the ceiling it reaches, and the
               share the <= 1 h goal needs.
3. decode      sequential decoding of 1280 x 720 30 fps H.264 clips (vlalert.video.VideoFrames, the
               decoder every stage uses) alone, and with 1 and 4 decoding threads while the GPU
               generates in the main thread (the cache stage's shape: decode threads beside the model
               in one process); frames/s, and ticks/s of a 1 Hz clip read once (30 frames a tick).
               Decode once: the frames stage (vlalert.frames.store, 4 workers, JPEG 95 at the model's
               size) alone and with the GPU busy, and the cache stage's window reads from its store.
4. badas       the Open-BADAS gate (V-JEPA2 ViT-L/16 + their probe + head, vlalert.badas) in bf16:
               model ms per 16-frame window at batch 1/8/32 and peak memory, and the provider end to
               end on one 720p clip (decode + their preprocessing + model) per clip.
5. sft         one LoRA SFT step (benchmarks/sft_step_full.py: the SFT stage's loss and LoRA) at the
               pipeline's micro-batch (4) with gradient checkpointing: step time and peak memory.
6. cache_stage the frames stage on the clips, then vlalert.cache.stage.run_shard end to end (windows
               read from that store by its worker processes, inputs
               built, model loaded from disk with transformers' patch fusion, shards written) on as
               many synthetic 720p ticks as the time left allows (up to --stage-ticks).

    python benchmarks/gpu_suite.py --make-clips .gpu/clips     # here (needs PyAV): the 720p clips
    python benchmarks/gpu_suite.py --clips .gpu/clips          # on the GPU machine: the suite
    python benchmarks/gpu_suite.py --toy --clips .gpu/clips    # the same code at toy width on CPU

`--budget-s` bounds the whole run (default 420 s): a section that would not fit is skipped and says
so in the JSON. Results print and go to benchmarks/results/gpu_suite.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from hostinfo import describe_host

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CLIP_FPS, CLIP_W, CLIP_H = 30, 1280, 720


# ------------------------------------------------------------------------------------------ clips


def make_clips(folder: Path, n: int, seconds: float) -> list[Path]:
    """n 1280x720 30 fps H.264 clips of a textured moving scene (frame_verify's), each shifted in time."""
    import frame_verify

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"clip{k:02d}.mp4"
        if not path.exists():
            frames = int(seconds * CLIP_FPS)
            frame_verify.encode(path, frames, offset=k * 37)
        paths.append(path)
    return paths


def clip_paths(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("clip*.mp4"))
    if not paths:
        raise SystemExit(f"no clip*.mp4 in {folder}: make them first with --make-clips {folder}")
    return paths


# ----------------------------------------------------------------------------------------- helpers


class Suite:
    """The JSON report, written after every section, and the time budget."""

    def __init__(self, out: Path, budget_s: float, meta: dict[str, Any]) -> None:
        self.out, self.t0, self.budget_s = out, time.perf_counter(), budget_s
        self.report: dict[str, Any] = {**meta, "budget_s": budget_s, "sections": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def run(self, name: str, fn, need_s: float, *args: Any) -> Any:
        if self.left() < need_s:
            self.report["sections"][name] = {"skipped": f"{self.left():.0f} s left, needs ~{need_s:.0f} s"}
            print(f"[{name}] skipped: {self.left():.0f} s left, needs ~{need_s:.0f} s", flush=True)
            self.write()
            return None
        print(f"[{name}] start ({self.left():.0f} s left)", flush=True)
        t = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as err:  # a failed section must not lose the others' numbers
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {err}"}
        section = result if isinstance(result, dict) else {"value": result}
        section["section_s"] = round(time.perf_counter() - t, 1)
        self.report["sections"][name] = section
        self.write()
        print(f"[{name}] {json.dumps(section, default=str)[:2000]}", flush=True)
        return result

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.report, indent=2, default=str) + "\n")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def _reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------- sections


def sec_peak(device: str, toy: bool) -> dict[str, Any]:
    import cache_throughput
    import torch

    if toy:  # fp32 on CPU: a smoke test of the code path, not a number to report
        n = 512
        a, b = torch.randn(n, n), torch.randn(n, n)
        ms = cache_throughput._median_ms(lambda: a @ b, 5, device)
        return {
            "dtype": "float32",
            "n": n,
            "tflops": 2 * n**3 / (ms * 1e-3) / 1e12,
            "bandwidth_tbs": cache_throughput.copy_bandwidth_tbs(device, 64 << 20, 5),
        }
    return {
        "dtype": "bfloat16",
        "n": 8192,
        "tflops": cache_throughput.matmul_peak_tflops(device),
        "bandwidth_tbs": cache_throughput.copy_bandwidth_tbs(device),
    }


class Ctx:
    """What the sections share: the extraction model, its tokenizer and settings."""

    model: Any = None
    tok: Any = None
    vlm: Any = None
    examples: list | None = None
    ticks_per_s_b8: float | None = None
    vlm_max_new: int = 16


def pipeline_settings(toy: bool) -> tuple[Any, Any, int, int]:
    """(VLMConfig, cache batch, max_new_tokens, preset) as config/full.yaml runs them."""
    import cache_throughput
    import yaml

    from vlalert.config import validate_config
    from vlalert.vlm.config import TinyModelConfig, VLMConfig

    raw = yaml.safe_load((HERE.parent / "config" / "full.yaml").read_text())
    cfg = validate_config(raw)
    if toy:
        return VLMConfig(), 2, 16, TinyModelConfig()
    vlm = VLMConfig(
        tiny=cache_throughput.QWEN3_VL_4B,
        image_height=cfg.model.image_height,
        image_width=cfg.model.image_width,
    )
    return vlm, cfg.cache.batch_size, cfg.model.max_new_tokens, cache_throughput.QWEN3_VL_4B


def sec_extract(
    ctx: Ctx,
    device: str,
    toy: bool,
    batches: list[int],
    peak: float | None,
    flops: bool = True,
    kv_caches: tuple[str, ...] = ("dynamic",),
    bandwidth: float | None = None,
) -> dict[str, Any]:
    import cache_throughput as ct
    import torch

    from vlalert.cache.extract import Extractor
    from vlalert.vlm.patch import fuse_patch_embed, unfuse_patch_embed

    vlm, pipe_batch, max_new, preset = pipeline_settings(toy)
    dtype = torch.float32 if toy else torch.bfloat16
    t = time.perf_counter()
    model, tok = ct.build_model(preset, vlm, None if toy else ct.QWEN3_VL_4B_VOCAB, device, dtype)
    ctx.model, ctx.tok, ctx.vlm = model, tok, vlm
    out: dict[str, Any] = {
        "model": "tiny" if toy else "Qwen3-VL-4B architecture, random weights",
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "frames": [8, *vlm.image_size],
        "max_new_tokens": max_new,
        "pipeline_batch": pipe_batch,
        "build_s": round(time.perf_counter() - t, 1),
        "by_batch": {},
    }
    _reset_peak(device)
    for b in sorted({pipe_batch, *batches}):
        kv = kv_caches if b == pipe_batch else ("dynamic",)  # a compile per batch size: the pipeline's
        r = ct.bench_extract(model, tok, vlm, b, b, max_new, 1, device, kv)
        out["by_batch"][str(b)] = {
            "ticks_per_s": {k: round(v, 3) for k, v in r["ticks_per_s"].items()},
            "speedup_patched": round(r["speedup_patched"], 3),
            "speedup_kv_cache": {k: round(v, 3) for k, v in r["speedup_kv_cache"].items()},
            "warmup_s": r["warmup_s"],
            "z_max_relative_error": r["z_max_relative_error_patched_vs_unpatched"],
            "z_max_relative_error_vs_dynamic": r["z_max_relative_error_vs_dynamic"],
            "prompt_tokens": r["prompt_tokens"],
            "patches_per_tick": r["patches_per_tick"],
            "generated_tokens_per_tick": r["generated_tokens_per_tick"],
            "peak_memory_gb": _peak_gb(device),
        }
        print(f"  batch {b}: {r['ticks_per_s']}", flush=True)
    ctx.ticks_per_s_b8 = out["by_batch"][str(pipe_batch)]["ticks_per_s"]["patched"]
    depth = model.config.text_config.num_hidden_layers
    layers, policy = ct.LAYERS.get(depth, ((depth,), depth))
    fuse_patch_embed(model)
    ctx.examples = ct.make_examples(tok, vlm, pipe_batch)
    if not flops:
        unfuse_patch_embed(model)
        return out
    try:
        flops = ct.count_flops(
            Extractor(model, tok, layers, policy, max_new, "cached"), ctx.examples, pipe_batch
        )
    except Exception as err:  # keep the measured rates
        out["flops_error"] = f"{type(err).__name__}: {err}"
        return out
    finally:
        unfuse_patch_embed(model)
    per_tick = flops / pipe_batch
    out["flops_per_tick"] = per_tick
    if peak:
        out["mfu"] = {
            str(b): round(per_tick * v["ticks_per_s"]["patched"] / 1e12 / peak, 4)
            for b, v in out["by_batch"].items()
        }
    best, best_b, best_mode = max(
        (rate, int(b), mode)
        for b, v in out["by_batch"].items()
        for mode, rate in v["ticks_per_s"].items()
        if mode != "unpatched"
    )
    out["full_scale_hours_132k_ticks"] = {
        "pipeline_batch": round(132_000 / ctx.ticks_per_s_b8 / 3600, 2),
        "best_batch": round(132_000 / best / 3600, 2),
        "best": f"batch {best_b}, {best_mode}",
        "goal_hours": 1.0,
    }
    if peak and bandwidth:
        out["roofline"] = roofline_of(
            model.config, ctx.examples[0], max_new, per_tick, best_b, best, peak, bandwidth
        )
    return out


def roofline_of(
    config: Any,
    example: dict[str, Any],
    max_new: int,
    counted_per_tick: float,
    batch: int,
    rate: float,
    peak: float,
    bandwidth: float,
) -> dict[str, Any]:
    """The measured best rate against the roofline of this GPU's measured peak and bandwidth
    (benchmarks/extraction_roofline.py), whose analytic FLOPs are checked against the count."""
    import extraction_roofline as er

    grid = example["video_grid_thw"][0]
    tick = er.Tick(
        prompt_tokens=int(example["input_ids"].shape[0]),
        patches=int(grid.prod()),
        groups=int(grid[0]),
        new_tokens=max_new,
    )
    analytic = sum(er.tick_flops(config, tick).values())
    ceiling = er.roofline(config, tick, batch, er.Device("this device", peak, bandwidth, "measured"))
    return er.rounded(
        {
            "batch": batch,
            "flops_per_tick_analytic_over_counted": analytic / counted_per_tick,
            "seconds_per_batch": ceiling["seconds_per_batch"],
            "ticks_per_s_ceiling": ceiling["ticks_per_s_ceiling"],
            "share_of_ceiling_reached": rate / ceiling["ticks_per_s_ceiling"],
            "share_of_ceiling_goal_needs": ceiling["share_of_ceiling_goal_needs"],
        }
    )


def _decode_clip(path: Path) -> tuple[int, float]:
    from vlalert.video import VideoFrames

    t = time.perf_counter()
    with VideoFrames(path) as clip:
        n = len(clip)
        step = 64
        for a in range(0, n, step):  # sequential, in bounded memory
            clip.read(list(range(a, min(a + step, n))))
    return n, time.perf_counter() - t


def _decode_threads(paths: list[Path], threads: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(_decode_clip, [paths[i % len(paths)] for i in range(threads)]))
    wall = time.perf_counter() - t0
    frames = sum(n for n, _ in results)
    return {
        "threads": threads,
        "frames": frames,
        "wall_s": round(wall, 2),
        "frames_per_s": round(frames / wall, 1),
        "ticks_per_s_1hz": round(frames / wall / CLIP_FPS, 2),
        "process_cpu_s": round(time.process_time() - c0, 2),
    }


def _clip_windows(path: Path) -> list[list[int]]:
    """The 8-frame windows of a clip's 1 Hz ticks (2 s span), as the benchmark rows hold them."""
    from vlalert.config import TicksConfig, WindowConfig
    from vlalert.ticks import tick_times, window_frames
    from vlalert.video import VideoFrames

    with VideoFrames(path) as clip:
        n = len(clip)
    ts = tick_times(n, CLIP_FPS, TicksConfig(), WindowConfig())
    return [window_frames(float(t), CLIP_FPS, n, WindowConfig()) for t in ts]


def _deliver(
    paths: list[Path], workers: int, kind: str, size: tuple[int, int], store: Path | None = None
) -> dict[str, Any]:
    """The cache stage's frame work for 2 x `workers` clips, in `workers` threads or spawned processes
    (vlalert.video.frame_worker_pool): a clip's tick windows decoded and resized to the model's size,
    or, given the frames stage's `store`, read from it (the pipeline's path since decode-once)."""
    from concurrent.futures import ThreadPoolExecutor

    from vlalert.cache.stage import _read_clip_frames, _read_store_frames
    from vlalert.video import frame_worker_pool

    pool = ThreadPoolExecutor(workers) if kind == "threads" else frame_worker_pool(workers)
    clips = [paths[i % len(paths)] for i in range(2 * workers)]
    windows = {p: _clip_windows(p) for p in set(clips)}

    def submit(p: Path) -> Any:
        if store is not None:
            return pool.submit(_read_store_frames, (str(store),), str(p), windows[p], p.stem)
        return pool.submit(_read_clip_frames, str(p), windows[p], size)

    with pool:
        list(pool.map(abs, range(workers)))  # workers started before the clock runs
        t0, c0 = time.perf_counter(), time.process_time()
        futures = [submit(p) for p in clips]
        ticks = sum(len(f.result()) for f in futures)
        wall = time.perf_counter() - t0
    return {
        "kind": kind if store is None else f"store, {kind}",
        "workers": workers,
        "clips": len(clips),
        "ticks": ticks,
        "wall_s": round(wall, 2),
        "ticks_per_s": round(ticks / wall, 2),
        "parent_cpu_s": round(time.process_time() - c0, 2),
    }


def _build_store(paths: list[Path], size: tuple[int, int], out: Path, workers: int) -> dict[str, Any]:
    """The frames stage on these clips (vlalert.frames.store.write_store, JPEG 95 at the model's size)."""
    from vlalert.frames.store import ClipFrames, StoreSpec, write_store

    clips = [
        ClipFrames(p.stem, str(p), tuple(sorted({i for w in _clip_windows(p) for i in w}))) for p in paths
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    counts = write_store(clips, StoreSpec("jpeg", 95, *size), out, workers=workers)
    wall = time.perf_counter() - t0
    ticks = sum(len(_clip_windows(p)) for p in paths)
    return dict(
        counts,
        workers=workers,
        ticks=ticks,
        wall_s=round(wall, 2),
        ticks_per_s=round(ticks / wall, 2),
        parent_cpu_s=round(time.process_time() - c0, 2),
        mb_per_1k_ticks=round(counts["bytes"] / ticks * 1000 / 1e6, 1),
    )


class _GenerateLoop(threading.Thread):
    """Greedy extraction of one batch, over and over, recording (start, end, ticks) of each call."""

    def __init__(self, ex: Any, examples: list, device: str) -> None:
        super().__init__(daemon=True)
        self.ex, self.examples, self.device = ex, examples, device
        self.calls: list[tuple[float, float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        from vlalert.cache.extract import run_examples

        while not self._stop_event.is_set():
            t = time.perf_counter()
            run_examples(self.ex, self.examples, len(self.examples), teacher_forced=False)
            _sync(self.device)
            self.calls.append((t, time.perf_counter(), len(self.examples)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def wait_calls(self, n: int) -> None:
        goal = len(self.calls) + n
        while len(self.calls) < goal:
            time.sleep(0.05)

    def calls_between(self, t0: float, t1: float) -> int:
        return sum(1 for a, b, _ in list(self.calls) if a >= t0 and b <= t1)

    def rate(self, t0: float, t1: float) -> float | None:
        inside = [(a, b, n) for a, b, n in list(self.calls) if a >= t0 and b <= t1]
        seconds = sum(b - a for a, b, _ in inside)
        return round(sum(n for *_, n in inside) / seconds, 3) if seconds > 0 else None


def sec_decode(ctx: Ctx, device: str, paths: list[Path]) -> dict[str, Any]:
    from vlalert.cache.extract import Extractor

    out: dict[str, Any] = {
        "clip": f"{CLIP_W}x{CLIP_H} {CLIP_FPS} fps H.264",
        "alone": _decode_threads(paths, 1),
    }
    out["alone"]["cpu_ms_per_frame"] = round(out["alone"]["process_cpu_s"] / out["alone"]["frames"] * 1e3, 2)
    if ctx.model is None:
        return out
    import cache_throughput as ct

    depth = ctx.model.config.text_config.num_hidden_layers
    layers, policy = ct.LAYERS.get(depth, ((depth,), depth))
    ex = Extractor(ctx.model, ctx.tok, layers, policy, ctx.vlm_max_new, "cached")
    size = tuple(ctx.vlm.image_size)
    store = Path(tempfile.mkdtemp(prefix="vlalert-frames-")) / "frames.arrow"
    out["frames_stage_4_workers"] = _build_store(paths, size, store, 4)  # decode once (GPU idle)
    jobs = {
        "gpu_busy_1_threads": lambda: _decode_threads(paths, 1),
        "gpu_busy_4_threads": lambda: _decode_threads(paths, 4),
        # the cache stage's own frame work (decode + resize of tick windows), threads vs processes
        "gpu_busy_windows_4_threads": lambda: _deliver(paths, 4, "threads", size),
        "gpu_busy_windows_4_processes": lambda: _deliver(paths, 4, "processes", size),
        # the pipeline's frame work since the frames stage: windows read from the store
        "gpu_busy_store_4_processes": lambda: _deliver(paths, 4, "processes", size, store),
        # the frames stage itself (decode once) while the GPU generates
        "gpu_busy_frames_stage_4_workers": lambda: _build_store(
            paths, size, store.with_name("again.arrow"), 4
        ),
    }
    # One long-lived generating thread, warmed up before any timing (a thread's first CUDA calls
    # create its own cuBLAS handle and workspace: timing a fresh thread's first call measures that).
    loop = _GenerateLoop(ex, ctx.examples, device)
    loop.start()
    loop.wait_calls(1)  # warm-up call
    t0 = time.perf_counter()
    loop.wait_calls(2)
    out["generate_ticks_per_s_same_thread_alone"] = loop.rate(t0, time.perf_counter())
    for name, job in jobs.items():
        t0 = time.perf_counter()
        runs = []
        while loop.calls_between(t0, time.perf_counter()) < 2 and time.perf_counter() - t0 < 60:
            runs.append(job())  # the frame work, repeated until two generate calls lie inside it
        r = dict(runs[0], repeats=len(runs))
        r["generate_ticks_per_s_meanwhile"] = loop.rate(t0, time.perf_counter())
        out[name] = r
        print(f"  {name}: {r}", flush=True)
    loop.stop()
    shutil.rmtree(store.parent, ignore_errors=True)
    out["generate_ticks_per_s_alone"] = ctx.ticks_per_s_b8
    return out


def save_model_dir(ctx: Ctx, folder: Path) -> dict[str, Any]:
    """The extraction model as a model directory, for the cache stage to load as a run would."""
    from vlalert.vlm.tiny import processor_configs

    t = time.perf_counter()
    ctx.model.save_pretrained(folder)
    ctx.tok.save_pretrained(folder)
    for name, content in processor_configs(ctx.vlm).items():
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {"save_s": round(time.perf_counter() - t, 1), "size_gb": round(size / 2**30, 2)}


def sec_badas(device: str, toy: bool, paths: list[Path]) -> dict[str, Any]:
    import torch

    from vlalert.badas.config import BadasConfig
    from vlalert.badas.model import BadasModel, BadasModelConfig, count_parameters, tiny_config
    from vlalert.badas.provider import BadasScorer
    from vlalert.video import VideoFrames

    config = tiny_config() if toy else BadasModelConfig()
    dtype = torch.float32 if toy else torch.bfloat16
    torch.manual_seed(0)
    model = BadasModel(config).to(device, dtype).eval()
    crop = config.encoder.crop_size
    out: dict[str, Any] = {"parameters": count_parameters(model), "crop": crop, "frames": 16, "by_batch": {}}
    for b in (1, 8, 32):
        x = torch.randn(b, 16, 3, crop, crop, device=device, dtype=dtype)
        _reset_peak(device)
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            _sync(device)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        out["by_batch"][str(b)] = {
            "ms_per_batch": round(ms, 2),
            "ms_per_window": round(ms / b, 3),
            "peak_memory_gb": _peak_gb(device),
        }
    cfg = BadasConfig(device=device, dtype="float32" if toy else "bfloat16", progress=False)
    scorer = BadasScorer(cfg, model=model)
    with VideoFrames(paths[0]) as clip:
        n_frames = len(clip)
    ts = [float(t) for t in range(2, int((n_frames - 1) / CLIP_FPS) + 1)]
    row = {"video_id": "clip0", "path": str(paths[0]), "fps": float(CLIP_FPS), "n_frames": n_frames}
    scorer(row, ts[:2])  # warm-up
    _reset_peak(device)
    t = time.perf_counter()
    scores = scorer(row, ts)
    wall = time.perf_counter() - t
    out["clip"] = {
        "seconds": round(n_frames / CLIP_FPS, 1),
        "ticks": len(ts),
        "scored": sum(s is not None for s in scores),
        "batch_size": cfg.batch_size,
        "wall_s": round(wall, 2),
        "ms_per_tick": round(wall / len(ts) * 1e3, 1),
        "peak_memory_gb": _peak_gb(device),
    }
    return out


def sec_sft(device: str, toy: bool, tmp: Path) -> dict[str, Any]:
    import sft_step_full

    args = ["--batch", "4", "--gradient-checkpointing", "--steps", "2", "--out", str(tmp / "sft.json")]
    args += (
        ["--device", "cpu", "--tiny-width", "--size", "64", "--steps", "1"] if toy else ["--device", "cuda"]
    )
    return sft_step_full.main(args)


def _stage_rows(paths: list[Path], n_ticks: int) -> list[dict[str, Any]]:
    from vlalert.config import TicksConfig, WindowConfig
    from vlalert.ticks import tick_times, window_frames
    from vlalert.video import VideoFrames

    rows: list[dict[str, Any]] = []
    k = 0
    while len(rows) < n_ticks:  # clips reused under new ids until there are enough ticks
        path = paths[k % len(paths)]
        with VideoFrames(path) as clip:
            n = len(clip)
        for tick, t in enumerate(tick_times(n, CLIP_FPS, TicksConfig(), WindowConfig())):
            if len(rows) < n_ticks:
                rows.append(
                    {
                        "video_id": f"v{k:04d}",
                        "tick": tick,
                        "path": str(path),
                        "fps": float(CLIP_FPS),
                        "frame_idx": window_frames(float(t), CLIP_FPS, n, WindowConfig()),
                        "parent_id": None,
                        "excluded": False,
                        "analysis": None,
                        "belief": None,
                        "action": "SILENT",
                    }
                )
        k += 1
    return rows


def sec_cache_stage(
    device: str, toy: bool, paths: list[Path], model_dir: Path, tmp: Path, ticks: int
) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlalert.cache.stage import run_shard
    from vlalert.config import validate_config
    from vlalert.stage_config import CacheSlice

    rows = _stage_rows(paths, ticks)
    schema = pa.schema(
        [
            ("video_id", pa.string()),
            ("tick", pa.int32()),
            ("path", pa.string()),
            ("fps", pa.float64()),
            ("frame_idx", pa.list_(pa.int32())),
            ("parent_id", pa.string()),
            ("excluded", pa.bool_()),
            ("analysis", pa.string()),
            ("belief", pa.string()),
            ("action", pa.string()),
        ]
    )
    bench = tmp / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema), bench)
    _, _, max_new, _ = pipeline_settings(toy)
    model_cfg: dict[str, Any] = {"max_new_tokens": max_new}
    cache_cfg: dict[str, Any] = {"progress": False, "chunk_ticks": 64}  # steady state: chunks overlap
    if toy:
        model_cfg |= {"dtype": "float32"}
        cache_cfg |= {
            "belief_layers": [1, 2, 3, 4],
            "policy_layer": 3,
            "batch_size": 2,
            "patch_embed": "inplace",
        }
    else:
        model_cfg |= {"image_height": 448, "image_width": 448}
    cfg = validate_config(
        {
            "sources": {
                "nexar": {"kind": "nexar", "root": "r", "gate_provider": "scores_file", "gate_scores": "s"}
            },
            "demo": {"enabled": False},
            "labels": {"gated_sources": []},
            "model": model_cfg,
            "cache": cache_cfg,
        }
    )
    # the frames stage first (each clip decoded once), then the shard reads its windows from it
    from vlalert.frames.store import StoreSpec, clip_frames, write_store

    store = tmp / "frames" / "nexar.arrow"
    videos = pa.Table.from_pylist([{"video_id": r["video_id"], "path": r["path"]} for r in rows])
    t0, c0 = time.perf_counter(), time.process_time()
    counts = write_store(
        clip_frames(pa.Table.from_pylist(rows, schema), videos),
        StoreSpec("jpeg", 95, cfg.model.image_height, cfg.model.image_width),
        store,
        workers=cfg.cache.workers,
    )
    frames_stage = dict(counts, wall_s=round(time.perf_counter() - t0, 2))
    frames_stage["parent_cpu_s"] = round(time.process_time() - c0, 2)
    _reset_peak(device)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_shard(
        bench,
        tmp / "cache" / "part-00000.parquet",
        tmp / "cache" / "part-00000.summary.json",
        cfg=CacheSlice.of(cfg),
        split="test",
        shard=0,
        model_path=str(model_dir),
        adapter_dir=None,
        frames=[str(store)],
    )
    wall = time.perf_counter() - t0
    chunks = summary.get("chunks") or []
    chunk_tps = [c.get("ticks_per_s") for c in chunks if isinstance(c, dict)]
    return {
        "ticks": len(rows),
        "clips": len({r["video_id"] for r in rows}),
        "batch_size": cfg.cache.batch_size,
        "workers": cfg.cache.workers,
        "patch_embed": cfg.cache.patch_embed,
        "max_new_tokens": max_new,
        "wall_s_with_load": round(wall, 1),
        "process_cpu_s": round(time.process_time() - c0, 1),
        "ticks_per_s_with_load": round(len(rows) / wall, 3),
        "chunk_ticks_per_s": chunk_tps,
        "peak_memory_gb": _peak_gb(device),
        "frames_stage": frames_stage,
        "summary_keys": sorted(summary),
        "facts": {
            k: summary.get(k)
            for k in ("patch_embed", "device", "dtype", "ticks_per_s", "compute_s", "wall_s")
        },
    }


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-clips", type=Path, help="write the 720p clips into this folder and exit")
    ap.add_argument("--clips-n", type=int, default=4)
    ap.add_argument("--clips-seconds", type=float, default=20.0)
    ap.add_argument("--clips", type=Path, default=Path(".gpu/clips"), help="folder of clip*.mp4")
    ap.add_argument("--toy", action="store_true", help="toy widths on CPU: proves the code path")
    ap.add_argument("--batches", default="8,32,64", help="extraction batch sizes besides the pipeline's")
    ap.add_argument("--stage-ticks", type=int, default=256, help="most ticks for the cache stage")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (MFU) of extract")
    ap.add_argument(
        "--kv-caches", default="dynamic,static", help="key/value caches timed at the pipeline's batch"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu_suite.json")
    args = ap.parse_args()
    if args.make_clips:
        for p in make_clips(args.make_clips, args.clips_n, args.clips_seconds):
            print(p, p.stat().st_size)
        return

    import torch

    device = "cpu" if args.toy else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --toy for the CPU smoke run")
    import transformers

    paths = clip_paths(args.clips)
    meta = {
        "what": "toy-width CPU smoke run" if args.toy else "full-width GPU run",
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu, {os.cpu_count()} cores",
        "host": describe_host(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    suite = Suite(args.out, args.budget_s, meta)
    only = {s for s in args.only.split(",") if s}

    def want(name: str) -> bool:
        return not only or name in only

    batches = [int(b) for b in args.batches.split(",") if b]
    if args.toy:
        batches = [min(b, 4) for b in batches]
    ctx = Ctx()
    peak = suite.run("peak", sec_peak, 10, device, args.toy) if want("peak") else None
    tflops = peak.get("tflops") if isinstance(peak, dict) else None
    bandwidth = peak.get("bandwidth_tbs") if isinstance(peak, dict) else None
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as td:
        tmp = Path(td)
        if want("extract") or want("decode") or want("cache_stage"):
            kv_caches = tuple(k for k in args.kv_caches.split(",") if k)
            suite.run(
                "extract",
                sec_extract,
                60,
                ctx,
                device,
                args.toy,
                batches,
                tflops,
                not args.no_flops,
                kv_caches,
                bandwidth,
            )
            ctx.vlm_max_new = pipeline_settings(args.toy)[2]
        if want("decode"):
            suite.run("decode", sec_decode, 40, ctx, device, paths)
        model_dir = tmp / "model"
        if want("cache_stage") and ctx.model is not None:
            model_dir.mkdir()
            suite.report["model_dir"] = save_model_dir(ctx, model_dir)
        ctx.model = None
        ctx.examples = None
        if device == "cuda":
            torch.cuda.empty_cache()
        if want("badas"):
            suite.run("badas", sec_badas, 40, device, args.toy, paths)
        if want("sft"):
            suite.run("sft", sec_sft, 60, device, args.toy, tmp)
        if want("cache_stage") and model_dir.exists():
            # as many ticks as fit: model load + warm-up ~40 s, then the measured batch-8 rate
            rate = ctx.ticks_per_s_b8 or 1.0
            fit = int(max(suite.left() - 60, 0) * rate * 0.8)
            ticks = max(min(args.stage_ticks, fit), 0)
            if ticks < min(8, args.stage_ticks):
                suite.report["sections"]["cache_stage"] = {"skipped": f"{suite.left():.0f} s left"}
            else:
                suite.run("cache_stage", sec_cache_stage, 30, device, args.toy, paths, model_dir, tmp, ticks)
        shutil.rmtree(tmp, ignore_errors=True)
    suite.write()
    print(f"written {args.out} ({suite.report['elapsed_s']} s)")


if __name__ == "__main__":
    main()
