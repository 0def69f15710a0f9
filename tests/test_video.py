"""vlalert.video: probing and reading mp4 files and frame folders, and catching broken ones."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vlalert.frame_files import list_frame_files
from vlalert.video import (
    VideoError,
    VideoFrames,
    VideoInfo,
    in_blocks,
    probe_video,
    read_frames,
)

# Solid colours, far apart, with R != G != B so that a BGR/RGB swap or a wrong frame shows.
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40), (40, 220, 220), (128, 128, 128)]


def colour(i: int) -> tuple[int, int, int]:
    return COLOURS[i % len(COLOURS)]


def write_mp4(
    path: Path, n: int = 30, fps: int = 10, w: int = 64, h: int = 48, faststart: bool = False
) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = np.empty((h, w, 3), np.uint8)
            frame[:] = colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, n: int, w: int = 40, h: int = 24, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names or [f"{k:06d}.png" for k in range(n)]):
        Image.fromarray(np.full((h, w, 3), colour(i), np.uint8)).save(folder / name)
    return folder


def packet_ends(path: Path) -> list[int]:
    """Byte offset just past each video packet, in file order."""
    with av.open(str(path)) as container:
        return sorted(p.pos + p.size for p in container.demux(video=0) if p.size)


def test_probe_mp4_reads_count_fps_and_size(tmp_path):
    video = write_mp4(tmp_path / "a.mp4", n=30, fps=10, w=64, h=48)
    assert probe_video(video) == VideoInfo(n_frames=30, fps=10.0, width=64, height=48)
    # A hint never overrides the container's own fps.
    assert probe_video(video, fps_hint=25.0).fps == 10.0


def test_read_frames_mp4_returns_rgb_frames_at_the_indices(tmp_path):
    video = write_mp4(tmp_path / "a.mp4", n=12)
    frames = read_frames(video, [0, 2, 7, 2])
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    for got, i in zip(frames, [0, 2, 7, 2], strict=True):
        mean = got.reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - np.array(colour(i))).max() < 8, (i, mean)


def test_read_frames_out_of_range_is_a_video_error(tmp_path):
    video = write_mp4(tmp_path / "a.mp4", n=5)
    with pytest.raises(VideoError, match=r"outside \[0, 5\)"):
        read_frames(video, [4, 5])


def test_frame_folder_probe_uses_hint_and_reads_exact_pixels(tmp_path):
    folder = write_frames(tmp_path / "clip", n=5)
    assert probe_video(folder) == VideoInfo(n_frames=5, fps=None, width=40, height=24)
    assert probe_video(folder, fps_hint=10.0).fps == 10.0
    frames = read_frames(folder, [4, 1])
    assert frames.shape == (2, 24, 40, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 0, 0]) == colour(4) and tuple(frames[1, 5, 7]) == colour(1)


def test_frame_folder_order_is_numeric_not_lexicographic(tmp_path):
    folder = write_frames(tmp_path / "clip", n=3, names=["1.png", "2.png", "10.png"])
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in list_frame_files(folder)] == ["1.png", "2.png", "10.png"]
    # "10.png" was written third, so it is frame index 2 and holds colour(2).
    assert tuple(read_frames(folder, [2])[0, 0, 0]) == colour(2)


def test_jpeg_frame_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 32, 3), colour(i), np.uint8)).save(folder / f"{i + 1:04d}.jpg")
    assert probe_video(folder, fps_hint=30.0) == VideoInfo(n_frames=3, fps=30.0, width=32, height=16)
    with VideoFrames(folder) as clip:
        assert len(clip) == 3
        assert np.abs(clip.read([2])[0].astype(int) - colour(2)).max() < 8


def test_zero_length_file_is_rejected(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mp4: empty file \(0 bytes\)"):
        probe_video(empty)


def test_missing_file_and_empty_folder_are_rejected(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        probe_video(tmp_path / "nope.mp4")
    (tmp_path / "frames").mkdir()
    with pytest.raises(VideoError, match="holds no image files"):
        probe_video(tmp_path / "frames")


@pytest.mark.parametrize("faststart", [False, True])
def test_mp4_cut_in_half_is_rejected(tmp_path, faststart):
    video = write_mp4(tmp_path / "full.mp4", n=30, faststart=faststart)
    data = video.read_bytes()
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="half.mp4"):
        probe_video(cut)


def test_truncated_faststart_mp4_that_decord_opens_silently_is_caught(tmp_path):
    """A faststart mp4 cut after a packet boundary: decord opens it and just sees fewer frames."""
    import decord

    video = write_mp4(tmp_path / "full.mp4", n=30, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: packet_ends(video)[15]])
    reader = decord.VideoReader(str(cut))  # the trap: no error, and the "last" frame decodes
    assert len(reader) == 16
    reader[len(reader) - 1].asnumpy()
    with pytest.raises(
        VideoError, match=r"cut\.mp4: truncated: the container declares 30 frames but only 16"
    ):
        probe_video(cut)


def test_garbage_file_is_rejected(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoError, match="bad.mp4"):
        probe_video(bad)


def test_truncated_jpeg_frame_is_rejected(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8)).save(
            folder / f"{i:04d}.jpg"
        )
    last = folder / "0002.jpg"
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(VideoError, match=r"frame 2 \(0002\.jpg\): unreadable frame image"):
        probe_video(folder, fps_hint=30.0)


@pytest.mark.parametrize("width", [16, 48])
def test_widths_that_decord_cannot_copy_are_read_through_pyav(tmp_path, width):
    """decord 0.6 fails on some frame widths ("DECORDArrayCopyFromTo"); those videos are still valid."""
    video = write_mp4(tmp_path / "narrow.mp4", n=8, w=width, h=32)
    assert probe_video(video) == VideoInfo(n_frames=8, fps=10.0, width=width, height=32)
    frames = read_frames(video, [7, 3])
    assert frames.shape == (2, 32, width, 3)
    for got, i in zip(frames, [7, 3], strict=True):
        assert np.abs(got.reshape(-1, 3).mean(axis=0) - np.array(colour(i))).max() < 8


def test_in_blocks_groups_a_forward_read_in_order_without_losing_a_frame():
    pairs = [(i, np.full((2, 3, 3), i, np.uint8)) for i in (0, 3, 4, 7, 9)]
    blocks = list(in_blocks(iter(pairs), 2))
    assert [idx for idx, _ in blocks] == [[0, 3], [4, 7], [9]]
    assert [b.shape for _, b in blocks] == [(2, 2, 3, 3), (2, 2, 3, 3), (1, 2, 3, 3)]
    assert [int(f[0, 0, 0]) for _, b in blocks for f in b] == [0, 3, 4, 7, 9]
    assert list(in_blocks(iter([]), 2)) == []


POOL_SCRIPT = """
import os, sys, time
from vlalert.video import frame_worker_pool

pool = frame_worker_pool(2)
list(pool.map(abs, range(8)))  # both workers started
print(" ".join(str(p) for p in pool._processes), flush=True)
time.sleep(600)  # killed here, its pool never shut down
"""


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an exited orphan that init has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_frame_workers_exit_when_their_job_is_killed():
    import signal
    import subprocess
    import sys
    import time

    job = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in job.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), f"frame workers {workers} outlived their killed job"
