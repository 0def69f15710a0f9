"""Nexar collision prediction (Hugging Face `nexar-ai/nexar_collision_prediction`).

Layout under root: `train.csv`, `test-public.csv`, `test-private.csv` (any may be absent), columns
`id,time_of_event,time_of_alert,target`, and videos `{split}/{positive|negative}/{id}.mp4` (or
`{split}/{id}.mp4`). Ids are integers zero-padded to 5 digits; times are seconds, empty for negatives.
Nexar events always involve the ego vehicle, so positives are ego-involved and negatives are not.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlalert.config import SourceConfig
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.checks import MP4, FolderSpec, Problem, count_mp4, need_one_of
from vlalert.sources.common import (
    FieldError,
    annotation_candidates,
    parse_float,
    parse_int,
    provenance,
    reason,
    reject,
    require,
    times_from,
)
from vlalert.sources.plugin import SourceKind

FPS = 30.0
CONSENSUS_CLOCK_FPS: float | None = None  # no BADAS consensus file for Nexar: seconds of the video
PEER_TEST_SPLITS: tuple[str, ...] = ("test-public", "test-private")
SPLITS: tuple[str, ...] = ("train", "test-public", "test-private")


def split_file(split: str) -> str:
    """The annotation CSV of one split: its name is the split's (`test-public.csv`)."""
    return f"{split}.csv"


DEFAULT_FILES: tuple[str, ...] = tuple(split_file(split) for split in SPLITS)
COLUMNS: tuple[str, ...] = ("id", "time_of_event", "time_of_alert", "target")
HUB_URL = "https://huggingface.co"
HUB_REPO = "nexar-ai/nexar_collision_prediction"
OBTAIN = (
    f"download it automatically with a `download` entry (repo_id: {HUB_REPO}, source: <this source>), "
    f"or by hand from {HUB_URL}/datasets/{HUB_REPO}"
)


def normalise_id(value: Any) -> str:
    """ "12", "00012" and 12 all name clip "00012"."""
    number = require(parse_int(value, "id"), "id")
    if number < 0:
        raise FieldError("id", f"{value!r} is negative")
    return f"{number:05d}"


def _label_dir(target: int) -> str:
    return "positive" if target == 1 else "negative"


