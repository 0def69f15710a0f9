"""Cost of verifying every frame at ingest (vlalert.video.probe_video / verify_frames).

Ingest decodes each clip exactly once, sequentially, to check that every frame decodes, has the
clip's size and sits where its index says (timestamps at a constant rate; frame numbers without gaps
or duplicates). This measures that pass on the sizes real sources ship:

* mp4    - a 1280x720, 30 fps H.264 clip (Nexar's format), rendered and encoded here with PyAV
           (a moving scene with texture, x264 preset medium, GOP 30), --seconds long;
* frames - the same frames as a folder of JPEGs (quality 90), as DoTA and DADA-2000 ship them.

Each is timed for `probe_video` (what ingest runs: open, header, verify) and for `verify_frames`
alone, best of --repeat runs, wall and CPU seconds (process CPU: all threads). Prints a table and
writes benchmarks/results/frame_verify.json.

    python benchmarks/frame_verify.py [--seconds 10] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from hostinfo import describe_host
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlalert.video import VideoFrames, probe_video, verify_frames  # noqa: E402

W, H, FPS = 1280, 720, 30


def scene(i: int) -> np.ndarray:
    """Frame i of a dashcam-like scene: a sky/road gradient, lane marks moving toward the camera,
    a box that grows (an approaching car), and fixed texture so the encoder has detail to code."""
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, W, dtype=np.float32)[None, :]
    img = np.empty((H, W, 3), np.float32)
    img[..., 0] = 90 + 80 * y
    img[..., 1] = 110 + 60 * y
    img[..., 2] = 160 - 60 * y + 0 * x
    phase = (i * 8) % 80
    rows = (np.arange(H) + phase) % 80 < 40
    lane = (np.abs(x - 0.5) < 0.01) & (y > 0.55) & rows[:, None]
    img[lane] = 235
    s = 40 + 3 * (i % 100)
    cy, cx = H // 2 + 60, W // 2 + int(200 * np.sin(i / 40))
    img[max(cy - s // 2, 0) : cy + s // 2, max(cx - s, 0) : cx + s] = (180, 30, 30)
    texture = np.random.default_rng(0).integers(-12, 12, (H, W, 1), dtype=np.int16)
    return np.clip(img + texture, 0, 255).astype(np.uint8)


def encode(path: Path, n: int, offset: int = 0) -> None:
    """n frames of the scene from frame `offset` on, as H.264 (x264 medium, GOP 1 s)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = FPS
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(scene(i + offset), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def jpegs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(scene(i)).save(folder / f"{i + 1:06d}.jpg", quality=90)


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best (wall s, CPU s) of `repeat` runs; CPU is the whole process (decoder threads included)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def verify_only(path: Path, fps: float) -> None:
    with VideoFrames(path) as clip:
        verify_frames(clip, fps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the clips here and keep them")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "frame_verify.json")
    args = parser.parse_args()
    n = round(args.seconds * FPS)
    work = args.keep or Path(tempfile.mkdtemp(prefix="frame_verify-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        video, folder = work / "clip.mp4", work / "frames"
        t0 = time.perf_counter()
        if not video.exists():
            encode(video, n)
        if not folder.exists():
            jpegs(folder, n)
        print(f"inputs: {n} frames {W}x{H} ({time.perf_counter() - t0:.1f} s to make) in {work}")
        rows = []
        for kind, path, fps in (("mp4 H.264", video, None), ("JPEG folder", folder, float(FPS))):
            info = probe_video(path, fps_hint=fps)
            assert info.n_frames == n and (info.width, info.height) == (W, H), info
            for what, fn in (
                ("probe_video (ingest)", lambda p=path, f=fps: probe_video(p, fps_hint=f)),
                ("verify_frames only", lambda p=path: verify_only(p, float(FPS))),
            ):
                wall, cpu = timed(fn, args.repeat)
                rows.append(
                    {
                        "input": kind,
                        "step": what,
                        "frames": n,
                        "size_mb": round(
                            (
                                path.stat().st_size
                                if path.is_file()
                                else sum(f.stat().st_size for f in path.iterdir())
                            )
                            / 1e6,
                            1,
                        ),
                        "wall_s": round(wall, 3),
                        "cpu_s": round(cpu, 3),
                        "frames_per_s_wall": round(n / wall, 1),
                        "frames_per_cpu_s": round(n / cpu, 1),
                        "cpu_s_per_clip_minute": round(cpu / (n / FPS) * 60, 2),
                    }
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    header = [
        "input",
        "step",
        "frames",
        "size_mb",
        "wall_s",
        "cpu_s",
        "frames_per_s_wall",
        "frames_per_cpu_s",
    ]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths, strict=True)))
    result = {
        "clip": {"width": W, "height": H, "fps": FPS, "frames": n, "codec": "h264 (libx264, GOP 30)"},
        "host": describe_host(),
        "pyav": av.__version__,
        "repeat": args.repeat,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
