"""`vlalert.log_lines.ProgressLines`: a job log gets a progress bar as periodic lines, never `\\r` frames."""

from __future__ import annotations

import io

from tqdm import tqdm

from vlalert.log_lines import ProgressLines


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_text_passes_through_line_by_line():
    out = io.StringIO()
    s = ProgressLines(out, interval_s=10.0, clock=_Clock())
    s.write("first line\nsecond ")
    assert out.getvalue() == "first line\n"  # only whole lines reach the log
    s.write("half\n")
    assert out.getvalue() == "first line\nsecond half\n"


def test_frames_become_one_line_per_interval_and_the_last_frame_is_kept():
    out, clock = io.StringIO(), _Clock()
    s = ProgressLines(out, interval_s=10.0, clock=clock)
    for i in range(1, 101):  # a bar drawn once a second for 100 s
        clock.t = float(i)
        s.write(f"\rwork: {i}/100 [rate 1.0it/s, eta {100 - i}s]")
    s.write("\n")  # tqdm ends a bar with a newline after its last frame
    s.write("after the bar\n")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "work: 1/100 [rate 1.0it/s, eta 99s]"  # the first frame is shown at once
    assert lines[-2] == "work: 100/100 [rate 1.0it/s, eta 0s]"  # the final state, always
    assert lines[-1] == "after the bar"
    # one line per 10 s of frames, plus the final one
    assert 10 <= len(lines) - 1 <= 12
    shown = [int(line.split()[1].split("/")[0]) for line in lines[:-1]]
    assert shown == sorted(shown)
    assert all(b - a >= 10 for a, b in zip(shown[:-2], shown[1:-1], strict=True))


def test_a_bar_cut_short_keeps_its_last_frame_on_close():
    out, clock = io.StringIO(), _Clock()
    s = ProgressLines(out, interval_s=10.0, clock=clock)
    s.write("\rstep 1/9")
    clock.t = 1.0
    s.write("\rstep 2/9")  # within the interval: not written yet
    s.close()
    assert out.getvalue().splitlines() == ["step 1/9", "step 2/9"]


def test_real_tqdm_into_a_log_stream_writes_no_carriage_returns():
    out = io.StringIO()
    stream = ProgressLines(out, interval_s=3600.0)
    for _ in tqdm(range(500), desc="cache test", unit="tick", file=stream, mininterval=0):
        pass
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2  # the first frame and the final one
    assert lines[0].startswith("cache test:   0%") and "0/500" in lines[0]
    assert "100%" in lines[-1] and "500/500" in lines[-1] and "tick/s" in lines[-1]
