"""What a frame folder is: its image suffixes and the order of its files.

Kept apart from `vlalert.video` (which reads the frames and pulls numpy) because the Snakefile
parses the sources' layouts with it on every run: the adapters list the folders a clip may be read
from, and `frame_folder` finds the one that holds images. At parse time numpy costs ~70 ms that
no rule's DAG needs (issue 16: parse time imports nothing heavy).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


def _natural_key(name: str) -> tuple[Any, ...]:
    # "2.jpg" before "10.jpg": sources zero-pad, but a user's re-export may not.
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder in frame order (natural sort of the file names)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))
