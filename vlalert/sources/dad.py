"""DAD (Dashcam Accident Dataset): 100-frame, 20 fps mp4 clips and no annotation file.

The folder says it all: `videos/{training|testing}/{positive|negative}/NNNNNN.mp4`. Positives have
the accident at frame 90 by the dataset's construction (a frame index: 4.5 s at the container's
20 fps); DAD gives no risky time, so it is 40 frames (2 s at 20 fps) before the accident unless
consensus labels give one, and no ego flag (None unless consensus).

The BADAS consensus CSV for DAD writes its times on a 30 fps clock (CONSENSUS_CLOCK_FPS): checked on
the real clips 000478, 000487 and 000512, whose consensus collision times 2.76, 3.08 and 3.00 s are
frames 83, 92 and 90 at 30 fps (contact visible) and frames 55, 62 and 60 at 20 fps (no contact).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlalert.config import SourceConfig
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.checks import FolderSpec, Problem, count_mp4, rel_tree
from vlalert.sources.common import FieldError, provenance, reason, reject, times_from
from vlalert.sources.plugin import SourceKind

FPS = 20.0
N_FRAMES = 100  # every DAD clip
EVENT_FRAME = 90
RISKY_LEAD_S = 2.0
RISKY_LEAD_FRAMES = round(RISKY_LEAD_S * FPS)
CONSENSUS_CLOCK_FPS = 30.0  # see the module docstring and README "Clocks"
PEER_TEST_SPLITS: tuple[str, ...] = ("testing",)
SPLITS: tuple[str, ...] = ("training", "testing")
LABELS: tuple[str, ...] = ("positive", "negative")
ID_DIGITS = 6
DEFAULT_FILES: tuple[str, ...] = ()  # no annotation file: the folders say it all
OBTAIN = (
    "DAD (Dashcam Accident Dataset, Chan et al., ACCV 2016): download link on its project page "
    "https://aliensunmin.github.io/project/dashcam/"
)


def default_times() -> tuple[float, float]:
    """(t_risky_s, t_event_s) of a positive by DAD's construction, in seconds of its own 20 fps clock."""
    return (EVENT_FRAME - RISKY_LEAD_FRAMES) / FPS, EVENT_FRAME / FPS


def video_id(split: str, label: str, number: int) -> str:
    """`testing-positive-000456`: DAD numbers clips per folder, so the id carries the folder."""
    return f"{split}-{label}-{number:0{ID_DIGITS}d}"


def parse_file(name: str, video: Path, split: str, label: str) -> Annotation:
    if not video.stem.isdigit():
        raise FieldError("file name", f"{video.name!r} is not a clip number NNNNNN.mp4")
    positive = label == "positive"
    t_risky, t_event = default_times() if positive else (None, None)
    lead = RISKY_LEAD_FRAMES
    prov = {
        "t_risky_s": provenance(video, f"frame {EVENT_FRAME - lead} (event - {lead} frames)", "dad-default"),
        "t_event_s": provenance(video, f"frame {EVENT_FRAME} (DAD convention)", "dad-default"),
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
        # Frame indices on DAD's own 20 fps clock: ingest places them on the probed file's fps.
        clock_fps={"t_risky_s": FPS, "t_event_s": FPS} if positive else {},
    )


def _stray(
    name: str, split: str, label: str, folder: Path, file: Path, what: str, clip: str = ""
) -> Rejection:
    """A file in a clip folder that is not taken as a clip; its id names the file unless `clip` is given."""
    clip = clip or f"{split}-{label}-{file.relative_to(folder).as_posix()}"
    return Rejection(clip, name, str(file), reason(file, clip, "file name", what))


