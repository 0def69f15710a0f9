"""Atomic file writes: every output is written beside its final path and renamed into place.

A killed job then leaves either the old file or the new one, never a half-written file that
Snakemake, a resumed stage or a reader would take for complete. One implementation for every
stage, so the guarantee (and the file mode) is the same everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain `open()` gives a new file (0644 under the usual umask 022)."""
    return 0o666 & ~current_umask()


def publish_tree(root: str | os.PathLike[str]) -> None:
    """Give every file and folder under `root` the modes a plain `open()` / `mkdir` would.

    Libraries that write through private temp files (transformers' `save_pretrained` writes
    model.safetensors as 0600) would otherwise leave outputs other users' jobs cannot read.
    """
    root = Path(root)
    fmode, dmode = file_mode(), 0o777 & ~current_umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, dmode)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, fmode)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`: it replaces `path` when the block succeeds, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; results are read by other users' jobs too
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], *, indent: int | None = 2) -> Path:
    """Sorted JSON with a trailing newline, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(path)


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
