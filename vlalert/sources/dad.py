"""DAD (Dashcam Accident Dataset): 100-frame, 20 fps mp4 clips and no annotation file.

The folder says it all: `videos/{training|testing}/{positive|negative}/NNNNNN.mp4`. Positives have
the accident at frame 90 (4.5 s) by the dataset's construction; DAD gives no risky time, so it is
the event minus 2 s unless consensus labels give one, and no ego flag (None unless consensus).
"""

from __future__ import annotations

from pathlib import Path

from vlalert.config import SourceConfig
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.common import FieldError, provenance, reject, times_from

FPS = 20.0
EVENT_FRAME = 90
RISKY_LEAD_S = 2.0
SPLITS: tuple[str, ...] = ("training", "testing")
LABELS: tuple[str, ...] = ("positive", "negative")
ID_DIGITS = 6


def video_id(split: str, label: str, number: int) -> str:
    """`testing-positive-000456`: DAD numbers clips per folder, so the id carries the folder."""
    return f"{split}-{label}-{number:0{ID_DIGITS}d}"


def parse_file(name: str, video: Path, split: str, label: str) -> Annotation:
    if not video.stem.isdigit():
        raise FieldError("file name", f"{video.name!r} is not a clip number NNNNNN.mp4")
    positive = label == "positive"
    t_event = EVENT_FRAME / FPS if positive else None
    t_risky = t_event - RISKY_LEAD_S if t_event is not None else None
    prov = {
        "t_risky_s": provenance(video, f"event - {RISKY_LEAD_S:g} s (DAD convention)", "dad-default"),
        "t_event_s": provenance(video, f"frame {EVENT_FRAME} at {FPS:g} fps (DAD convention)", "dad-default"),
    }
    return Annotation(
        video_id=video_id(split, label, int(video.stem)),
        source=name,
        path=str(video),
        fps=FPS,
        official_split=split,
        is_positive=positive,
        t_risky_s=t_risky,
        t_event_s=t_event,
        ego_involved=None,
        event_type=None,
        annotation_file=str(video),
        meta={
            "split": split,
            "label": label,
            "file": video.name,
            "provenance": prov,
            "times_from": times_from(prov, t_risky, t_event),
            "ego_from": None,
        },
    )


def read_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """One annotation per mp4 under `videos/{split}/{label}/`; badly named files become Rejections.

    check_videos is accepted for a uniform adapter interface: DAD's annotations are its video files.
    """
    root = Path(src.root) / "videos"
    folders = [(split, label, root / split / label) for split in SPLITS for label in LABELS]
    present = [f for f in folders if f[2].is_dir()]
    if not present:
        raise FileNotFoundError(
            f"DAD source {name!r}: no clip folders; expected at least one of "
            f"{', '.join(str(f[2]) for f in folders)} holding NNNNNN.mp4 files (DAD's published layout)"
        )
    annotations: list[Annotation] = []
    rejections: list[Rejection] = []
    for split, label, folder in present:
        for video in sorted(folder.glob("*.mp4")):
            try:
                annotations.append(parse_file(name, video, split, label))
            except FieldError as err:
                rejections.append(reject(name, f"{split}-{label}-{video.stem}", video, video, err))
    return annotations, rejections
