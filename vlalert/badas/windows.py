"""Which frames of a clip make the Open-BADAS input window for a tick at time t.

Open-BADAS was trained on 16 frames resampled to 8 fps, i.e. a 2 s view whose last frame is the
newest one it may see. Here the window is anchored at the tick: sample k (0-based, of `frames`)
sits at time

    s_k = t - (frames - 1 - k) / sample_fps        (the last sample, k = frames - 1, is at t)

and reads the frame shown at that time, index floor(s_k * fps) (frame i shows time i / fps), as
`vlalert.ticks.window_frames` does, so a score at t never sees a frame after t (an alerter runs
online). A clip's own fps differs from 8 fps: at 30 fps the samples skip 3 or 4 frames, at 10 fps
a sample may skip none or one, and below 8 fps indices repeat; in every case the 16 samples are
1/8 s apart in time, which is what the model was trained on.

A window is *complete* when its first sample is not before the clip's first frame (s_0 >= 0). For
an incomplete window the caller chooses (see `vlalert.badas.config.BadasConfig.incomplete_window`):
no score (null, the BADAS practice of not predicting before a full window) or the samples before
the first frame repeat frame 0. With the default ticks (the first tick at window.span_s = 2 s)
every tick's BADAS window is complete, because the BADAS window reaches back only
(16 - 1) / 8 = 1.875 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Same tolerance as vlalert.ticks: tick and sample times are sums of decimal fractions that are not
# exact in binary, and a sample landing exactly on a frame (or on time 0) must stay on that frame.
TIME_EPS = 1e-6

BADAS_FRAMES = 16
BADAS_SAMPLE_FPS = 8.0


@dataclass(frozen=True)
class Window:
    """The frame indices one score reads, and whether the window lies wholly inside the clip."""

    indices: tuple[int, ...]
    complete: bool


def sample_times(t: float, frames: int = BADAS_FRAMES, sample_fps: float = BADAS_SAMPLE_FPS) -> list[float]:
    """Times (s) of the `frames` samples of the window ending at t, oldest first, 1/sample_fps apart."""
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
) -> Window:
    """The window of the score at time t of a clip of `n_frames` frames at `fps`.

    Indices are clipped to [0, n_frames - 1]: a sample before the first frame reads frame 0 (which
    makes the window incomplete), and one a rounding error past the last frame reads the last frame.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if n_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got n_frames={n_frames}")
    times = sample_times(t, frames, sample_fps)
    indices = tuple(min(max(math.floor(s * fps + TIME_EPS), 0), n_frames - 1) for s in times)
    return Window(indices=indices, complete=times[0] >= -TIME_EPS)


def clip_windows(
    ts: list[float],
    fps: float,
    n_frames: int,
    frames: int = BADAS_FRAMES,
    sample_fps: float = BADAS_SAMPLE_FPS,
) -> list[Window]:
    """`badas_window` for each tick time of one clip."""
    return [badas_window(float(t), fps, n_frames, frames, sample_fps) for t in ts]
