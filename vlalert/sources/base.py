"""Records shared by every source adapter.

An adapter turns a source's own annotation files into `Annotation`s (what the annotation says,
before the video is opened) and `Rejection`s (annotation rows that cannot be used, with the
reason). The common ingest path (`vlalert.ingest`) then applies BADAS consensus overrides,
probes each video and checks the times against it, producing `Clip`s or more `Rejection`s.
Nothing is dropped without a `Rejection` row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """One clip (or annotation row) that did not make it into videos.parquet, and why.

    `reason` names the file, the clip and the field, e.g.
    "train.csv: clip 00012: field time_of_alert: 31.0 s is after time_of_event 30.2 s".
    """

    video_id: str
    source: str
    path: str
    reason: str


@dataclass
class Annotation:
    """What a source's annotation says about one clip; times in seconds from the clip's first frame."""

    video_id: str
    source: str
    path: str  # video file, or a folder of frames
    fps: float | None  # nominal fps from the source's documentation; None: read it from the video
    official_split: str | None
    is_positive: bool
    t_risky_s: float | None
    t_event_s: float | None
    ego_involved: bool | None
    event_type: str | None
    annotation_file: str  # the file this annotation came from (named in rejection reasons)
    n_frames: int | None = None  # frame count the annotation claims, checked against the video
    meta: dict[str, Any] = field(default_factory=dict)
    # The clock each time was written on: {"t_event_s": 20.0} means t_event_s * 20 is a frame index,
    # so ingest places it at t_event_s * 20 / fps seconds of the probed video. A time without an
    # entry is already in seconds of the video (e.g. Nexar's CSV). Frame indices are the truth.
    clock_fps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Clip:
    """One accepted clip: a row of videos.parquet."""

    video_id: str
    source: str
    path: str
    fps: float
    n_frames: int
    duration_s: float
    width: int
    height: int
    official_split: str | None
    is_positive: bool
    t_risky_s: float | None
    t_event_s: float | None
    ego_involved: bool | None
    event_type: str | None
    meta: dict[str, Any]

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["meta"] = json.dumps(self.meta, sort_keys=True, default=str)
        return row
