"""Progress bars in a job's log file as periodic lines, not carriage-return frames.

A terminal redraws a progress bar in place: tqdm (ours, and transformers' "Loading weights")
writes `\\r` + the new frame at every refresh. Sent to a log file, that becomes one line of
hundreds of frames glued together by `\\r` ("\\r soup") that no pager or `grep` reads well.
`ProgressLines` is the stream a job's stderr goes to: ordinary text passes through unchanged,
and of a bar's frames it keeps one line every `interval_s` seconds (the frame carries the
count, rate and ETA tqdm computed) plus the bar's last frame, each on a line of its own.

Written by hand because neither tqdm nor logging offer it: tqdm's `file=` takes any stream but
always writes frames; `tqdm.contrib.logging` only moves *log records* around bars on a terminal;
and the bars live in libraries whose tqdm calls we do not control.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TextIO

DEFAULT_INTERVAL_S = 10.0


class ProgressLines(io.TextIOBase):
    """A text stream over `out` that turns `\\r`-redrawn frames into periodic lines.

    `out` receives whole lines only. A frame (text ended by the next `\\r`) is written when
    `interval_s` has passed since the last frame written, the first frame of a bar included; the
    text that ends a bar (its final frame, followed by `\\n`) is always written. `clock` is
    injectable for tests.
    """

    def __init__(
        self,
        out: TextIO,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._out = out
        self._interval = interval_s
        self._clock = clock
        self._line = ""  # the text since the last \r or \n: the frame being drawn
        self._last_frame_at: float | None = None

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.closed:
            raise ValueError("write to a closed ProgressLines stream")
        for i, part in enumerate(s.split("\r")):
            if i:  # a \r: the frame drawn so far is replaced; keep it if its turn has come
                self._frame_done()
            self._text(part)
        return len(s)

    def _text(self, part: str) -> None:
        *lines, rest = part.split("\n")
        for line in lines:
            self._out.write(self._line + line + "\n")
            self._line = ""
            self._last_frame_at = None  # a finished bar: the next bar's first frame is written
        self._line += rest

    def _frame_done(self) -> None:
        frame, self._line = self._line, ""
        if not frame.strip():
            return
        now = self._clock()
        if self._last_frame_at is None or now - self._last_frame_at >= self._interval:
            self._out.write(frame.rstrip() + "\n")
            self._last_frame_at = now

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        """Write the frame still being drawn (a bar cut short keeps its last state), then flush."""
        if not self.closed:
            if self._line.strip():
                self._out.write(self._line.rstrip() + "\n")
            self._line = ""
            self._out.flush()
        super().close()