def video_candidates(root: Path, split: str, video_id: str, target: int) -> list[Path]:
    return [root / split / _label_dir(target) / f"{video_id}.mp4", root / split / f"{video_id}.mp4"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: not a Nexar annotation CSV: missing columns {missing}; "
                    f"expected the header {','.join(COLUMNS)}, found {','.join(header) or '(empty file)'}"
                )
            return [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text CSV file ({err})") from None


def parse_row(name: str, row: dict[str, str], split: str, csv_path: Path, root: Path) -> Annotation:
    """One CSV row as an Annotation (path: the preferred video location, checked by the caller)."""
    video_id = normalise_id(row.get("id"))
    target = parse_int(row.get("target"), "target")
    if target not in (0, 1):
        raise FieldError("target", f"{row.get('target')!r} is not 0 or 1")
    t_event = parse_float(row.get("time_of_event"), "time_of_event")
    t_alert = parse_float(row.get("time_of_alert"), "time_of_alert")
    if target == 1 and t_event is None:
        # Never invent an event time: without it there is no post-event cut and no scoring window.
        raise FieldError("time_of_event", "positive clip (target 1) without time_of_event")
    prov = {
        "t_risky_s": provenance(csv_path, "time_of_alert", "annotation"),
        "t_event_s": provenance(csv_path, "time_of_event", "annotation"),
        "ego_involved": provenance(csv_path, "target", "annotation"),
    }
    meta = {
        "id": row.get("id"),
        "time_of_event": t_event,
        "time_of_alert": t_alert,
        "target": target,
        "provenance": prov,
        "times_from": times_from(prov, t_alert, t_event),
        "ego_from": "annotation",
    }
    return Annotation(
        video_id=video_id,
        source=name,
        path=str(video_candidates(root, split, video_id, target)[0]),
        fps=FPS,
        official_split=split,
        is_positive=target == 1,
        t_risky_s=t_alert,
        t_event_s=t_event,
        ego_involved=target == 1,
        event_type=None,
        annotation_file=str(csv_path),
        meta=meta,
    )


def _stem_id(stem: str) -> str:
    try:
        return normalise_id(stem)
    except FieldError:
        return stem


def _row_id(row: dict[str, str], line: int) -> str:
    """The clip a row names, for its rejection: the normalised id where it parses."""
    raw = (row.get("id") or "").strip()
    if not raw:
        return f"<row {line}>"
    try:
        return normalise_id(raw)
    except FieldError:
        return raw


def _annotation_files(src: SourceConfig) -> list[tuple[str, Path]]:
    """(split, CSV): a CSV's split is its name (`test-public.csv` holds split test-public)."""
    return [(p.stem, p) for p in annotation_candidates(src, DEFAULT_FILES)]


def _unannotated(
    name: str, root: Path, splits: list[str], named: set[tuple[str, str]], files: list[Path]
) -> list[Rejection]:
    """Videos that no row names (a row rejected for a bad field still names its video)."""
    out = []
    for split in splits:
        folders = [root / split / "positive", root / split / "negative", root / split]
        for folder in folders:
            if not folder.is_dir():
                continue
            for video in sorted(folder.glob("*.mp4")):
                video_id = _stem_id(video.stem)
                if (split, video_id) in named:
                    continue
                names = (
                    " or ".join(str(f) for f in files if f.stem == split)
                    or f"{root / split_file(split)} (absent)"
                )
                what = f"video file has no annotation row in {names}"
                out.append(Rejection(video_id, name, str(video), reason(video, video_id, "id", what)))
    return out


def read_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """Every row of the split CSVs present under root; rows that cannot be used become Rejections.

    check_videos=False parses the CSVs only (no video lookup), e.g. to inspect annotations before
    the videos are downloaded.
    """
    root = Path(src.root)
    files = _annotation_files(src)
    present = [(split, path) for split, path in files if path.is_file()]
    if not present:
        expected = ", ".join(str(p) for _, p in files)
        raise FileNotFoundError(
            f"Nexar source {name!r}: no annotation CSV found; expected at least one of {expected} "
            f"(columns {','.join(COLUMNS)}, as published with {HUB_REPO})"
        )
    annotations: list[Annotation] = []
    rejections: list[Rejection] = []
    named: set[tuple[str, str]] = set()
    for split, csv_path in present:
        for line, row in enumerate(_read_csv(csv_path), start=2):
            raw_id = _row_id(row, line)
            named.add((split, raw_id))
            try:
                ann = parse_row(name, row, split, csv_path, root)
            except FieldError as err:
                rejections.append(reject(name, raw_id, csv_path, csv_path, err))
                continue
            if check_videos:
                candidates = video_candidates(root, split, ann.video_id, int(ann.is_positive))
                found = next((p for p in candidates if p.is_file()), None)
                if found is None:
                    expected = " or ".join(str(p) for p in candidates)
                    err = FieldError("id", f"video file missing: expected {expected}")
                    rejections.append(reject(name, ann.video_id, candidates[0], csv_path, err))
                    continue
                ann.path = str(found)
            annotations.append(ann)
    if check_videos:
        splits = sorted({s for s, _ in files} | set(SPLITS))
        rejections += _unannotated(name, root, splits, named, [p for _, p in present])
    return annotations, rejections


def check_layout(src: Any, problems: list[Problem], warnings: list[Problem]) -> dict[str, Any]:
    """At least one split CSV, and videos for each CSV present."""
    root = Path(src.root)
    csvs = need_one_of(
        annotation_candidates(src, DEFAULT_FILES),
        f"a Nexar annotation CSV (columns {','.join(COLUMNS)})",
        OBTAIN,
        problems,
        warnings,
        all_expected=not src.annotations,
    )
    videos = {}
    for csv_path in csvs:
        split = csv_path.stem
        folders = [root / split / "positive", root / split / "negative", root / split]
        videos[split] = sum(count_mp4(f) for f in folders)
        if videos[split] == 0:
            problems.append(
                Problem(
                    str(root / split),
                    f"no videos for {csv_path.name}: expected {root / split}/{{positive,negative}}/NNNNN.mp4",
                    OBTAIN,
                )
            )
    return {"annotation_files": [str(p) for p in csvs], "videos": videos}


def media_folders(src: Any) -> Iterator[FolderSpec]:
    for split in sorted(set(SPLITS) | {p.stem for p in annotation_candidates(src, DEFAULT_FILES)}):
        for rel in (split, f"{split}/positive", f"{split}/negative"):
            yield rel, MP4, False


class Nexar(SourceKind):
    """The Nexar plugin (vlalert.sources.plugin): the facts above and the functions of this module."""

    KIND = "nexar"
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
        return f"{int(key):05d}" if key.isdigit() else key
