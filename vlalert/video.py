"""Open, check and read clips that are either video files (mp4, ...) or folders of frame images.

Some sources ship frames as image folders (DoTA, DADA-2000), others as mp4 (Nexar, DAD); every
later stage reads both through `read_frames`, so the difference ends here.

`probe_video` is the ingest gate: a clip it accepts can be read at every frame. Checking only that
a file opens is not enough: a cut-off mp4 whose index sits at the front ("faststart") opens without
error in decord and simply reports fewer frames than the container header declares, and damage in
the middle of a clip (a broken JPEG in a frame folder, a damaged packet mid-mp4, a frame of another
size, a gap or a duplicate in the frame numbers, a variable frame rate) is invisible from the first
and last frames. So the probe compares decord's readable frame count with the header's count (via
PyAV) and then verifies every frame in one sequential pass (`verify_frames`): each clip is decoded
exactly once, and a clip that fails is rejected with the frame named.

Readers after ingest (SFT, cache, predict, the BADAS gate) still meet files that changed or broke
after ingest; `VideoFrames.read` turns any frame it cannot read into a `FrameReadError` that names the
file and the frame (and the clip, once a caller adds it with `FrameReadError.for_clip`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from vlalert.frame_files import IMAGE_SUFFIXES, list_frame_files


class VideoError(Exception):
    """A clip that cannot be used; the message names the file and says what is wrong with it."""


class FrameReadError(VideoError):
    """One frame of a clip cannot be read (decoded, or of the clip's size); the message names the
    file, the frame index and, where the caller knows it, the clip id.

    The message is the only positional argument, so the error survives a DataLoader worker (which
    re-raises `type(err)(message)` in the main process) and pickling.
    """

    def __init__(
        self, message: str, *, path: str | None = None, frame: int | None = None, clip: str | None = None
    ) -> None:
        super().__init__(message)
        self.path, self.frame, self.clip = path, frame, clip

    def for_clip(self, clip: str, detail: str = "") -> FrameReadError:
        """The same error with the clip id (and e.g. the tick) in front of the message."""
        where = f"clip {clip}{f' ({detail})' if detail else ''}"
        return FrameReadError(f"{where}: {self}", path=self.path, frame=self.frame, clip=clip)


def decoder_threads() -> int:
    """Threads a video decoder may use: the job's allocation, or 0 (the library's choice: one per core).

    Snakemake sets OMP_NUM_THREADS to a job's `threads` (and the cache stage's frame workers to 1);
    decord and FFmpeg otherwise start a decoding thread per core of the node, whatever the job holds.
    """
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def frame_worker_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes that decode (and resize, encode) frames beside a job's main work:
    spawned, since the parent may hold CUDA and threads; one thread each, as `workers` is the job's
    CPU share for frames; each exits when the job that spawned it dies (`frame_worker_init`)."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=frame_worker_init,
        initargs=(os.getpid(),),
    )


def frame_worker_init(parent: int) -> None:
    """One thread, and an exit when `parent` dies.

    A job that is SIGKILLed (a cluster's out-of-memory kill, `kill -9`, a test of resumption) never
    shuts its pool down, and a spawned worker holds both ends of its own call queue, so it would
    wait on it for ever: two orphans of ~285 MB each were found alive 30 minutes after a killed
    cache job. A daemon thread watches the parent instead.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent:  # a dead parent's children are handed to init (or a subreaper)
        time.sleep(every_s)
    os._exit(1)


# A frame whose container timestamp is further than this (in frames) from index / fps is placed at
# the wrong time by every stage that turns frame indices into seconds: such a clip is rejected.
VFR_TOLERANCE_FRAMES = 0.5


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float | None  # None: a frame folder probed without an fps hint
    width: int
    height: int


def is_frame_folder(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir()


def frame_number(file: Path) -> int | None:
    """The frame number a frame file's name carries: its last run of digits ("clip_000012.jpg" -> 12)."""
    runs = re.findall(r"\d+", file.stem)
    return int(runs[-1]) if runs else None


def check_frame_numbers(folder: Path, files: Sequence[Path]) -> None:
    """Frame files (in `list_frame_files` order) must be numbered consecutively, each number once.

    A gap shifts every later frame earlier in time even when the count matches the annotation, and
    a number given twice ("0005.jpg" and "000005.jpg") leaves the order to chance.
    """
    seen: dict[int, Path] = {}
    for k, file in enumerate(files):
        number = frame_number(file)
        if number is None:
            raise FrameReadError(
                f"{folder}: frame {k} ({file.name}): the file name carries no frame number",
                path=str(folder),
                frame=k,
            )
        if number in seen:
            raise FrameReadError(
                f"{folder}: frame {k} ({file.name}): frame number {number} is given twice, by "
                f"{seen[number].name} and {file.name}; keep one",
                path=str(folder),
                frame=k,
            )
        seen[number] = file
        if k:
            prev = frame_number(files[k - 1])
            assert prev is not None
            if number != prev + 1:
                missing = number - prev - 1
                raise FrameReadError(
                    f"{folder}: frame {k} ({file.name}): frame numbers jump from {prev} "
                    f"({files[k - 1].name}) to {number}: {missing} frame(s) missing, so frame {k} and every "
                    f"later frame would be placed {missing} frame(s) too early",
                    path=str(folder),
                    frame=k,
                )


def _decord() -> Any:
    # Imported on first use: decord is heavy and the Snakefile must parse without it. Its own logger
    # and FFmpeg's are silenced because every failure is reported through VideoError instead.
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _valid_fps(fps: float | None) -> bool:
    return fps is not None and math.isfinite(fps) and fps > 0


def _header_frame_count(path: Path) -> int | None:
    """Frame count the container header declares (mp4: the sample table), or None if it declares none."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream in the file")
            frames = int(container.streams.video[0].frames or 0)
    except VideoError:
        raise
    except Exception as err:  # PyAV raises its own error family for damaged containers
        raise VideoError(f"{path}: unreadable video container: {_short(err)}") from None
    return frames or None


def _iter_with_pyav(path: Path, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) of the sorted, unique indices `wanted` (presentation order, as decord counts
    them), by one sequential decode: every frame up to the last wanted is decoded, only the wanted
    ones are converted to RGB."""
    import av

    todo = set(wanted)
    decoded = 0  # frames decoded so far: a failure is at frame `decoded`
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if decoder_threads():
                stream.thread_count = decoder_threads()
            for frame in container.decode(stream):
                if decoded in todo:
                    todo.discard(decoded)
                    yield decoded, frame.to_ndarray(format="rgb24")
                decoded += 1
                if not todo:
                    break
    except Exception as err:  # not GeneratorExit (a BaseException): a consumer that stops early
        raise FrameReadError(f"frame {decoded}: {_short(err)}", frame=decoded) from None
    if todo:
        missing = sorted(todo)
        raise FrameReadError(
            f"frames {missing[:5]} could not be decoded (the stream ends after {decoded} frames)",
            frame=missing[0],
        )


def in_blocks(frames: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[list[int], np.ndarray]]:
    """(indices, frames stacked as (n, h, w, 3)) of consecutive groups of at most `size` of a forward
    read's (index, frame) pairs (`VideoFrames.iter_forward`): what a reader that resizes or encodes
    in batches takes, without ever holding a long clip's frames at full size."""
    idx: list[int] = []
    block: list[np.ndarray] = []
    for i, frame in frames:
        idx.append(i)
        block.append(frame)
        if len(block) == size:
            yield idx, np.stack(block)
            idx, block = [], []
    if block:
        yield idx, np.stack(block)


def _read_with_pyav(path: Path, indices: list[int]) -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed) by one sequential decode."""
    frames = dict(_iter_with_pyav(path, sorted(set(indices))))
    return np.stack([frames[i] for i in indices]).astype(np.uint8, copy=False)


class VideoFrames:
    """One opened clip (video file or frame folder) from which frames are read by index.

    Hold one per clip when reading many windows from it: opening a video costs an index scan.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader: Any = None
        self._files: list[Path] | None = None
        self._size: tuple[int, int] | None = None  # frame folders: (width, height) of frame 0
        if not self.path.exists():
            raise VideoError(f"{self.path}: does not exist")
        if self.path.is_dir():
            self._files = list_frame_files(self.path)
            if not self._files:
                raise VideoError(
                    f"{self.path}: frame folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            return
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file (0 bytes)")
        decord = _decord()
        try:
            self._reader = decord.VideoReader(
                str(self.path), ctx=decord.cpu(0), num_threads=decoder_threads()
            )
        except Exception as err:  # decord raises RuntimeError or DECORDError
            raise VideoError(f"{self.path}: cannot open video: {_short(err)}") from None

    def __len__(self) -> int:
        if self._files is not None:
            return len(self._files)
        return len(self._reader)

    @property
    def container_fps(self) -> float | None:
        if self._reader is None:
            return None
        fps = float(self._reader.get_avg_fps())
        return fps if _valid_fps(fps) else None

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        n = len(self)
        out = [int(i) for i in indices]
        bad = [i for i in out if not 0 <= i < n]
        if bad:
            raise VideoError(f"{self.path}: frame indices {bad[:5]} outside [0, {n}) ({n} frames)")
        return out

    def _frame_error(self, i: int, what: str) -> FrameReadError:
        assert self._files is not None
        return FrameReadError(
            f"{self.path}: frame {i} ({self._files[i].name}): {what}", path=str(self.path), frame=i
        )

    def _folder_size(self) -> tuple[int, int]:
        """(width, height) of frame 0 from its header alone: the size every frame must have."""
        from PIL import Image

        assert self._files is not None
        if self._size is None:
            try:
                with Image.open(self._files[0]) as im:
                    self._size = im.size
            except Exception as err:
                raise self._frame_error(0, f"unreadable frame image: {_short(err)}") from None
        return self._size

    def _read_image(self, i: int, rgb: bool = True) -> np.ndarray | None:
        """Frame i of a folder as RGB uint8; rgb False only decodes it (the ingest check), returning None."""
        from PIL import Image

        assert self._files is not None
        size = self._folder_size()
        try:
            with Image.open(self._files[i]) as im:
                if im.size != size:
                    raise self._frame_error(i, f"is {_wxh(im.size)}, the clip's frames are {_wxh(size)}")
                if not rgb:
                    im.load()
                    return None
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except FrameReadError:
            raise
        except Exception as err:  # PIL raises OSError / UnidentifiedImageError / SyntaxError
            raise self._frame_error(i, f"unreadable frame image: {_short(err)}") from None

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as a (N, H, W, 3) uint8 RGB array (indices may repeat, any order).

        A frame that cannot be decoded, or (frame folders) is not of the clip's size, raises a
        `FrameReadError` naming the file and the frame.
        """
        idx = self._check_indices(indices)
        if self._files is not None:
            frames = [self._read_image(i) for i in idx]
            if not frames:
                h, w = self.frame_size()
                return np.zeros((0, h, w, 3), dtype=np.uint8)
            return np.stack(frames)
        if not idx:
            h, w = self.frame_size()
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        try:
            return np.ascontiguousarray(self._reader.get_batch(idx).asnumpy(), dtype=np.uint8)
        except Exception as err:
            decord_error = _short(err)
        # decord 0.6 fails to copy frames of some widths (16, 24, 48, 72, ...: "DECORDArrayCopyFromTo:
        # The size must exactly match") that decode fine; PyAV reads those. A really broken stream
        # fails both ways.
        try:
            return _read_with_pyav(self.path, idx)
        except FrameReadError as err:
            raise FrameReadError(
                f"{self.path}: cannot decode frame {err.frame} (asked for frames {idx[:5]}"
                f"{' ...' if len(idx) > 5 else ''}): decord: {decord_error}; PyAV: {err}",
                path=str(self.path),
                frame=err.frame,
            ) from None

    def iter_forward(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame) of the sorted, unique `indices`, one at a time, in one forward pass.

        Decode once: a video file is decoded sequentially by PyAV (as ingest verified it), every frame
        up to the last asked, and only the asked ones are converted; that is several times cheaper than
        decord's batch read of scattered frames (which seeks, and copies frame by frame) and gives the
        same pixels. Frame folders read each asked image. A frame that cannot be decoded raises a
        `FrameReadError` naming the file and the frame.
        """
        idx = sorted(set(self._check_indices(indices)))
        if self._files is not None:
            for i in idx:
                frame = self._read_image(i)
                assert frame is not None
                yield i, frame
            return
        try:
            yield from _iter_with_pyav(self.path, idx)
        except FrameReadError as err:
            raise FrameReadError(
                f"{self.path}: cannot decode frame {err.frame}: {err}", path=str(self.path), frame=err.frame
            ) from None

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames, from the first frame."""
        if self._files is not None:
            w, h = self._folder_size()
            return h, w
        return tuple(self.read([0]).shape[1:3])  # type: ignore[return-value]

    @property
    def files(self) -> list[Path] | None:
        """A frame folder's image files in frame order; None for a video file."""
        return self._files

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _verify_folder(clip: VideoFrames) -> tuple[int, int]:
    """Every image of a frame folder decodes fully and has frame 0's size; numbers are consecutive.

    Returns (height, width). Each image is decoded once (PIL `load`, no colour conversion).
    """
    files = clip.files
    assert files is not None
    check_frame_numbers(clip.path, files)
    size = clip._folder_size()
    for i in range(len(files)):
        clip._read_image(i, rgb=False)
    return size[1], size[0]


def _verify_video_file(path: Path, n: int, fps: float | None) -> tuple[int, int]:
    """Decode every frame of a video file once (PyAV, in presentation order) and check each one.

    `n` is the count decord (the reader of every later stage) sees: each of those frames must decode
    and have the first frame's size, and the container timestamps must increase and stay within
    VFR_TOLERANCE_FRAMES of index / fps (the time every stage gives frame `index`). Returns (height,
    width). No colour conversion: decoding is the check.
    """
    import av

    size: tuple[int, int] | None = None
    k = 0  # frames decoded so far: a failure is at frame k
    pts0: int | None = None
    prev_t: float | None = None
    worst = (0.0, 0, 0.0)  # (deviation s, frame, its timestamp s)
    timed = True
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            for frame in container.decode(stream):
                if k >= n:
                    break
                if size is None:
                    size = (frame.width, frame.height)
                elif (frame.width, frame.height) != size:
                    what = f"is {_wxh((frame.width, frame.height))}, the clip's frames are {_wxh(size)}"
                    raise FrameReadError(f"{path}: frame {k}: {what}", path=str(path), frame=k)
                if frame.pts is None or base is None:
                    timed = False  # no timestamps to check (raw streams): the index is the only clock
                elif timed:
                    pts0 = frame.pts if pts0 is None else pts0
                    t = float((frame.pts - pts0) * base)
                    if prev_t is not None and t <= prev_t:
                        what = f"out of order: at {t:.3f} s, not after frame {k - 1} ({prev_t:.3f} s)"
                        raise FrameReadError(f"{path}: frame {k}: {what}", path=str(path), frame=k)
                    prev_t = t
                    if fps is not None and abs(t - k / fps) > worst[0]:
                        worst = (abs(t - k / fps), k, t)
                k += 1
    except FrameReadError:
        raise
    except Exception as err:  # av.error.InvalidDataError ... on damaged packets
        raise FrameReadError(
            f"{path}: frame {k} of {n} cannot be decoded: {_short(err)}", path=str(path), frame=k
        ) from None
    if k < n:
        raise FrameReadError(
            f"{path}: frame {k} of {n} cannot be decoded: the stream ends after {k} decodable frames",
            path=str(path),
            frame=k,
        )
    if fps is not None and worst[0] > VFR_TOLERANCE_FRAMES / fps:
        dev, i, t = worst
        raise FrameReadError(
            f"{path}: variable frame rate: frame {i} is at {t:.3f} s by the container's timestamps but "
            f"at {i / fps:.3f} s by its index at the average {fps:g} fps: deviation {dev:.3f} s, more "
            f"than {VFR_TOLERANCE_FRAMES:g} frame ({VFR_TOLERANCE_FRAMES / fps:.3f} s); re-encode at a "
            f"constant frame rate (e.g. ffmpeg -i IN -fps_mode cfr -r {round(fps)} OUT.mp4)",
            path=str(path),
            frame=i,
        )
    assert size is not None
    return size[1], size[0]


def verify_frames(clip: VideoFrames, fps: float | None) -> tuple[int, int]:
    """Every frame of an opened clip, decoded once in order: decodable, of the clip's size, in order
    (frame folders: consecutive frame numbers; videos: increasing timestamps at a constant rate).

    Returns (height, width); raises FrameReadError naming the first bad frame.
    """
    if clip.files is not None:
        return _verify_folder(clip)
    return _verify_video_file(clip.path, len(clip), fps)


def probe_video(path: str | os.PathLike[str], fps_hint: float | None = None) -> VideoInfo:
    """Check that every frame of a clip is readable and return its frame count, fps and size.

    fps: a video file's container fps (the hint only if the container has none); a frame folder
    has no fps of its own, so it is the hint (None without one: the caller decides what that means).
    """
    path = Path(path)
    hint = fps_hint if _valid_fps(fps_hint) else None
    if path.is_file() and path.stat().st_size > 0:
        declared = _header_frame_count(path)
    else:
        declared = None
    with VideoFrames(path) as clip:
        n = len(clip)
        if n == 0:
            raise VideoError(f"{path}: holds no frames")
        if declared is not None and n < declared:
            raise VideoError(
                f"{path}: truncated: the container declares {declared} frames but only {n} can be read"
            )
        fps = hint if clip.container_fps is None else clip.container_fps
        height, width = verify_frames(clip, fps)
    return VideoInfo(n_frames=n, fps=fps, width=int(width), height=int(height))


def read_frames(path: str | os.PathLike[str], indices: Sequence[int]) -> np.ndarray:
    """Frames at `indices` of a video file or frame folder, (N, H, W, 3) uint8 RGB."""
    with VideoFrames(path) as clip:
        return clip.read(indices)
