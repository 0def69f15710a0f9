"""The frames store (vlalert.frames.store): which frames a clip's ticks need, written once, read back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from vlalert.frames import store as frames_store
from vlalert.frames.store import (
    ClipFrames,
    FrameStore,
    FrameStores,
    StoreSpec,
    clip_frames,
    write_store,
)
from vlalert.video import FrameReadError, VideoFrames
from vlalert.vlm.resize import resize_frames

REAL_DAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "dad" / "videos"
SPEC_RAW = StoreSpec("raw", 95, 32, 64)
SPEC_JPEG = StoreSpec("jpeg", 95, 32, 64)


def write_mp4(path: Path, n: int = 40, w: int = 96, h: int = 64, seed: int = 0) -> Path:
    """An H.264 clip of smooth noise (real entropy for the encoder; a keyframe every 10 frames)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = 10
        for i in range(n):
            img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def expected(path: Path, indices: list[int], spec: StoreSpec) -> np.ndarray:
    """What reading the clip and resizing it gives (the path the store replaces)."""
    with VideoFrames(path) as clip:
        frames = clip.read(indices)
    return resize_frames(frames, (spec.height, spec.width)).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[ClipFrames]:
    root = tmp_path_factory.mktemp("clips")
    out = []
    for k in range(5):
        path = write_mp4(root / f"clip{k}.mp4", seed=k)
        out.append(ClipFrames(f"v{k}", str(path), tuple(range(k, 40, 3))))
    return out


# ------------------------------------------------------------------------------------ what


def test_a_clips_frames_are_the_union_of_its_ticks_windows_and_a_prefix_reads_its_parents_file():
    videos = pa.table({"video_id": ["b", "a"], "path": ["/d/b.mp4", "/d/a.mp4"]})
    labels = pa.table(
        {
            "video_id": ["a", "a", "a#prefix", "b"],
            "frame_idx": [[0, 2, 4], [4, 6, 8], [1, 2], [9, 3]],
            "parent_id": [None, None, "a", None],
        }
    )
    got = clip_frames(labels, videos)
    assert got == [
        ClipFrames("a", "/d/a.mp4", (0, 1, 2, 4, 6, 8)),
        ClipFrames("b", "/d/b.mp4", (3, 9)),
    ]
    with pytest.raises(ValueError, match=r"videos.parquet lacks: \['c'\]"):
        clip_frames(pa.table({"video_id": ["c"], "frame_idx": [[0]], "parent_id": [None]}), videos)


# ------------------------------------------------------------------------------- write, read


def test_a_raw_store_gives_exactly_the_resized_decoded_frames(clips, tmp_path):
    counts = write_store(clips, SPEC_RAW, tmp_path / "s.arrow", chunk_clips=2)
    assert counts == {
        "clips": 5,
        "frames": sum(len(c.frames) for c in clips),
        "bytes": (tmp_path / "s.arrow").stat().st_size,
        "chunks": 3,
        "resumed_chunks": 0,
    }
    store = FrameStore(tmp_path / "s.arrow")
    assert store.spec == SPEC_RAW and sorted(store.paths()) == sorted(c.path for c in clips)
    idx = [9, 3, 3, 36]  # any order, repeats allowed, like a window list
    got = store.read(clips[0].path, idx)
    assert got.dtype == np.uint8 and got.shape == (4, 32, 64, 3)
    assert np.array_equal(got, expected(Path(clips[0].path), idx, SPEC_RAW))
    assert not (tmp_path / "s.arrow.chunks").exists()


def test_a_jpeg_store_is_close_to_the_decoded_frames_and_smaller(clips, tmp_path):
    write_store(clips, SPEC_JPEG, tmp_path / "j.arrow")
    write_store(clips, SPEC_RAW, tmp_path / "r.arrow")
    got = FrameStore(tmp_path / "j.arrow").read(clips[1].path, [1, 4, 7])
    ref = expected(Path(clips[1].path), [1, 4, 7], SPEC_JPEG)
    assert np.abs(got.astype(int) - ref).mean() < 4.0  # quality 95
    assert (tmp_path / "j.arrow").stat().st_size < (tmp_path / "r.arrow").stat().st_size


def test_the_store_bytes_depend_on_neither_workers_nor_chunking(clips, tmp_path):
    write_store(clips, SPEC_JPEG, tmp_path / "one.arrow", workers=1, chunk_clips=64)
    write_store(clips, SPEC_JPEG, tmp_path / "two.arrow", workers=2, chunk_clips=2)
    assert (tmp_path / "one.arrow").read_bytes() == (tmp_path / "two.arrow").read_bytes()


