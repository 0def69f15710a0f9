"""The ingest stage: a source's own annotations -> checked clips (videos.parquet) + rejections.

Order: the adapter parses the source's files; BADAS consensus rows override times and ego flags;
then every clip's video is probed (readable from first to last frame) and its annotation is checked
against it. A clip that fails any check becomes one Rejection whose reason lists every problem found
as "<file>: clip <id>: field <field>: <what is wrong>", the file being the one to fix (the annotation
sheet, the consensus CSV or the video). Nothing is dropped without a row in rejected.parquet; with
strict=True the first rejection stops the stage instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from vlalert.config import SourceConfig
from vlalert.schemas import table_from_rows, write_table
from vlalert.sources.base import Annotation, Clip, Rejection
from vlalert.sources.common import reason
from vlalert.sources.consensus import apply_consensus, read_consensus
from vlalert.sources.registry import read_source_annotations
from vlalert.video import VideoError, VideoInfo, probe_video

log = logging.getLogger(__name__)

FRAME_TOLERANCE = 1  # annotation and video frame counts may differ by one (off-by-one conventions)
END_EPS_S = 1e-6
TIMES: tuple[str, ...] = ("t_risky_s", "t_event_s")


class IngestError(RuntimeError):
    """strict mode: the first clip that would have been rejected, with the same reason."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


def field_of(ann: Annotation, attr: str) -> tuple[str, str]:
    """(file, field label) that gave `attr`: e.g. ("metadata_val.json", "anomaly_start (t_risky_s)")."""
    prov = ann.meta.get("provenance", {}).get(attr)
    if not prov:
        return ann.annotation_file, attr
    native = prov.get("field") or attr
    return prov.get("file") or ann.annotation_file, native if native == attr else f"{native} ({attr})"


def _problem(ann: Annotation, attr: str, what: str) -> str:
    file, field = field_of(ann, attr)
    return reason(file, ann.video_id, field, what)


def _reject(ann: Annotation, problems: list[str]) -> Rejection:
    return Rejection(video_id=ann.video_id, source=ann.source, path=ann.path, reason="; ".join(problems))


def time_problems(ann: Annotation, duration_s: float, n_frames: int, fps: float) -> list[str]:
    """Every way the annotation's times contradict themselves or the video."""
    problems = []
    times = {attr: getattr(ann, attr) for attr in TIMES}
    for attr, value in times.items():
        if value is None:
            continue
        if value < 0:
            problems.append(_problem(ann, attr, f"negative time {value:g} s"))
        elif value > duration_s + END_EPS_S:
            end = f"{duration_s:g} s = {n_frames} frames at {fps:g} fps"
            problems.append(_problem(ann, attr, f"{value:g} s is past the clip's end ({end})"))
    t_risky, t_event = times["t_risky_s"], times["t_event_s"]
    if t_risky is not None and t_event is not None and t_risky > t_event:
        _, event_field = field_of(ann, "t_event_s")
        problems.append(
            _problem(ann, "t_risky_s", f"risky time {t_risky:g} s is after {event_field} {t_event:g} s")
        )
    if ann.is_positive and t_risky is None:
        problems.append(_problem(ann, "t_risky_s", "positive clip has no risky time"))
    if not ann.is_positive:
        for attr, value in times.items():
            if value is not None:
                problems.append(_problem(ann, attr, f"negative clip (no event) gives a time, {value:g} s"))
    return problems


