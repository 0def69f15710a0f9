"""DADA-2000 (driver attention in accident scenarios), as distributed: frame folders and one sheet.

The sheet `DADA2000_video_annotations.xlsx` holds its table on the SECOND sheet (the first is a
legend); a CSV export of that table is read the same way. Clips are frame folders
`{type}/{video:03d}/images/NNNN.jpg` at 30 fps, named `{type}_{video:03d}`. Times are frame numbers
divided by the fps, as DESIGN.md says; -1 in a frame column means "not given".
Categories 1-18 are the paper's "ego-car involved" group; consensus labels override this.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vlalert.config import SourceConfig
from vlalert.frame_files import IMAGE_SUFFIXES
from vlalert.sources.base import Annotation, Rejection
from vlalert.sources.checks import FolderSpec, Problem, frame_clip, need_one_of, rel_subdirs, subdirs
from vlalert.sources.common import (
    FieldError,
    annotation_candidates,
    frame_folder,
    json_value,
    parse_int,
    provenance,
    reason,
    reject,
    require,
    times_from,
)
from vlalert.sources.plugin import SourceKind

FPS = 30.0
CONSENSUS_CLOCK_FPS = 30.0  # the clips' own clock (no evidence of another; README "Clocks")
PEER_TEST_SPLITS: tuple[str, ...] = ("test",)
DEFAULT_FILES: tuple[str, ...] = ("DADA2000_video_annotations.xlsx", "DADA2000_video_annotations.csv")
OBTAIN = (
    "DADA-2000 is distributed by its authors, not by a hub: follow the download link and terms on "
    "https://github.com/JWFangit/LOTVS-DADA (research use only; unpack the frames with its "
    "python/extract_images.py); the annotation sheet DADA2000_video_annotations.xlsx comes with it"
)
EGO_CATEGORIES = range(1, 19)

VIDEO = "video"
TYPE = "type"
ACCIDENT = "whether an accident occurred (1/0)"
ABNORMAL_START = "abnormal start frame"
ACCIDENT_FRAME = "accident frame"
ABNORMAL_END = "abnormal end frame"
TOTAL_FRAMES = "total frames"
COLUMNS: tuple[str, ...] = (
    VIDEO,
    "weather(sunny,rainy,snowy,foggy)1-4",
    "light(day,night)1-2",
    "scenes(highway,tunnel,mountain,urban,rural)1-5",
    "linear(arterials,curve,intersection,t-junction,ramp) 1-5",
    TYPE,
    ACCIDENT,
    ABNORMAL_START,
    ACCIDENT_FRAME,
    ABNORMAL_END,
    TOTAL_FRAMES,
    "[0,tai]",
    "[tai,tco]",
    "[tai,tae]",
    "[tco,tae]",
    "[tae,end]",
    "texts",
    "causes",
    "measures",
)
REQUIRED: tuple[str, ...] = (VIDEO, TYPE, ACCIDENT, ABNORMAL_START, ACCIDENT_FRAME, TOTAL_FRAMES)
HEADER_SEARCH_ROWS = 10


def _clean_header(value: Any) -> str:
    # Spreadsheet headers often carry line breaks or doubled spaces; compare them collapsed.
    return " ".join(str(value).split()) if value is not None else ""


def _table(rows: Iterable[Iterable[Any]], path: Path) -> list[dict[str, Any]]:
    """Rows under the header (found in the first rows: a legend or title may sit above it)."""
    rows = iter(rows)
    for _ in range(HEADER_SEARCH_ROWS):
        try:
            header = [_clean_header(c) for c in next(rows)]
        except StopIteration:
            break
        if VIDEO in header and TYPE in header:
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ValueError(f"{path}: DADA-2000 annotation table lacks the columns {missing}")
            table = []
            for values in rows:
                values = list(values)
                if all(v is None or str(v).strip() == "" for v in values):
                    continue  # blank spreadsheet rows carry no clip
                table.append({h: v for h, v in zip(header, values, strict=False) if h})
            return table
    raise ValueError(
        f"{path}: no DADA-2000 header row (with columns {VIDEO!r} and {TYPE!r}) in its first "
        f"{HEADER_SEARCH_ROWS} rows; expected the columns {list(COLUMNS)}"
    )


def _csv_delimiter(first_line: str) -> str:
    """',' or ';' (spreadsheet exports in many locales, where the decimal comma takes ',').

    Counting separators would mislead: DADA's own header names hold commas ("weather(sunny,rainy,...").
    The delimiter is the one that splits the header into cells holding `video` and `type`.
    """
    for delimiter in (";", ","):
        cells = {_clean_header(c) for c in next(csv.reader([first_line], delimiter=delimiter), [])}
        if VIDEO in cells and TYPE in cells:
            return delimiter
    return ","


def read_sheet(path: Path) -> list[dict[str, Any]]:
    """The annotation table of the xlsx or of its CSV export (`,` or `;`), as header -> cell dicts.

    The published workbook holds the table on its second sheet (the first is a legend), but copies
    re-saved by users move it: every sheet is searched, and the first holding the header is read.
    """
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                delimiter = _csv_delimiter(fh.readline())
                fh.seek(0)
                return _table(csv.reader(fh, delimiter=delimiter), path)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a text CSV file ({err})") from None
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # zipfile.BadZipFile, InvalidFileException, KeyError ...
        raise ValueError(f"{path}: not a readable xlsx workbook: {err}") from None
    try:
        problems = []
        for sheet in wb.worksheets:
            try:
                return _table(sheet.iter_rows(values_only=True), path)
            except ValueError as err:
                problems.append(f"sheet {sheet.title!r}: {str(err).removeprefix(f'{path}: ')}")
        raise ValueError(f"{path}: no sheet holds the DADA-2000 annotation table ({'; '.join(problems)})")
    finally:
        wb.close()


def read_split_files(files: dict[str, str]) -> dict[str, str]:
    """clip id -> official split from DADA-2000's `{train,val,test}_file.json` lists.

    Entries are `[["<category>", "<video>"], "<index>"]`, e.g. `[["1","022"],"001"]` names clip `1_022`.
    A clip listed in two splits is an error naming both files.
    """
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    for split, file in files.items():
        path = Path(file)
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: DADA-2000 split file for {split!r} not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a JSON split list ({err})") from None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a JSON list of [[category, video], index] entries")
        for i, entry in enumerate(entries):
            try:
                (category, video), _index = entry
                clip = f"{int(category)}_{int(video):03d}"
            except (TypeError, ValueError):
                raise ValueError(
                    f'{path}: entry {i}: {entry!r} is not [["<category>", "<video>"], "<index>"]'
                ) from None
            if clip in out and out[clip] != split:
                raise ValueError(f"{path}: clip {clip} is also listed in {where[clip]} ({out[clip]})")
            out[clip], where[clip] = split, str(path)
    return out


def _frame(row: dict[str, Any], column: str) -> int | None:
    value = parse_int(row.get(column), column)
    return None if value is None or value == -1 else value


def clip_dir(root: Path, category: int, video: int) -> Path:
    return root / str(category) / f"{video:03d}"


def parse_row(name: str, row: dict[str, Any], sheet: Path, root: Path) -> Annotation:
    video = require(parse_int(row.get(VIDEO), VIDEO), VIDEO)
    category = require(parse_int(row.get(TYPE), TYPE), TYPE)
    if video < 0:
        raise FieldError(VIDEO, f"{row.get(VIDEO)!r} is negative")
    if category < 1:
        raise FieldError(TYPE, f"{row.get(TYPE)!r} is not a category number (1, 2, ...)")
    accident = parse_int(row.get(ACCIDENT), ACCIDENT)
    if accident not in (0, 1):
        raise FieldError(ACCIDENT, f"{row.get(ACCIDENT)!r} is not 1 or 0")
    start, crash = _frame(row, ABNORMAL_START), _frame(row, ACCIDENT_FRAME)
    _frame(row, ABNORMAL_END)  # parsed only to reject a malformed cell; kept in meta
    total = _frame(row, TOTAL_FRAMES)
    positive = accident == 1
    # A negative (no accident) keeps its abnormal-interval frames in meta only: it has no event.
    t_risky = start / FPS if positive and start is not None else None
    t_event = crash / FPS if positive and crash is not None else None
    prov = {
        "t_risky_s": provenance(sheet, ABNORMAL_START, "annotation"),
        "t_event_s": provenance(sheet, ACCIDENT_FRAME, "annotation"),
        "n_frames": provenance(sheet, TOTAL_FRAMES, "annotation"),
        "ego_involved": provenance(sheet, TYPE, "dada-category"),
    }
    video_id = f"{category}_{video:03d}"
    frame_clock = {k: FPS for k, v in (("t_risky_s", t_risky), ("t_event_s", t_event)) if v is not None}
    return Annotation(
        video_id=video_id,
        source=name,
        path=str(clip_dir(root, category, video) / "images"),
        fps=FPS,
        official_split=None,
        is_positive=positive,
        t_risky_s=t_risky,
        t_event_s=t_event,
        ego_involved=category in EGO_CATEGORIES,
        event_type=None,
        annotation_file=str(sheet),
        n_frames=total,
        meta={
            **{k: json_value(v) for k, v in row.items()},
            "category": category,
            "clip_number": video,
            "provenance": prov,
            "times_from": times_from(prov, t_risky, t_event),
            "ego_from": "dada-category",
        },
        clock_fps=frame_clock,  # frame numbers
    )


def _find_sheet(name: str, src: SourceConfig) -> Path:
    candidates = annotation_candidates(src, list(DEFAULT_FILES))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"DADA-2000 source {name!r}: no annotation sheet; expected {' or '.join(str(p) for p in candidates)} "
        f"(the xlsx with the table on its second sheet, or its CSV export, columns {list(COLUMNS)})"
    )


def _row_id(row: dict[str, Any], line: int) -> str:
    try:
        return f"{parse_int(row.get(TYPE), TYPE)}_{parse_int(row.get(VIDEO), VIDEO):03d}"
    except (FieldError, TypeError, ValueError):
        return f"<row {line}>"


def _unannotated(name: str, root: Path, named: set[str], sheet: Path) -> list[Rejection]:
    """Frame folders that no row names (a row rejected for a bad field still names its clip)."""
    out = []
    for cat_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        for clip in sorted(p for p in cat_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            video_id = f"{int(cat_dir.name)}_{int(clip.name):03d}"
            folder = frame_folder(clip)
            if folder is None or video_id in named:
                continue
            out.append(
                Rejection(
                    video_id=video_id,
                    source=name,
                    path=str(folder),
                    reason=reason(folder, video_id, VIDEO, f"frame folder has no annotation row in {sheet}"),
                )
            )
    return out


def read_annotations(
    name: str, src: SourceConfig, *, check_videos: bool = True
) -> tuple[list[Annotation], list[Rejection]]:
    """Every row of the sheet; rows that cannot be used, and frame folders no row names, become Rejections."""
    root = Path(src.root)
    sheet = _find_sheet(name, src)
    annotations: list[Annotation] = []
    rejections: list[Rejection] = []
    named: set[str] = set()
    splits = read_split_files(src.split_files) if src.split_files else {}
    # Line numbers are counted from the first table row; they only label rows without a usable id.
    for line, row in enumerate(read_sheet(sheet), start=1):
        named.add(_row_id(row, line))
        try:
            ann = parse_row(name, row, sheet, root)
        except FieldError as err:
            rejections.append(reject(name, _row_id(row, line), sheet, sheet, err))
            continue
        if check_videos:
            category, video = ann.meta["category"], ann.meta["clip_number"]
            folder = frame_folder(clip_dir(root, category, video))
            if folder is None:
                expected = clip_dir(root, category, video)
                images = expected / "images"
                what = f"video file missing: expected frame images (.jpg/.png) in {images} or {expected}"
                rejections.append(reject(name, ann.video_id, images, sheet, FieldError(VIDEO, what)))
                continue
            ann.path = str(folder)
        ann.official_split = splits.get(ann.video_id)
        annotations.append(ann)
    if check_videos and root.is_dir():
        rejections += _unannotated(name, root, named, sheet)
    return annotations, rejections


def check_layout(src: Any, problems: list[Problem], warnings: list[Problem]) -> dict[str, Any]:
    """The annotation sheet, the split lists named in the config, and frame folders {type}/{NNN}/."""
    root = Path(src.root)
    sheets = need_one_of(
        annotation_candidates(src, DEFAULT_FILES),
        "the DADA-2000 annotation sheet (xlsx with the table on its second sheet, or its CSV export)",
        OBTAIN,
        problems,
        warnings,
        all_expected=False,
    )
    clips = sum(
        1
        for category in subdirs(root)
        if category.name.isdigit()
        for clip in subdirs(category)
        if clip.name.isdigit() and frame_clip(clip)
    )
    for split, file in sorted((src.split_files or {}).items()):
        if not Path(file).is_file():
            problems.append(Problem(file, f"missing: the official {split} split list (split_files)", OBTAIN))
    if clips == 0 and src.videos:
        problems.append(
            Problem(
                str(root / "<type>" / "<NNN>" / "images"), "no clip frame folders (NNNN.jpg images)", OBTAIN
            )
        )
    return {"annotation_files": [str(p) for p in sheets], "clips": clips}


def media_folders(src: Any) -> Iterator[FolderSpec]:
    for category in rel_subdirs(src.root, "", digits=True):
        for clip in rel_subdirs(src.root, category, digits=True):
            yield clip, IMAGE_SUFFIXES, True
            yield f"{clip}/images", IMAGE_SUFFIXES, True


class Dada2000(SourceKind):
    """The DADA-2000 plugin (vlalert.sources.plugin): the facts above and the functions of this module."""

    KIND = "dada2000"
    FPS = FPS
    CONSENSUS_CLOCK_FPS = CONSENSUS_CLOCK_FPS
    PEER_TEST_SPLITS = PEER_TEST_SPLITS
    DEFAULT_FILES = DEFAULT_FILES
    OBTAIN = OBTAIN
    read_annotations = staticmethod(read_annotations)
    check_layout = staticmethod(check_layout)
    media_folders = staticmethod(media_folders)
