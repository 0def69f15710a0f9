"""The llm provider's frames: each clip decoded once, each frame JPEG-encoded once.

A tick's request carries its window's frames as JPEG. Read tick by tick, every request would seek
into its clip and decode a group of pictures (150-370 ms of CPU per 720p tick), and a frame that two
ticks' windows share (1 Hz ticks with 2 s windows share half their frames) would be decoded and
encoded twice. `ClipJpegs` instead reads, at the first request of a clip, every frame that any of
the clip's ticks needs, in sorted order (one forward pass: `ClipReader.forward`, the sequential decode
of `VideoFrames.iter_forward`; encoded in blocks that bound the memory), encodes
each frame once (`encode_frames`, frame by frame: the bytes a per-tick read gives, so the answers
already cached under those bytes stay valid), and frees the clip's JPEGs once its last tick has
taken them. Requests of one clip wait for its pass; the other clips go on.

Not the frames store (vlalert.frames): the store keeps frames at the model's square input size,
while the LLM gets them at the clip's own aspect (`max_image_side`), and the beliefs stage runs
before the benchmark, whatever the model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from vlalert.beliefs.request import encode_frames
from vlalert.video import VideoFrames, in_blocks, read_frames

FramesLoader = Callable[[str, Sequence[int]], np.ndarray]
READ_BLOCK = 32  # frames decoded per call (a 720p frame is 2.7 MB as pixels; its JPEG ~30 KB)


class ClipReader:
    """The beliefs stage's frames loader for clips on disk: a window by index (`__call__`, any
    order), or a clip's frames forward in one sequential decode (`forward`: what ClipJpegs uses)."""

    def __call__(self, path: str, indices: Sequence[int]) -> np.ndarray:
        return read_frames(path, indices)

    def forward(self, path: str, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        with VideoFrames(path) as clip:
            yield from clip.iter_forward(wanted)


class ClipJpegs:
    """JPEG bytes of tick windows, each clip read once (see module docstring). Thread-safe."""

    def __init__(
        self,
        windows: Iterable[tuple[str, Sequence[int]]],
        frames_loader: FramesLoader,
        max_side: int,
        quality: int,
    ) -> None:
        """`windows`: (clip path, frame indices) of every tick that will ask, once each."""
        self.loader = frames_loader
        self.max_side, self.quality = max_side, quality
        needed: dict[str, set[int]] = {}
        self._left: dict[str, int] = {}
        for path, idx in windows:
            needed.setdefault(path, set()).update(int(i) for i in idx)
            self._left[path] = self._left.get(path, 0) + 1
        self._needed = {path: sorted(ix) for path, ix in needed.items()}
        self._done: dict[str, dict[int, bytes]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.clip_reads = 0  # passes made (one per clip unless a clip's JPEGs were freed and asked again)

    def _encode(self, frames: np.ndarray) -> list[bytes]:
        return encode_frames(frames, self.max_side, self.quality)

    def _read_clip(self, path: str, wanted: Sequence[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        forward = getattr(self.loader, "forward", None)
        if forward is not None:  # a clip decoded sequentially, frame by frame (ClipReader)
            for idx, frames in in_blocks(forward(path, wanted), READ_BLOCK):
                out.update(zip(idx, self._encode(frames), strict=True))
        else:
            for a in range(0, len(wanted), READ_BLOCK):
                idx = list(wanted[a : a + READ_BLOCK])
                out.update(zip(idx, self._encode(self.loader(path, idx)), strict=True))
        self.clip_reads += 1
        return out

    def jpegs(self, path: str, indices: Sequence[int]) -> list[bytes]:
        """The JPEGs of one tick's window, in its order (a window not announced is read on its own)."""
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            got = self._done.get(path)
            if got is None or any(int(i) not in got for i in indices):
                wanted = sorted(set(self._needed.get(path, ())) | {int(i) for i in indices})
                got = self._done[path] = self._read_clip(path, wanted)
            out = [got[int(i)] for i in indices]
            left = self._left.get(path, 0) - 1
            self._left[path] = left
            if left <= 0:  # the clip's last announced tick: its JPEGs are not needed again
                self._done.pop(path, None)
        return out
