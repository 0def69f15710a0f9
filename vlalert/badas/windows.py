"""Which frames of a clip make the Open-BADAS input window for a tick at time t.

Open-BADAS (getnexar/BADAS-Open, `badas/utils/video.py::load_full_video_frames` and
`badas/utils/sliding_window.py::SlidingWindowPredictor`, as `badas_loader.load_badas_model` sets
them up: window 16, stride 1, target_fps 8) scores a clip like this:

1. The clip is resampled to 8 fps: sample i (i = 0, 1, ..., int(round(n_frames / fps * 8)) - 1)
   is the original frame `int(round(i * (fps / 8)))`, with Python's `round` (halves go to the
   even integer: at 20 fps sample 1 is frame round(2.5) = 2, sample 3 is frame round(7.5) = 8).
   Sample i stands for time i / 8 s.
2. Windows are samples [s, s + 16) for s = 0, 1, ...; the score of a window belongs to the sample
   *after* it, s + 16 (the model predicts what comes after the frames it saw). So the score at
   sample k (time k / 8) comes from samples k - 16 ... k - 1: its newest frame is 1/8 s old.
3. Samples 0 ... 15 (the first 2 s) have no score (NaN in their per-frame output). Their
   `pad_window_frames` pads a window with black frames at its start only when the whole clip is
   shorter than 16 samples, and that window's score then belongs to a sample past the clip's end,
   so it never reaches their per-frame output either.

Mapping to our ticks (`timing="badas"`, the default): a tick at time t takes the score their
per-frame output shows at the latest 8 fps sample at or before t, k = floor(8 t) (with a 1e-6 s
tolerance, so t = 2.0 is k = 16 exactly). Its window is samples k - 16 ... k - 1, i.e. the latest
window whose score time k / 8 is at or before t; every frame it reads lies at or before
t - 1/8 s. With the default ticks (1 Hz, the first at window.span_s = 2 s) the first tick is k = 16,
the first sample their code scores. Deliberate differences, both only at the edges of a clip:
- a window that would start before the clip (k < 16, ticks before 2 s) is marked incomplete; its
  missing samples are `BLACK` (-1) here and the provider gives no score by default (their NaN), or
  pads them with black frames or frame 0 on request (`BadasConfig.incomplete_window`);
- a tick past their last scored sample (possible only for a clip's last tick, when
  floor(8 t) = int(round(n_frames / fps * 8))) still gets the score of its window k - 16 ... k - 1
  (their code computes that window too and drops it from its per-frame array).

`timing="latest"` keeps this module's former rule: the last sample sits at t itself
(sample j at t - (15 - j) / 8, frame floor(time * fps)), the newest possible view of a tick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Same tolerance as vlalert.ticks: tick and sample times are sums of decimal fractions that are not
# exact in binary, and a tick landing exactly on a sample (or on time 0) must stay on that sample.
TIME_EPS = 1e-6

BADAS_FRAMES = 16
BADAS_SAMPLE_FPS = 8.0
BLACK = -1  # a window position before the clip's first frame (a black frame when padded)

TIMINGS = ("badas", "latest")


@dataclass(frozen=True)
class Window:
    """The frame indices one score reads (BLACK where the window reaches before the clip), and
    whether the window lies wholly inside the clip."""

    indices: tuple[int, ...]
    complete: bool


def _check(fps: float, n_frames: int, frames: int, sample_fps: float) -> None:
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if n_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got n_frames={n_frames}")
    if frames < 1:
        raise ValueError(f"a window needs at least one frame, got frames={frames}")
    if sample_fps <= 0 or not math.isfinite(sample_fps):
        raise ValueError(f"sample_fps must be a positive number, got {sample_fps!r}")


def sample_frame(i: int, fps: float, sample_fps: float = BADAS_SAMPLE_FPS) -> int:
    """The original frame of 8 fps sample i, as their loader computes it: int(round(i * (fps / 8)))."""
    if sample_fps == fps:
        return i  # their loader reads every frame when the clip is already at the target rate
    return int(round(i * (fps / sample_fps)))


def n_samples(n_frames: int, fps: float, sample_fps: float = BADAS_SAMPLE_FPS) -> int:
    """How many 8 fps samples their loader takes from a clip (its per-frame output's length)."""
    if sample_fps == fps:
        return n_frames
    count = int(round(n_frames / fps * sample_fps))
    # their loop stops at the first sample whose frame is past the clip's end
    return next((i for i in range(count) if sample_frame(i, fps, sample_fps) >= n_frames), count)


def score_sample(t: float, sample_fps: float = BADAS_SAMPLE_FPS) -> int:
    """k = floor(t * 8): the 8 fps sample whose score a tick at time t takes."""
    return math.floor(t * sample_fps + TIME_EPS)


def sample_times(t: float, frames: int = BADAS_FRAMES, sample_fps: float = BADAS_SAMPLE_FPS) -> list[float]:
    """`timing="latest"`: times (s) of the samples of the window ending at t, oldest first."""
    if frames < 1:
        raise ValueError(f"a window needs at least one frame, got frames={frames}")
    if sample_fps <= 0 or not math.isfinite(sample_fps):
        raise ValueError(f"sample_fps must be a positive number, got {sample_fps!r}")
    return [t - (frames - 1 - k) / sample_fps for k in range(frames)]


def badas_window(
    t: float,
    fps: float,
    n_frames: int,
    frames: int = BADAS_FRAMES,
    sample_fps: float = BADAS_SAMPLE_FPS,
    timing: str = "badas",
) -> Window:
    """The window of the score at time t of a clip of `n_frames` frames at `fps` (see the module doc).

    Positions before the clip's first frame are BLACK (the window is then incomplete); an index a
    rounding error past the last frame reads the last frame.
    """
    _check(fps, n_frames, frames, sample_fps)
    last = n_frames - 1
    if timing == "badas":
        k = score_sample(t, sample_fps)
        samples = range(k - frames, k)
        indices = tuple(BLACK if s < 0 else min(sample_frame(s, fps, sample_fps), last) for s in samples)
        return Window(indices=indices, complete=k >= frames)
    if timing == "latest":
        times = sample_times(t, frames, sample_fps)
        indices = tuple(BLACK if s < -TIME_EPS else min(math.floor(s * fps + TIME_EPS), last) for s in times)
        return Window(indices=indices, complete=times[0] >= -TIME_EPS)
    raise ValueError(f"unknown window timing {timing!r} (one of {', '.join(TIMINGS)})")


def clip_windows(
    ts: Sequence[float],
    fps: float,
    n_frames: int,
    frames: int = BADAS_FRAMES,
    sample_fps: float = BADAS_SAMPLE_FPS,
    timing: str = "badas",
) -> list[Window]:
    """`badas_window` for each tick time of one clip."""
    return [badas_window(float(t), fps, n_frames, frames, sample_fps, timing) for t in ts]
