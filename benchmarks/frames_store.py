"""Decode once: CPU per tick of reading a tick's window from the clip vs from the frames store.

DESIGN.md, "Performance targets": each clip is decoded once per run, sequentially; stages that need
tick windows read that pass's output, never seek per tick. This measures, on 1280x720 H.264 clips,
one thread, process CPU seconds:

* per tick, before - the old SFT path: the tick's 8 frames read from the clip through
  `VideoFrames.read` (a reader kept open per clip, ticks in random order as SFT draws them), resized
  to the model's 448 x 448 with the processor's resize;
* build          - the frames stage (`write_store`, one worker): every clip decoded once, forward,
  the frames its ticks need resized and encoded; per tick of the clips;
* per tick, after - the tick's window read from the store (`FrameStores.read`), random order;
* store size per 1 k ticks, for each codec (jpeg at quality 95, raw).

Clips: a synthetic 720p 30 fps dashcam-like clip (x264 preset medium, GOP 30; --seconds long,
rendered here as in frame_verify.py) and the real DAD clips in ../shared/data/real/dad when present
(1280x720, 20 fps, 5 s). Ticks at 1 Hz, 8 frames over 2 s (the pipeline's defaults).

    python benchmarks/frames_store.py [--seconds 20] [--ticks-max 200]

Prints a table and writes benchmarks/results/frames_store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: the decoders read it (vlalert.video)

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from frame_verify import FPS, H, W, scene  # noqa: E402
from hostinfo import describe_host

from vlalert.config import TicksConfig, WindowConfig  # noqa: E402
from vlalert.frames.store import ClipFrames, FrameStores, StoreSpec, write_store  # noqa: E402
from vlalert.ticks import tick_times, window_frames  # noqa: E402
from vlalert.video import VideoFrames  # noqa: E402
from vlalert.vlm.resize import resize_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DAD = REPO.parent / "shared" / "data" / "real" / "dad" / "videos"
RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (448, 448)


def write_clip(path: Path, seconds: float) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = 30
        for i in range(int(seconds * FPS)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(scene(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip_ticks(path: Path) -> tuple[list[list[int]], float, int]:
    with VideoFrames(path) as clip:
        n, fps = len(clip), clip.container_fps or FPS
    times = tick_times(n, fps, TicksConfig(), WindowConfig())
    return [window_frames(float(t), fps, n, WindowConfig()) for t in times], fps, n


def cpu() -> float:
    return time.process_time()


def per_tick_from_clip(ticks: list[tuple[str, list[int]]]) -> float:
    """CPU s of reading each tick from its clip (one open reader per clip) and resizing it."""
    readers: dict[str, VideoFrames] = {}
    c0 = cpu()
    for path, idx in ticks:
        reader = readers.get(path) or readers.setdefault(path, VideoFrames(path))
        resize_frames(reader.read(idx), SIZE)
    used = cpu() - c0
    for r in readers.values():
        r.close()
    return used


def per_tick_from_store(stores: FrameStores, ticks: list[tuple[str, list[int]]]) -> float:
    c0 = cpu()
    for path, idx in ticks:
        stores.read(path, idx)
    return cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic 720p clip")
    ap.add_argument("--ticks-max", type=int, default=200, help="ticks timed per case (random order)")
    ap.add_argument("--out", type=Path, default=RESULTS / "frames_store.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"synthetic 720p30 GOP 30": [write_clip(Path(tmp) / "synthetic.mp4", args.seconds)]}
        if REAL_DAD.is_dir():
            cases["real DAD 720p20"] = sorted(REAL_DAD.rglob("*.mp4"))
        for name, paths in cases.items():
            clips, ticks = [], []
            for path in paths:
                windows, fps, n = clip_ticks(path)
                clips.append(ClipFrames(path.stem, str(path), tuple(sorted({i for w in windows for i in w}))))
                ticks += [(str(path), w) for w in windows]
            order = [ticks[i] for i in rng.permutation(len(ticks))]
            timed = (order * (1 + args.ticks_max // max(len(order), 1)))[: args.ticks_max]
            before = per_tick_from_clip(timed)
            for codec in ("jpeg", "raw"):
                spec = StoreSpec(codec, 95, *SIZE)
                store = Path(tmp) / f"{codec}-{len(rows)}.arrow"
                c0 = cpu()
                counts = write_store(clips, spec, store, workers=1)
                build = cpu() - c0
                after = per_tick_from_store(FrameStores([store]), timed)
                rows.append(
                    {
                        "clips": name,
                        "n_clips": len(clips),
                        "ticks": len(ticks),
                        "codec": codec,
                        "frames_stored": counts["frames"],
                        "frames_per_tick": round(counts["frames"] / len(ticks), 2),
                        "before_cpu_ms_per_tick": round(1000 * before / len(timed), 1),
                        "build_cpu_ms_per_tick": round(1000 * build / len(ticks), 1),
                        "after_cpu_ms_per_tick": round(1000 * after / len(timed), 2),
                        "read_speedup": round(before / max(after, 1e-9), 1),
                        "store_mb_per_1k_ticks": round(counts["bytes"] / len(ticks) * 1000 / 1e6, 1),
                    }
                )
    head = ("clips", "codec", "ticks", "before ms", "build ms", "after ms", "read x", "MB/1k ticks")
    print(
        f"{head[0]:<26}{head[1]:>6}{head[2]:>7}{head[3]:>11}{head[4]:>10}{head[5]:>10}{head[6]:>8}{head[7]:>13}"
    )
    for r in rows:
        print(
            f"{r['clips']:<26}{r['codec']:>6}{r['ticks']:>7}{r['before_cpu_ms_per_tick']:>11}"
            f"{r['build_cpu_ms_per_tick']:>10}{r['after_cpu_ms_per_tick']:>10}{r['read_speedup']:>8}"
            f"{r['store_mb_per_1k_ticks']:>13}"
        )
    out = {
        "benchmark": "frames_store",
        "what": "CPU ms per tick (one thread): a tick's 8 frames read from the clip and resized (before), "
        "the frames stage's one pass (build, per tick), the window read from the store (after)",
        "model_size": list(SIZE),
        "host": describe_host(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
