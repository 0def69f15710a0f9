"""Every frame a clip will ever give is verified at ingest, and readers name the frame they cannot read.

Each bad input below was accepted by the old probe (which decoded only the first and the last frame)
and failed later (SFT, cache, predict) or silently shifted times.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vlalert.ingest import ingest_annotations
from vlalert.sources.base import Annotation
from vlalert.video import FrameReadError, VideoError, VideoFrames, VideoInfo, probe_video, read_frames

W, H = 64, 48  # decord 0.6 cannot copy frames 48 wide (see test_video.py); 64 it can


def write_jpegs(folder: Path, n: int, first: int = 1, digits: int = 4, w: int = W, h: int = H) -> Path:
    """A DADA-style frame folder: `0001.jpg` ... of smooth noise (so that a JPEG has real entropy data)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 255, (h, w, 3), np.uint8)
        Image.fromarray(pixels).save(folder / f"{first + i:0{digits}d}.jpg", quality=90)
    return folder


def write_mp4(path: Path, n: int = 60, fps: int = 10, times: list[float] | None = None) -> Path:
    """An H.264 mp4 of noise frames; `times` (seconds) writes those timestamps instead (variable rate)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = 10  # a keyframe every 10 frames: damage stays local
        if times is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i in range(n if times is None else len(times)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (H, W, 3), np.uint8), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def damage_packet(video: Path, out: Path, index: int = 30) -> Path:
    """A copy of `video` with packet `index` (file order) overwritten by zeros: decord and PyAV fail
    there, while the first and the last frame (other GOPs) still decode."""
    with av.open(str(video)) as container:
        packets = sorted((p.pos, p.size) for p in container.demux(video=0) if p.size)
    data = bytearray(video.read_bytes())
    pos, size = packets[index]
    data[pos : pos + size] = bytes(size)
    out.write_bytes(bytes(data))
    return out


def annotation(path: Path, fps: float = 30.0, n_frames: int | None = None) -> Annotation:
    return Annotation(
        video_id="10_068",
        source="dada",
        path=str(path),
        fps=fps,
        official_split=None,
        is_positive=False,
        t_risky_s=None,
        t_event_s=None,
        ego_involved=None,
        event_type=None,
        annotation_file="sheet.csv",
        n_frames=n_frames,
    )


def rejected_reason(path: Path, n_frames: int | None = None) -> str:
    clips, rejections = ingest_annotations([annotation(path, n_frames=n_frames)], progress=False)
    assert clips == [], "the clip was accepted"
    [r] = rejections
    assert r.video_id == "10_068" and r.path == str(path)
    return r.reason


# ------------------------------------------------------------------ frame folders (DoTA, DADA-2000)


def break_jpeg(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "zero-byte":
        file.write_bytes(b"")
    elif how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "corrupt":  # header intact, entropy-coded data overwritten with marker bytes
        file.write_bytes(data[:400] + b"\xff" * (len(data) - 402) + data[-2:])


@pytest.mark.parametrize(
    ("how", "what"),
    [
        ("zero-byte", "cannot identify image file"),
        ("truncated", "image file is truncated"),
        ("corrupt", "unreadable frame image"),
    ],
)
def test_broken_jpeg_in_the_middle_of_a_frame_folder_is_rejected_naming_the_frame(tmp_path, how, what):
    folder = write_jpegs(tmp_path / "10" / "068" / "images", 20)
    break_jpeg(folder / "0011.jpg", how)
    reason = rejected_reason(folder, n_frames=20)
    assert reason.startswith(
        f"{folder}: clip 10_068: field path: frame 10 (0011.jpg): unreadable frame image"
    )
    assert what in reason
    # The reader every later stage uses names the frame too, whichever window touches it.
    with VideoFrames(folder) as clip, pytest.raises(FrameReadError, match=r"frame 10 \(0011\.jpg\)") as err:
        clip.read([9, 10])
    assert (err.value.frame, err.value.path) == (10, str(folder))


def test_frame_of_another_size_in_the_middle_is_rejected(tmp_path):
    folder = write_jpegs(tmp_path / "images", 20)
    Image.new("RGB", (W + 16, H)).save(folder / "0008.jpg")
    reason = rejected_reason(folder)
    assert f"frame 7 (0008.jpg): is {W + 16}x{H}, the clip's frames are {W}x{H}" in reason
    # Read alone (a window inside the odd-sized stretch) it is still refused, not silently returned.
    with pytest.raises(FrameReadError, match=rf"frame 7 \(0008\.jpg\): is {W + 16}x{H}"):
        read_frames(folder, [7])


def test_gap_in_frame_numbers_with_a_matching_count_is_rejected(tmp_path):
    folder = write_jpegs(tmp_path / "images", 10, first=1)
    write_jpegs(tmp_path / "more", 10, first=12)  # 0012.jpg ... 0021.jpg: frame 11 is missing
    for file in (tmp_path / "more").iterdir():
        file.rename(folder / file.name)
    reason = rejected_reason(folder, n_frames=20)  # the count agrees with the annotation
    assert "frame 10 (0012.jpg): frame numbers jump from 10 (0010.jpg) to 12: 1 frame(s) missing" in reason
    assert "every later frame would be placed 1 frame(s) too early" in reason


def test_duplicate_frame_numbers_are_rejected(tmp_path):
    folder = write_jpegs(tmp_path / "images", 10, first=1)
    (folder / "000005.jpg").write_bytes((folder / "0005.jpg").read_bytes())
    reason = rejected_reason(folder)
    assert "frame number 5 is given twice, by " in reason
    assert "0005.jpg" in reason and "000005.jpg" in reason


def test_a_clean_frame_folder_is_accepted(tmp_path):
    folder = write_jpegs(tmp_path / "images", 12, first=0, digits=6)
    assert probe_video(folder, fps_hint=10.0) == VideoInfo(n_frames=12, fps=10.0, width=W, height=H)


# ------------------------------------------------------------------ mp4


def test_mp4_with_damaged_data_mid_file_is_rejected_naming_the_frame(tmp_path):
    good = write_mp4(tmp_path / "good.mp4", n=60)
    bad = damage_packet(good, tmp_path / "bad.mp4", index=30)
    with pytest.raises(FrameReadError, match=r"bad\.mp4: frame \d+ of 60 cannot be decoded") as err:
        probe_video(bad)
    assert 20 <= err.value.frame <= 31  # the damaged packet, give or take the decoder's delay
    with VideoFrames(bad) as clip:  # the trap: the first and last frames read fine
        assert clip.read([0, 59]).shape == (2, H, W, 3)
    # Downstream: a window over the damage is a FrameReadError naming the file and a frame.
    bad_frame = err.value.frame
    with VideoFrames(bad) as clip, pytest.raises(FrameReadError, match=r"bad\.mp4: cannot decode frame \d+"):
        clip.read([bad_frame, bad_frame + 1])


def test_variable_frame_rate_mp4_is_rejected_with_the_measured_deviation(tmp_path):
    # 30 frames at 10 fps, then 30 at 30 fps: the average rate misplaces frames by up to ~0.9 s.
    times = [i / 10 for i in range(30)] + [3 + i / 30 for i in range(30)]
    video = write_mp4(tmp_path / "vfr.mp4", times=times)
    with pytest.raises(FrameReadError) as err:
        probe_video(video)
    msg = str(err.value)
    assert "vfr.mp4: variable frame rate: frame 30 is at 3.000 s by the container's timestamps" in msg
    assert (
        "deviation 0.900 s, more than 0.5 frame (0.035 s)" in msg
        and "re-encode at a constant frame rate" in msg
    )


def test_constant_frame_rate_mp4_with_millisecond_timestamps_is_accepted(tmp_path):
    # Timestamps rounded to 1 ms jitter by < 1 ms: far inside half a frame.
    video = write_mp4(tmp_path / "cfr.mp4", fps=30, times=[i / 30 for i in range(60)])
    info = probe_video(video)
    assert info.n_frames == 60 and abs(info.fps - 30) < 0.01


# ------------------------------------------------------------------ downstream readers


def test_frame_read_error_is_a_video_error_that_survives_workers_and_names_the_clip():
    err = FrameReadError("x/0001.jpg: frame 3: unreadable", path="x", frame=3)
    assert isinstance(err, VideoError)
    # torch's DataLoader re-raises a worker's error as type(err)(message); pickling keeps the message.
    assert str(type(err)(str(err))) == str(err)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    named = err.for_clip("10_068", "tick 4")
    assert str(named) == "clip 10_068 (tick 4): x/0001.jpg: frame 3: unreadable"
    assert (named.clip, named.frame, named.path) == ("10_068", 3, "x")


def tick_row(folder: Path) -> dict:
    return {"video_id": "10_068", "tick": 2, "path": str(folder), "frame_idx": [8, 9, 10, 11], "fps": 30.0}


def test_sft_dataset_names_clip_tick_and_frame(tmp_path):
    from vlalert.vlm.data import TickDataset

    folder = write_jpegs(tmp_path / "images", 20)
    break_jpeg(folder / "0011.jpg", "truncated")
    ds = TickDataset([tick_row(folder)], tokenizer=None, cfg=None, with_target=False)
    with pytest.raises(FrameReadError, match=r"^clip 10_068 \(tick 2\): .*frame 10 \(0011\.jpg\)"):
        ds[0]


def test_cache_stage_names_clip_and_frame(tmp_path):
    from vlalert.cache.stage import prepare_examples

    folder = write_jpegs(tmp_path / "images", 20)
    break_jpeg(folder / "0011.jpg", "zero-byte")
    with (
        ThreadPoolExecutor(1) as pool,
        pytest.raises(FrameReadError, match=r"^clip 10_068: .*frame 10 \(0011\.jpg\)"),
    ):
        prepare_examples([tick_row(folder)], None, None, False, pool)


def test_predict_probe_names_the_frame(tmp_path):
    from vlalert.predict import PredictError, probe

    folder = write_jpegs(tmp_path / "images", 20)
    break_jpeg(folder / "0011.jpg", "truncated")
    with pytest.raises(PredictError, match=r"frame 10 \(0011\.jpg\): unreadable frame image"):
        probe(folder, fps=30.0)
