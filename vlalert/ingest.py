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
from vlalert.sources.consensus import ALERT, COLLISION, Decision, apply_consensus, read_consensus
from vlalert.sources.registry import adapter_for, read_source_annotations
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


def on_video_clock(ann: Annotation, fps: float) -> Annotation:
    """`ann` with every time moved from the clock it was written on to seconds of the video at `fps`.

    A time T written on a clock of c fps is frame T * c, shown at T * c / fps s of the video. The
    frame and the clock go into the provenance, so a label can be traced to the frame it came from.
    Applied consensus times (meta["consensus"]) get their seconds in meta["consensus_s"] too (the
    gate's consensus provider reads them there, never the raw CSV cells).
    """
    meta = dict(ann.meta)
    prov = {k: dict(v) for k, v in meta.get("provenance", {}).items()}

    def seconds(value: float, clock: float | None) -> float:  # the one conversion (None: already seconds)
        return value * clock / fps if clock else value

    changes: dict[str, float] = {}
    for attr, clock in ann.clock_fps.items():
        value = getattr(ann, attr)
        if value is None:
            continue
        changes[attr] = seconds(value, clock)
        prov.setdefault(attr, {}).update(clock_fps=clock, frame=round(value * clock, 6), written=value)
    if meta.get("consensus") is not None:
        clock = meta.get("consensus_clock_fps")
        meta["consensus_s"] = {
            k: (seconds(float(v), clock) if isinstance(v, (int, float)) else None)
            for k, v in meta["consensus"].items()
            if k in (ALERT, COLLISION)
        }
    meta["provenance"] = prov
    return dataclasses.replace(ann, meta=meta, clock_fps={}, **changes)


def check_clip(ann: Annotation, info: VideoInfo) -> Clip | Rejection:
    """Accept `ann` as a Clip of the probed video, or reject it with every problem found.

    Times are first placed on the video's own clock (`on_video_clock`); a time past the clip's end
    or a collision before the alert is a rejection with the reason, never clamped.
    """
    fps = info.fps
    if fps is None or not math.isfinite(fps) or fps <= 0:
        what = f"unknown fps: the source gives {ann.fps} and the video gives {info.fps}"
        return _reject(ann, [reason(ann.path, ann.video_id, "fps", what)])
    ann = on_video_clock(ann, fps)
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


def annotation_info(ann: Annotation) -> VideoInfo | Rejection:
    """A source placed without videos (`videos: false`): frame count and fps from the annotation.

    Width and height are 0: no stage after the benchmark may run on such a source (config checks it).
    """
    problems = []
    if ann.n_frames is None or ann.n_frames <= 0:
        problems.append(_problem(ann, "n_frames", "no frame count in the annotation, and videos is false"))
    if ann.fps is None or not math.isfinite(ann.fps) or ann.fps <= 0:
        problems.append(reason(ann.annotation_file, ann.video_id, "fps", "no fps, and videos is false"))
    if problems:
        return _reject(ann, problems)
    return VideoInfo(n_frames=int(ann.n_frames), fps=float(ann.fps), width=0, height=0)


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
    videos: bool = True,
) -> tuple[list[Clip], list[Rejection]]:
    """Probe and check each annotation; `rejections` (from earlier steps) are passed through first.

    videos False: nothing is probed, the annotation's frame count and fps stand for the video's.
    """
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
        info = probe_clip(ann) if videos else annotation_info(ann)
        result = info if isinstance(info, Rejection) else check_clip(ann, info)
        if isinstance(result, Rejection):
            add(result)
        else:
            clips.append(result)
    return clips, rejected


def consensus_clock(src: SourceConfig) -> float | None:
    """The clock of the source's consensus CSV: the config's, else the kind's evidence-based default."""
    if src.consensus_clock_fps is not None:
        return src.consensus_clock_fps
    return adapter_for(src.kind).CONSENSUS_CLOCK_FPS


def ingest_source(
    name: str, src: SourceConfig, *, strict: bool = False, progress: bool = True
) -> tuple[list[Clip], list[Rejection], list[Decision]]:
    """Read one source in its own format: accepted clips, rejections, and one decision per consensus row.

    A missing or unreadable annotation file (or consensus CSV) raises: that is a setup error for the
    whole source, not a property of one clip.
    """
    annotations, rejections = read_source_annotations(name, src, check_videos=src.videos)
    decisions: list[Decision] = []
    if src.consensus:
        consensus = read_consensus(src.consensus)
        annotations, more, decisions = apply_consensus(
            annotations,
            consensus,
            src.consensus,
            adapter_for(src.kind),
            source=name,
            rejected_ids={r.video_id for r in rejections},
            clock_fps=consensus_clock(src),
        )
        rejections = rejections + more
    clips, rejected = ingest_annotations(
        annotations, rejections, strict=strict, progress=progress, desc=f"ingest {name}", videos=src.videos
    )
    decisions = _settle_decisions(decisions, rejected)
    log.info("ingest %s: %d clips accepted, %d rejected", name, len(clips), len(rejected))
    return clips, rejected, decisions


def _settle_decisions(decisions: list[Decision], rejected: list[Rejection]) -> list[Decision]:
    """An applied row whose clip ingest then rejected (e.g. a time past the clip's end) says so."""
    why = {r.video_id: r.reason for r in rejected}
    out = []
    for d in decisions:
        if d.decision.startswith("applied") and d.video_id in why:
            d = dataclasses.replace(d, decision="rejected", reason=why[d.video_id])
        out.append(d)
    return out


def write_ingest(
    clips: Iterable[Clip],
    rejections: Iterable[Rejection],
    videos_path: str | os.PathLike[str],
    rejected_path: str | os.PathLike[str],
    decisions: Iterable[Decision] = (),
    consensus_path: str | os.PathLike[str] | None = None,
) -> None:
    """videos.parquet, rejected.parquet (and the consensus decisions), schema-checked, written atomically."""
    write_table("videos", table_from_rows("videos", [c.to_row() for c in clips]), Path(videos_path))
    rows = [dataclasses.asdict(r) for r in rejections]
    write_table("rejected", table_from_rows("rejected", rows), Path(rejected_path))
    if consensus_path is not None:
        rows = [dataclasses.asdict(d) for d in decisions]
        write_table("consensus", table_from_rows("consensus", rows), Path(consensus_path))
