"""Where a clip's ticks fall in time, and which frames each tick sees.

Every stage that needs tick times (gate, relabel, beliefs, cache) calls these two functions, so
that a tick's time and its frames are defined once: a tick at time t sees `window.frames` frames
spread uniformly over the half-open span (t - span_s, t], i.e. it only ever sees the past and the
present frame, never the future (an alerter runs online).
"""

from __future__ import annotations

import math

import numpy as np

from vlalert.config import TicksConfig, WindowConfig

# Times are sums of decimal fractions (0.1 s, 1/30 s, ...) that are not exact in binary; a
# micro-second tolerance keeps a tick that lands exactly on a boundary on the intended side.
TIME_EPS = 1e-6


def tick_times(n_frames: int, fps: float, ticks: TicksConfig, window: WindowConfig) -> np.ndarray:
    """Tick times (seconds) of a clip of `n_frames` frames at `fps`.

    Ticks sit at whole multiples of 1/hz so that ticks of different clips (and of a parent clip
    and its prefix) line up. The first tick is the first whose window (t - span_s, t] lies wholly
    inside the clip (t >= span_s); the last shows the clip's last frame time or earlier.
    A clip shorter than one window has no ticks (an empty array), which the benchmark manifest reports.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if n_frames <= 0:
        return np.empty(0, dtype=np.float64)
    hz = ticks.hz
    last_t = (n_frames - 1) / fps
    k_first = math.ceil(window.span_s * hz - TIME_EPS)
    k_last = math.floor(last_t * hz + TIME_EPS)
    if k_last < k_first:
        return np.empty(0, dtype=np.float64)
    return np.arange(k_first, k_last + 1, dtype=np.float64) / hz


def window_frames(t: float, fps: float, n_frames: int, window: WindowConfig) -> list[int]:
    """Frame indices a tick at time `t` sees: `window.frames` samples over (t - span_s, t].

    Sample i (0-based) is at time t - span_s + (i + 1) * span_s / frames, so the last sample is
    the frame shown at t itself; frame index = floor(time * fps + 1e-6) (frame i shows time i/fps),
    clipped to the clip's frames. Indices may repeat when the window holds fewer frames than
    `window.frames` (low fps), which keeps every tick's input the same shape.
    """
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if n_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got n_frames={n_frames}")
    step = window.span_s / window.frames
    start = t - window.span_s
    out = []
    for i in range(window.frames):
        idx = math.floor((start + (i + 1) * step) * fps + TIME_EPS)
        out.append(min(max(idx, 0), n_frames - 1))
    return out
