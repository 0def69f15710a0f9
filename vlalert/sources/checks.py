"""Looking at a source placed by hand without reading it: the helpers of each kind's layout check and listing.

Each kind's plugin (`vlalert/sources/<kind>.py`) says where its files lie: `check_layout` lists what
is missing (vlalert.download.check_source_layout reports it, with where to get it), `media_folders`
names the folders whose clip files the source fingerprint stats (vlalert.source_files). Both go by
names and `stat` only. Only the standard library is imported at module level: vlalert.download
imports `Problem` from here when the Snakefile is parsed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class SourceLike(Protocol):
    """The fields of vlalert.config.SourceConfig that the layout check and the file listing read."""

    kind: str
    root: str
    annotations: str | None
    consensus: str | None
    gate_scores: str | None
    videos: bool  # False: annotations only, no clip files expected
    split_files: dict[str, str] | None


@dataclass(frozen=True)
class Problem:
    """One missing file or folder, and where to get it."""

    path: str
    what: str
    obtain: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}\n      get it: {self.obtain}"


def need_one_of(
    files: list[Path],
    what: str,
    obtain: str,
    problems: list[Problem],
    warnings: list[Problem],
    *,
    all_expected: bool,
) -> list[Path]:
    """At least one of `files` must exist; with all_expected, each missing one is worth a warning."""
    present = [p for p in files if p.is_file()]
    if not present:
        problems += [Problem(str(p), f"missing: {what}", obtain) for p in files]
    elif all_expected:
        warnings += [
            Problem(str(p), f"missing: {what} (the others are present)", obtain)
            for p in files
            if p not in present
        ]
    return present


def has_images(folder: Path) -> bool:
    from vlalert.frame_files import IMAGE_SUFFIXES

    try:
        with os.scandir(folder) as it:
            return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in it)
    except OSError:
        return False


def frame_clip(clip_dir: Path) -> bool:
    """A clip folder holds its frames in images/ or directly (as the adapters read them)."""
    return has_images(clip_dir / "images") or has_images(clip_dir)


def subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def count_mp4(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.mp4")) if folder.is_dir() else 0


# ---------------------------------------------------------------- clip folders of the listing

MP4: frozenset[str] = frozenset({".mp4"})
# (folder relative to the root, the suffixes taken (None: every file), whether they match in any case)
FolderSpec = tuple[str, frozenset[str] | None, bool]


def rel_subdirs(root: str, rel: str, *, digits: bool = False) -> list[str]:
    """The subfolders of root/rel, as paths relative to root, sorted."""
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            names = [e.name for e in it if e.is_dir() and (not digits or e.name.isdigit())]
    except OSError:
        return []
    return [f"{rel}/{name}" if rel else name for name in sorted(names)]


def rel_tree(root: str, rel: str) -> Iterator[str]:
    """root/rel and every folder below it, relative to root."""
    yield rel
    for sub in rel_subdirs(root, rel):
        yield from rel_tree(root, sub)