def check_clip(ann: Annotation, info: VideoInfo) -> Clip | Rejection:
    """Accept `ann` as a Clip of the probed video, or reject it with every problem found."""
    fps = info.fps
    if fps is None or not math.isfinite(fps) or fps <= 0:
        what = f"unknown fps: the source gives {ann.fps} and the video gives {info.fps}"
        return _reject(ann, [reason(ann.path, ann.video_id, "fps", what)])
    problems = []
    if ann.n_frames is not None and abs(ann.n_frames - info.n_frames) > FRAME_TOLERANCE:
        what = f"annotation says {ann.n_frames} frames, the video has {info.n_frames}"
        problems.append(_problem(ann, "n_frames", what))
    duration = info.n_frames / fps
    problems += time_problems(ann, duration, info.n_frames, fps)
    if problems:
        return _reject(ann, problems)
    meta = {**ann.meta, "annotation_file": ann.annotation_file}
    if ann.n_frames is not None:
        meta["n_frames_annotation"] = ann.n_frames
    if ann.fps is not None and not math.isclose(ann.fps, fps, rel_tol=1e-3):
        meta["fps_nominal"] = ann.fps  # the source's documented fps; the container's is used
    return Clip(
        video_id=ann.video_id,
        source=ann.source,
        path=ann.path,
        fps=float(fps),
        n_frames=info.n_frames,
        duration_s=duration,
        width=info.width,
        height=info.height,
        official_split=ann.official_split,
        is_positive=ann.is_positive,
        t_risky_s=ann.t_risky_s,
        t_event_s=ann.t_event_s,
        ego_involved=ann.ego_involved,
        event_type=ann.event_type,
        meta=meta,
    )


def probe_clip(ann: Annotation) -> VideoInfo | Rejection:
    try:
        return probe_video(ann.path, fps_hint=ann.fps)
    except VideoError as err:
        msg = str(err)
        prefix = f"{ann.path}: "
        return _reject(ann, [reason(ann.path, ann.video_id, "path", msg.removeprefix(prefix))])


def ingest_annotations(
    annotations: Iterable[Annotation],
    rejections: Iterable[Rejection] = (),
    *,
    strict: bool = False,
    progress: bool = True,
    desc: str = "ingest",
) -> tuple[list[Clip], list[Rejection]]:
    """Probe and check each annotation; `rejections` (from earlier steps) are passed through first."""
    rejected: list[Rejection] = []

    def add(rejection: Rejection) -> None:
        if strict:
            raise IngestError(rejection)
        rejected.append(rejection)

    for rejection in rejections:
        add(rejection)
    annotations = list(annotations)
    clips: list[Clip] = []
    first_seen: dict[str, Annotation] = {}
    for ann in tqdm(annotations, desc=desc, unit="clip", disable=not progress):
        first = first_seen.setdefault(ann.video_id, ann)
        if first is not ann:
            what = f"duplicate video_id: already given by {first.annotation_file}, which is kept"
            add(_reject(ann, [reason(ann.annotation_file, ann.video_id, "video_id", what)]))
            continue
        info = probe_clip(ann)
        result = info if isinstance(info, Rejection) else check_clip(ann, info)
        if isinstance(result, Rejection):
            add(result)
        else:
            clips.append(result)
    return clips, rejected


def ingest_source(
    name: str, src: SourceConfig, *, strict: bool = False, progress: bool = True
) -> tuple[list[Clip], list[Rejection]]:
    """Read one source in its own format and return its accepted clips and its rejections.

    A missing or unreadable annotation file (or consensus CSV) raises: that is a setup error for the
    whole source, not a property of one clip.
    """
    annotations, rejections = read_source_annotations(name, src)
    if src.consensus:
        consensus = read_consensus(src.consensus)
        annotations, more = apply_consensus(
            annotations,
            consensus,
            src.consensus,
            src.kind,
            source=name,
            rejected_ids={r.video_id for r in rejections},
        )
        rejections = rejections + more
    clips, rejected = ingest_annotations(
        annotations, rejections, strict=strict, progress=progress, desc=f"ingest {name}"
    )
    log.info("ingest %s: %d clips accepted, %d rejected", name, len(clips), len(rejected))
    return clips, rejected


def write_ingest(
    clips: Iterable[Clip],
    rejections: Iterable[Rejection],
    videos_path: str | os.PathLike[str],
    rejected_path: str | os.PathLike[str],
) -> None:
    """videos.parquet and rejected.parquet, schema-checked and written atomically."""
    write_table("videos", table_from_rows("videos", [c.to_row() for c in clips]), Path(videos_path))
    rows = [dataclasses.asdict(r) for r in rejections]
    write_table("rejected", table_from_rows("rejected", rows), Path(rejected_path))
