import numpy as np
import pytest

from vlalert.config import TicksConfig, WindowConfig
from vlalert.ticks import tick_times, window_frames

W = WindowConfig()  # 8 frames over 2 s
HZ1 = TicksConfig()


def test_first_tick_is_first_full_window_and_last_shows_last_frame():
    # 30 fps, 331 frames: last frame time 11.0 s -> ticks 2..11
    assert tick_times(331, 30.0, HZ1, W).tolist() == [float(t) for t in range(2, 12)]
    # 10 fps, 50 frames: last frame at 4.9 s -> ticks 2, 3, 4
    assert tick_times(50, 10.0, HZ1, W).tolist() == [2.0, 3.0, 4.0]


def test_clip_of_exactly_one_window_has_one_tick_and_shorter_has_none():
    assert tick_times(61, 30.0, HZ1, W).tolist() == [2.0]  # last frame at exactly 2.0 s
    assert tick_times(60, 30.0, HZ1, W).size == 0  # last frame at 1.967 s: no full window
    assert tick_times(0, 30.0, HZ1, W).size == 0


def test_ticks_are_multiples_of_the_period():
    # 2 Hz and a 1.2 s window: first multiple of 0.5 s at or after 1.2 s is 1.5 s
    t = tick_times(91, 30.0, TicksConfig(hz=2.0), WindowConfig(frames=8, span_s=1.2))
    assert t.tolist() == [1.5, 2.0, 2.5, 3.0]
    # 1 Hz and a 1.5 s window: first tick at 2 s, not 1.5 s
    assert tick_times(91, 30.0, HZ1, WindowConfig(frames=4, span_s=1.5)).tolist() == [2.0, 3.0]
    assert tick_times(91, 30.0, HZ1, W).dtype == np.float64


def test_bad_fps_raises():
    with pytest.raises(ValueError, match="fps"):
        tick_times(100, 0.0, HZ1, W)
    with pytest.raises(ValueError, match="fps"):
        window_frames(2.0, float("nan"), 100, W)


def test_window_frames_30fps():
    # sample times 0.25, 0.5, ..., 2.0 s -> frames floor(7.5)=7, 15, 22, 30, 37, 45, 52, 60
    assert window_frames(2.0, 30.0, 331, W) == [7, 15, 22, 30, 37, 45, 52, 60]
    assert window_frames(5.0, 30.0, 331, W) == [97, 105, 112, 120, 127, 135, 142, 150]


def test_window_frames_10fps():
    assert window_frames(2.0, 10.0, 50, W) == [2, 5, 7, 10, 12, 15, 17, 20]
    assert window_frames(3.0, 10.0, 50, W) == [12, 15, 17, 20, 22, 25, 27, 30]


def test_window_frames_time_rounding_and_clipping():
    # 0.1 * 3 is 0.30000000000000004 in binary; 20 fps frame 6 shows 0.3 s exactly
    assert window_frames(0.3, 20.0, 100, WindowConfig(frames=3, span_s=0.3)) == [2, 4, 6]
    # a window reaching before the clip start is clipped to frame 0, past its end to the last frame
    assert window_frames(0.5, 30.0, 100, W) == [0, 0, 0, 0, 0, 0, 7, 15]
    assert window_frames(4.0, 10.0, 30, WindowConfig(frames=2, span_s=2.0)) == [29, 29]
