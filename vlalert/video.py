"""Open, check and read clips that are either video files (mp4, ...) or folders of frame images.

Some sources ship frames as image folders (DoTA, DADA-2000), others as mp4 (Nexar, DAD); every
later stage reads both through `read_frames`, so the difference ends here.

`probe_video` is the ingest gate: a clip it accepts can be read from its first to its last frame.
Checking only that a file opens is not enough, because a cut-off mp4 whose index sits at the front
("faststart") opens without error in decord and simply reports fewer frames than the container
header declares. So the probe compares decord's readable frame count with the header's count (via
PyAV) and decodes the first and the last frame.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


class VideoError(Exception):
    """A clip that cannot be used; the message names the file and says what is wrong with it."""


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int
    fps: float | None  # None: a frame folder probed without an fps hint
    width: int
    height: int


def is_frame_folder(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir()


def _natural_key(name: str) -> tuple[Any, ...]:
    # "2.jpg" before "10.jpg": sources zero-pad, but a user's re-export may not.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder in frame order (natural sort of the file names)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


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


def _read_with_pyav(path: Path, indices: list[int]) -> np.ndarray:
    """Frames at `indices` (presentation order, as decord counts them) by one sequential decode."""
    import av

    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if len(frames) == len(wanted):
                    break
    except Exception as err:
        raise VideoError(_short(err)) from None
    missing = sorted(wanted - set(frames))
    if missing:
        raise VideoError(f"frames {missing[:5]} could not be decoded")
    return np.stack([frames[i] for i in indices]).astype(np.uint8, copy=False)


class VideoFrames:
    """One opened clip (video file or frame folder) from which frames are read by index.

    Hold one per clip when reading many windows from it: opening a video costs an index scan.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._reader: Any = None
        self._files: list[Path] | None = None
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
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0))
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

    def _read_image(self, file: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(file) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as err:  # PIL raises OSError / UnidentifiedImageError / SyntaxError
            raise VideoError(f"{file}: unreadable frame image: {_short(err)}") from None

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as a (N, H, W, 3) uint8 RGB array (indices may repeat, any order)."""
        idx = self._check_indices(indices)
        if self._files is not None:
            frames = [self._read_image(self._files[i]) for i in idx]
            if not frames:
                h, w = self.frame_size()
                return np.zeros((0, h, w, 3), dtype=np.uint8)
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                raise VideoError(f"{self.path}: frame images differ in size: {sorted(shapes)}")
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
        except VideoError as err:
            raise VideoError(
                f"{self.path}: cannot decode frames {idx[:5]}: decord: {decord_error}; PyAV: {err}"
            ) from None

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames, from the first frame."""
        return tuple(self.read([0]).shape[1:3])  # type: ignore[return-value]

    def close(self) -> None:
        self._reader = None

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def probe_video(path: str | os.PathLike[str], fps_hint: float | None = None) -> VideoInfo:
    """Check that a clip is readable end to end and return its frame count, fps and size.

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
        first = clip.read([0])[0]
        last = clip.read([n - 1])[0]
        if first.shape != last.shape:
            raise VideoError(f"{path}: first and last frames differ in size: {first.shape} vs {last.shape}")
        fps = hint if clip.container_fps is None else clip.container_fps
        height, width = first.shape[:2]
    return VideoInfo(n_frames=n, fps=fps, width=int(width), height=int(height))


def read_frames(path: str | os.PathLike[str], indices: Sequence[int]) -> np.ndarray:
    """Frames at `indices` of a video file or frame folder, (N, H, W, 3) uint8 RGB."""
    with VideoFrames(path) as clip:
        return clip.read(indices)
