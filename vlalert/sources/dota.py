"""DoTA (Detection of Traffic Anomaly): per-clip metadata JSON and 10 fps frame folders.

`metadata_{train,val}.json` map each clip name to {video_start, video_end, anomaly_start,
anomaly_end, anomaly_class, num_frames, subset}; anomaly frames count from the clip's first frame.
`anomaly_class` reads "ego: turning" or "other: lateral": the prefix says whether the ego vehicle is
involved, the rest is the event type. Every DoTA clip holds an anomaly, so all are positive; DoTA
gives no collision time (t_event_s stays None unless consensus labels give one: the labels stage
decides what a missing event time means).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlalert.config import SourceConfig
from vlalert.frame_files import IMAGE_SUFFIXES
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.checks import (
    MP4,
    FolderSpec,
    Problem,
    count_mp4,
    frame_clip,
    need_one_of,
    rel_subdirs,
    subdirs,
)
from vlalert.sources.common import (
    FieldError,
    annotation_candidates,
    confined,
    frame_folder,
    json_value,
    parse_float,
    parse_int,
    provenance,
    reason,
    reject,
    require,
    times_from,
)
from vlalert.sources.plugin import SourceKind

FPS = 10.0
# The BADAS consensus CSV for DoTA writes times on DoTA's own 10 fps clock: on the real val metadata
# its collision times lie a median 1.0 s after anomaly_start and none past the clip's end (on a
# 30 fps clock 511 of 598 would be past the end).
CONSENSUS_CLOCK_FPS = 10.0
PEER_TEST_SPLITS: tuple[str, ...] = ("val",)  # DoTA publishes train/val; peers report on val
SUBSETS: tuple[str, ...] = ("train", "val")


def metadata_file(subset: str) -> str:
    """The metadata JSON DoTA publishes for one subset."""
    return f"metadata_{subset}.json"


DEFAULT_FILES: tuple[str, ...] = tuple(metadata_file(subset) for subset in SUBSETS)
OBTAIN = (
    "DoTA: follow the instructions of https://github.com/MoonBlvd/Detection-of-Traffic-Anomaly "
    "(metadata_train.json / metadata_val.json are in its dataset/ folder; the frames from the "
    "download link in its README, or extracted from the YouTube videos with its scripts at 10 fps)"
)
FIELDS: tuple[str, ...] = (
    "video_start",
    "video_end",
    "anomaly_start",
    "anomaly_end",
    "anomaly_class",
    "num_frames",
    "subset",
)
KEY_FIELD = "clip_name (JSON key)"
EGO_PREFIXES = {"ego": True, "other": False}


def parse_class(value: Any) -> tuple[bool, str]:
    """ "ego: turning" -> (True, "turning"); "other: lateral" -> (False, "lateral")."""
    if not isinstance(value, str) or ":" not in value:
        raise FieldError("anomaly_class", f"{value!r} is not of the form 'ego: <type>' or 'other: <type>'")
    prefix, _, kind = value.partition(":")
    prefix = prefix.strip().lower()
    if prefix not in EGO_PREFIXES:
        raise FieldError("anomaly_class", f"{value!r} starts with {prefix!r}, expected 'ego' or 'other'")
    return EGO_PREFIXES[prefix], kind.strip()


def parse_entry(name: str, clip_name: str, entry: Any, meta_file: Path, root: Path) -> Annotation:
    for base, file in ((root / "frames", clip_name), (root / "videos", f"{clip_name}.mp4")):
        confined(base, file, KEY_FIELD)  # the key is joined into paths below and in _locate
    if not isinstance(entry, dict):
        raise FieldError(
            KEY_FIELD, f"entry is a {type(entry).__name__}, expected an object with {list(FIELDS)}"
        )
    ego, event_type = parse_class(require(entry.get("anomaly_class"), "anomaly_class"))
    start = require(parse_float(entry.get("anomaly_start"), "anomaly_start"), "anomaly_start")
    n_frames = parse_int(entry.get("num_frames"), "num_frames")
    subset = entry.get("subset")
    if subset is not None and not isinstance(subset, str):
        raise FieldError("subset", f"{subset!r} is not a split name")
    t_risky = start / FPS
    prov = {
        "t_risky_s": provenance(meta_file, "anomaly_start", "annotation"),
        "n_frames": provenance(meta_file, "num_frames", "annotation"),
        "ego_involved": provenance(meta_file, "anomaly_class", "annotation"),
    }
    return Annotation(
        video_id=clip_name,
        source=name,
        path=str(root / "frames" / clip_name),
        fps=FPS,
        official_split=subset,
        is_positive=True,
        t_risky_s=t_risky,
        t_event_s=None,
        ego_involved=ego,
        event_type=event_type or None,
        annotation_file=str(meta_file),
        n_frames=n_frames,
        meta={
            **{k: json_value(v) for k, v in entry.items()},
            "provenance": prov,
            "times_from": times_from(prov, t_risky, None),
            "ego_from": "annotation",
        },
        clock_fps={"t_risky_s": FPS},  # anomaly_start is a frame index
    )


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); expected DoTA metadata {{clip_name: {{...}}}}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: top level is a {type(data).__name__}; expected DoTA metadata, an object "
            f"{{clip_name: {{{', '.join(FIELDS)}}}}}"
        )
    return data


def video_candidates(root: Path, clip_name: str) -> list[Path]:
    return [root / "frames" / clip_name, root / "videos" / f"{clip_name}.mp4"]


def _locate(root: Path, clip_name: str) -> Path | None:
    folder = frame_folder(root / "frames" / clip_name)
    if folder is not None:
        return folder
    video = root / "videos" / f"{clip_name}.mp4"
    return video if video.is_file() else None


def _unannotated(name: str, root: Path, named: set[str], files: list[Path]) -> list[Rejection]:
    """Frame folders and videos that no metadata entry names."""
    found: list[tuple[str, Path]] = []
    if (root / "frames").is_dir():
        for clip in sorted(p for p in (root / "frames").iterdir() if p.is_dir()):
            folder = frame_folder(clip)
            if folder is not None:
                found.append((clip.name, folder))
    if (root / "videos").is_dir():
        found += [(v.stem, v) for v in sorted((root / "videos").glob("*.mp4"))]
    names = " or ".join(str(f) for f in files)
    return [
        Rejection(
            video_id=clip_name,
            source=name,
            path=str(path),
            reason=reason(path, clip_name, KEY_FIELD, f"video has no entry in {names}"),
        )
        for clip_name, path in found
        if clip_name not in named
    ]


def read_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """Every clip of the metadata JSON files present; clips that cannot be used become Rejections.

    check_videos=False parses the metadata only (DoTA's frames are a separate, large download).
    """
    root = Path(src.root)
    candidates = annotation_candidates(src, list(DEFAULT_FILES))
    files = [p for p in candidates if p.is_file()]
    if not files:
        raise FileNotFoundError(
            f"DoTA source {name!r}: no metadata file; expected {' or '.join(str(p) for p in candidates)} "
            f"(JSON objects {{clip_name: {{{', '.join(FIELDS)}}}}} as published with DoTA)"
        )
    annotations: list[Annotation] = []
    rejections: list[Rejection] = []
    named: set[str] = set()
    for meta_file in files:
        for clip_name, entry in read_metadata(meta_file).items():
            named.add(clip_name)
            try:
                ann = parse_entry(name, clip_name, entry, meta_file, root)
            except FieldError as err:
                rejections.append(reject(name, clip_name, root / "frames" / clip_name, meta_file, err))
                continue
            if check_videos:
                path = _locate(root, clip_name)
                if path is None:
                    frames, video = video_candidates(root, clip_name)
                    err = FieldError(
                        KEY_FIELD, f"video file missing: expected frame images in {frames} or {video}"
                    )
                    rejections.append(reject(name, clip_name, root / "frames" / clip_name, meta_file, err))
                    continue
                ann.path = str(path)
            annotations.append(ann)
    if check_videos:
        rejections += _unannotated(name, root, named, files)
    return annotations, rejections


def check_layout(src: Any, problems: list[Problem], warnings: list[Problem]) -> dict[str, Any]:
    """A metadata JSON, and clips as frames/<clip>/ folders or videos/<clip>.mp4."""
    root = Path(src.root)
    metas = need_one_of(
        annotation_candidates(src, DEFAULT_FILES),
        "DoTA metadata JSON ({clip_name: {video_start, ..., anomaly_class, num_frames, subset}})",
        OBTAIN,
        problems,
        warnings,
        all_expected=not src.annotations,
    )
    frame_clips = sum(1 for clip in subdirs(root / "frames") if frame_clip(clip))
    video_clips = count_mp4(root / "videos")
    if frame_clips + video_clips == 0 and src.videos:
        problems.append(
            Problem(str(root / "frames"), "no clip frames: expected frames/<clip>/NNNNNN.jpg", OBTAIN)
        )
        problems.append(
            Problem(str(root / "videos"), "or no clip videos: expected videos/<clip>.mp4", OBTAIN)
        )
    return {"annotation_files": [str(p) for p in metas], "clips": frame_clips + video_clips}


def media_folders(src: Any) -> Iterator[FolderSpec]:
    for clip in rel_subdirs(src.root, "frames"):
        yield clip, IMAGE_SUFFIXES, True
        yield f"{clip}/images", IMAGE_SUFFIXES, True
    yield "videos", MP4, False


class Dota(SourceKind):
    """The DoTA plugin (vlalert.sources.plugin): the facts above and the functions of this module."""

    KIND = "dota"
    FPS = FPS
    CONSENSUS_CLOCK_FPS = CONSENSUS_CLOCK_FPS
    PEER_TEST_SPLITS = PEER_TEST_SPLITS
    DEFAULT_FILES = DEFAULT_FILES
    OBTAIN = OBTAIN
    read_annotations = staticmethod(read_annotations)
    check_layout = staticmethod(check_layout)
    media_folders = staticmethod(media_folders)