def discover(name: str, folder: Path, split: str, label: str) -> tuple[list[Path], list[Rejection]]:
    """The clip files of one `{split}/{label}` folder, and a Rejection for every other file in it.

    A clip is a `.mp4` directly in the folder. Anything else (another extension, `.MP4`, a file in a
    subfolder) is recorded, not skipped. Two files of one clip number (`000296.mp4`, `0000296.mp4`):
    the canonical NNNNNN name is the clip and the other is rejected; without it, both are rejected.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    videos: list[Path] = []
    rejections: list[Rejection] = []
    by_number: dict[int, list[Path]] = {}
    for file in files:
        if file.parent != folder:
            what = f"in a subfolder: DAD clips lie directly in {folder} as NNNNNN.mp4; move or remove it"
            rejections.append(_stray(name, split, label, folder, file, what))
        elif file.suffix != ".mp4":
            hint = f"; rename it to {file.stem}.mp4" if file.suffix.lower() == ".mp4" else ""
            what = f"not a DAD clip: extension {file.suffix or '(none)'!r}, DAD clips are NNNNNN.mp4{hint}"
            rejections.append(_stray(name, split, label, folder, file, what))
        elif file.stem.isdigit():
            by_number.setdefault(int(file.stem), []).append(file)
        else:
            videos.append(file)  # parse_file rejects the name
    for number, same in sorted(by_number.items()):
        canonical = folder / f"{number:0{ID_DIGITS}d}.mp4"
        if len(same) == 1:
            videos += same
            continue
        names = ", ".join(f.name for f in same)
        if canonical in same:
            videos.append(canonical)
            what = f"clip number {number} is also given by {canonical.name}, which is kept ({names})"
            rejections += [_stray(name, split, label, folder, f, what) for f in same if f != canonical]
        else:
            what = f"clip number {number} is given by {names}: keep one, named {canonical.name}"
            clip = video_id(split, label, number)
            rejections += [_stray(name, split, label, folder, f, what, clip) for f in same]
    return sorted(videos), rejections


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
        videos, strays = discover(name, folder, split, label)
        rejections += strays
        for video in videos:
            try:
                annotations.append(parse_file(name, video, split, label))
            except FieldError as err:
                rejections.append(reject(name, f"{split}-{label}-{video.stem}", video, video, err))
    return annotations, rejections


def check_layout(src: Any, problems: list[Problem], warnings: list[Problem]) -> dict[str, Any]:
    """Clips in videos/{training,testing}/{positive,negative}/: one folder holding clips is enough."""
    root = Path(src.root) / "videos"
    counts = {f"{s}/{lab}": count_mp4(root / s / lab) for s in SPLITS for lab in LABELS}
    empty = [key for key, n in counts.items() if n == 0]
    what = "folder of NNNNNN.mp4 clips (DAD's published layout)"
    if len(empty) == len(counts):
        problems += [Problem(str(root / key), f"missing or empty: {what}", OBTAIN) for key in empty]
    else:
        warnings += [
            Problem(str(root / key), f"missing or empty: {what} (the others hold clips)", OBTAIN)
            for key in empty
        ]
    return {"videos": counts}


def media_folders(src: Any) -> Iterator[FolderSpec]:
    """Every file under the clip folders: the adapter records stray files in subfolders too."""
    for split in SPLITS:
        for label in LABELS:
            for rel in rel_tree(src.root, f"videos/{split}/{label}"):
                yield rel, None, False


class Dad(SourceKind):
    """The DAD plugin (vlalert.sources.plugin): the facts above and the functions of this module."""

    KIND = "dad"
    FPS = FPS
    CONSENSUS_CLOCK_FPS = CONSENSUS_CLOCK_FPS
    PEER_TEST_SPLITS = PEER_TEST_SPLITS
    DEFAULT_FILES = DEFAULT_FILES
    OBTAIN = OBTAIN
    read_annotations = staticmethod(read_annotations)
    check_layout = staticmethod(check_layout)
    media_folders = staticmethod(media_folders)

    @classmethod
    def consensus_video_id(cls, key: str) -> str:
        """The consensus CSV names DAD's test positives by their bare file number."""
        return video_id("testing", "positive", int(key)) if key.isdigit() else key
