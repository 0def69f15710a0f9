"""Parsing helpers shared by the source adapters, and the one format of a rejection reason.

Every reason reads "<file>: clip <id>: field <field>: <what is wrong>", so a user can go straight to
the file and row to fix, whichever adapter or check produced it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlalert.config import SourceConfig
from vlalert.frame_files import list_frame_files
from vlalert.sources.base import Rejection


class FieldError(ValueError):
    """One field of one annotation row that cannot be parsed; `field` names the source's own column."""

    def __init__(self, field: str, what: str) -> None:
        super().__init__(f"field {field}: {what}")
        self.field = field
        self.what = what


def reason(file: str | os.PathLike[str], clip: str, field: str, what: str) -> str:
    return f"{file}: clip {clip}: field {field}: {what}"


def reject(
    source: str, video_id: str, path: str | os.PathLike[str], file: str | os.PathLike[str], err: FieldError
) -> Rejection:
    return Rejection(
        video_id=video_id, source=source, path=str(path), reason=reason(file, video_id, err.field, err.what)
    )


def confined(base: Path, name: str, field: str) -> Path:
    """`base / name` for a name taken from an annotation (a clip key, an id), refused unless it
    stays strictly inside `base`: "../x", "/abs/path", "" or "." would read files outside the
    source's own folder. The check is on the path as written (normalised, not resolved), so a
    user's own symlinked folders under the root keep working.
    """
    path = base / name
    norm, top = Path(os.path.normpath(path)), Path(os.path.normpath(base))
    if norm == top or not norm.is_relative_to(top):
        raise FieldError(
            field, f"{name!r} leads to {norm}, outside {top}: a clip name must name a file inside the source"
        )
    return path


def is_blank(value: Any) -> bool:
    """Empty cell: None, "", whitespace, or NaN (pandas exports write NaN for empty cells)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        text = value.strip()
        return text == "" or text.lower() == "nan"
    return False


def parse_float(value: Any, field: str) -> float | None:
    """A number of seconds or frames; None for an empty cell."""
    if is_blank(value):
        return None
    if isinstance(value, bool):
        raise FieldError(field, f"{value!r} is not a number")
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise FieldError(field, f"{value!r} is not a number") from None
    if not math.isfinite(out):
        raise FieldError(field, f"{value!r} is not a finite number")
    return out


def parse_int(value: Any, field: str) -> int | None:
    """An integer (frame number, id, flag); "12.0" is accepted (spreadsheets store numbers as floats)."""
    out = parse_float(value, field)
    if out is None:
        return None
    if out != int(out):
        raise FieldError(field, f"{value!r} is not an integer")
    return int(out)


def require(value: Any, field: str) -> Any:
    if value is None:
        raise FieldError(field, "missing")
    return value


def json_value(value: Any) -> Any:
    """A cell value as it goes into meta (JSON): NaN and blank strings become None."""
    if is_blank(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


def annotation_candidates(src: SourceConfig, default_names: Iterable[str]) -> list[Path]:
    """Annotation files to read: `src.annotations` if set, else the source's default names under root.

    A relative `annotations` path is taken as given (relative to the working directory, like every
    other path in the config) and, if nothing is there, relative to the source root.
    """
    root = Path(src.root)
    if src.annotations:
        given = Path(src.annotations)
        if not given.is_absolute() and not given.exists() and (root / given).exists():
            return [root / given]
        return [given]
    return [root / name for name in default_names]


def frame_folder(clip_dir: Path) -> Path | None:
    """The folder that holds a clip's frame images: `clip_dir/images/` or `clip_dir` itself."""
    for folder in (clip_dir / "images", clip_dir):
        if folder.is_dir() and list_frame_files(folder):
            return folder
    return None


def provenance(file: str | os.PathLike[str], field: str, origin: str) -> dict[str, str]:
    """Where one value of an annotation came from (kept in meta["provenance"], named in reasons)."""
    return {"file": str(file), "field": field, "from": origin}


def times_from(
    prov: dict[str, dict[str, str]], t_risky_s: float | None, t_event_s: float | None
) -> str | None:
    """One word for where the clip's times came from: their common origin, "mixed", or None without times."""
    origins = {
        prov[key]["from"]
        for key, value in (("t_risky_s", t_risky_s), ("t_event_s", t_event_s))
        if value is not None and key in prov
    }
    if not origins:
        return None
    return origins.pop() if len(origins) == 1 else "mixed"
