"""Atomic file writes: every output is written beside its final path and renamed into place.

A killed job then leaves either the old file or the new one, never a half-written file that
Snakemake, a resumed stage or a reader would take for complete. One implementation for every
stage, so the guarantee (and the file mode) is the same everywhere: a file a library writes
(`atomic_path`), JSON (`write_json_atomic`), bytes (`write_bytes_atomic`, cheap enough per request),
a folder a library fills (`atomic_dir`). Temp names are unique per writer, so two writers of the
same path never write into one temp file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
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


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str], *, fsync: bool = False) -> Path:
    """`data` as the whole content of `path`, written atomically (`fsync`: on disk before the rename).

    The temp file is created with the mode a plain `open()` gives (the kernel applies the umask),
    so unlike `atomic_path` no umask is read: cheap enough for one call per request.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a fresh name per writer, as mkstemp makes them: two writers never share a temp file
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`: filled by the block, it takes the place of `path`
    (a folder, replaced whole) when the block succeeds, else it is removed.

    Its files get the modes of `publish_tree`. A folder cannot be renamed over a non-empty one, so
    the old `path` is first renamed aside and deleted once the new one is in place: a reader sees the
    old folder or the new one, never a mix, and a kill between the two renames leaves no `path`
    (a missing output, which Snakemake reruns), not a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        publish_tree(tmp)  # mkdtemp makes 0700; libraries write some files 0600
        old = None
        try:
            if os.path.lexists(path):
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old is not None and not os.path.lexists(path):
                    os.replace(old / path.name, path)  # put the old one back
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


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