def test_a_killed_write_resumes_from_its_sealed_chunks(clips, tmp_path, monkeypatch):
    out = tmp_path / "s.arrow"
    real = frames_store._encode_job
    seen: list[str] = []

    def dies_at_the_fourth_clip(args):
        seen.append(args[0].video_id)
        if args[0].video_id == "v3":
            raise KeyboardInterrupt  # the job is killed while it decodes clip 4
        return real(args)

    monkeypatch.setattr(frames_store, "_encode_job", dies_at_the_fourth_clip)
    with pytest.raises(KeyboardInterrupt):
        write_store(clips, SPEC_RAW, out, chunk_clips=2)
    assert not out.exists() and len(list((tmp_path / "s.arrow.chunks").glob("*.arrow"))) == 1
    seen.clear()
    monkeypatch.setattr(
        frames_store, "_encode_job", lambda args: (seen.append(args[0].video_id), real(args))[1]
    )
    counts = write_store(clips, SPEC_RAW, out, chunk_clips=2)
    assert counts["resumed_chunks"] == 1 and seen == ["v2", "v3", "v4"]  # chunk 0 (v0, v1) was kept
    write_store(clips, SPEC_RAW, tmp_path / "fresh.arrow", chunk_clips=2)
    assert out.read_bytes() == (tmp_path / "fresh.arrow").read_bytes()


def test_a_chunk_of_another_spec_is_not_taken_for_this_one(clips, tmp_path, monkeypatch):
    out = tmp_path / "s.arrow"
    write_store(clips[:2], SPEC_JPEG, out, chunk_clips=2)
    folder = tmp_path / "s.arrow.chunks"
    folder.mkdir()
    (folder / "chunk-00000.arrow").write_bytes(b"junk")  # a torn chunk from an earlier kill
    counts = write_store(clips[:2], SPEC_RAW, out, chunk_clips=2)
    assert counts["resumed_chunks"] == 0
    assert FrameStore(out).spec == SPEC_RAW


def test_reading_what_the_store_lacks_names_the_store_the_clip_and_the_frame(clips, tmp_path):
    write_store(clips[:1], SPEC_RAW, tmp_path / "s.arrow")
    stores = FrameStores([tmp_path / "s.arrow"])
    with pytest.raises(FrameReadError, match=r"holds no frame 1 of .*clip0\.mp4 \(clip v0\)"):
        stores.read(clips[0].path, [0, 1], clip="v0")
    with pytest.raises(FrameReadError, match=r"no frames store of .*s\.arrow holds .*clip1\.mp4 \(clip v1\)"):
        stores.read(clips[1].path, [1], clip="v1")
    with pytest.raises(ValueError, match="cannot open the frames store"):
        FrameStore(clips[0].path)


def test_stores_travel_to_workers_by_name(clips, tmp_path):
    import pickle

    write_store(clips[:2], SPEC_RAW, tmp_path / "s.arrow")
    stores = FrameStores([tmp_path / "s.arrow"])
    first = stores.read(clips[1].path, [4])
    again = pickle.loads(pickle.dumps(stores))
    assert again.files == stores.files and np.array_equal(again.read(clips[1].path, [4]), first)


def test_a_frame_that_broke_after_ingest_fails_the_job_naming_clip_and_frame(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((24, 40, 3), 40 * i, np.uint8)).save(folder / f"{i + 1:04d}.jpg")
    (folder / "0004.jpg").write_bytes(b"")
    with pytest.raises(FrameReadError, match=r"^clip 10_068: .*frame 3 \(0004\.jpg\)"):
        write_store([ClipFrames("10_068", str(folder), (0, 3, 5))], SPEC_RAW, tmp_path / "s.arrow")


@pytest.mark.skipif(not REAL_DAD.is_dir(), reason="the real DAD clips are in ../shared only")
def test_a_real_dashcam_clip_stored_at_model_resolution(tmp_path):
    """Real 1280x720 H.264 (DAD): raw is exact, JPEG 95 is close, both through one forward decode."""
    path = sorted(REAL_DAD.rglob("*.mp4"))[0]
    clip = ClipFrames("dad", str(path), tuple(range(5, 100, 5)))
    spec_raw, spec_jpeg = StoreSpec("raw", 95, 224, 224), StoreSpec("jpeg", 95, 224, 224)
    write_store([clip], spec_raw, tmp_path / "r.arrow")
    write_store([clip], spec_jpeg, tmp_path / "j.arrow")
    idx = [20, 25, 95]
    ref = expected(path, idx, spec_raw)
    assert np.array_equal(FrameStore(tmp_path / "r.arrow").read(str(path), idx), ref)
    jpeg = FrameStore(tmp_path / "j.arrow").read(str(path), idx)
    assert np.abs(jpeg.astype(int) - ref).mean() < 3.0
