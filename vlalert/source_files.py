"""The files a source's ingest reads, and one fingerprint of them, so that Snakemake reruns on change.

Snakemake reruns a job when a declared input is newer (and, below `max-checksum-file-size`, differs
in content) or when a `params:` value differs from the one recorded. A source's clips are too many
to declare one by one (DADA-2000 ships ~650,000 frame images), so the `check_source` rule carries
`listing_fingerprint(source_listing(src))` as a param: computed by Snakemake every time it builds the DAG,
recorded with the rule's output, and compared on the next build. A changed listing reruns
check_source, which writes the listing as its output (the source manifest), an input of ingest: so
ingest and everything after it rerun. An unchanged listing gives the same param, and nothing reruns.

What a file contributes to the fingerprint:

- annotation files (the adapter's annotation sheet/CSV/JSON, the BADAS consensus CSV, the official
  split lists): their sha256. They are small (the real DoTA val metadata is 295 kB, hashed in about
  a millisecond), so an edit is seen by content and a `touch` or a byte-identical rewrite changes
  nothing.
- clip media (videos, frame images): relative path, size and mtime_ns, from one `stat` per file
  (in STAT_THREADS threads: a stat waits on the file system, not on the CPU). Hashing them instead
  would read the whole dataset at every `snakemake` invocation, including `-n`. Measured on the
  2-core development machine (load ~4): the demo corpus (3,773 clip files, 16 MB) lists and
  fingerprints in 32 ms, against 105 ms to sha256 its bytes; a DADA-2000-like tree of 100,000 frames
  in 200 folders in 1.1 s (11 us a file), so the real DADA-2000 (~650,000 frames) costs some 7 s a
  DAG build, where hashing its tens of GB would cost minutes. The consequence, documented in the
  README: a video or frame whose mtime changes (a `touch`, a copy without `-p`) counts as changed and
  reruns ingest and what follows; copy or restore data with `cp -p` / `rsync -a` to keep mtimes.

The folders listed per kind mirror where each adapter looks for clips (vlalert/sources/*.py);
the names are repeated here because the adapters import numpy/pyarrow, which the Snakefile must
not pay for at parse time (tests/test_tracking.py pins them to the adapters'). Only the
standard library is imported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

# The adapters' default annotation files (nexar: one CSV per split, SPLITS) and clip folders.
NEXAR_SPLITS: tuple[str, ...] = ("train", "test-public", "test-private")
ANNOTATION_DEFAULTS: dict[str, tuple[str, ...]] = {
    "nexar": tuple(f"{split}.csv" for split in NEXAR_SPLITS),
    "dada2000": ("DADA2000_video_annotations.xlsx", "DADA2000_video_annotations.csv"),
    "dota": ("metadata_train.json", "metadata_val.json"),
    "dad": (),
}
DAD_SPLITS: tuple[str, ...] = ("training", "testing")
DAD_LABELS: tuple[str, ...] = ("positive", "negative")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})  # vlalert.video's
MANIFEST_FORMAT = "vlalert-source-files-1"
STAT_THREADS = 8
_CHUNK = 1 << 20


class SourceLike(Protocol):
    """The fields of vlalert.config.SourceConfig read here."""

    kind: str
    root: str
    annotations: str | None
    consensus: str | None
    split_files: dict[str, str] | None
    videos: bool


def annotation_candidates(src: SourceLike) -> list[Path]:
    """The annotation files the adapter would look for (vlalert.sources.common.annotation_candidates)."""
    root = Path(src.root)
    if src.annotations:
        given = Path(src.annotations)
        if not given.is_absolute() and not given.exists() and (root / given).exists():
            return [root / given]
        return [given]
    return [root / name for name in ANNOTATION_DEFAULTS[src.kind]]


def annotation_files(src: SourceLike) -> list[str]:
    """The annotation-like files of `src` that exist now: sheets/CSVs/JSONs, consensus CSV, split lists.

    Only existing ones: a missing file is for check_source to report (with where to get it), not for
    Snakemake to stop on before any job runs.
    """
    files = [str(p) for p in annotation_candidates(src)]
    if src.consensus:
        files.append(src.consensus)
    files += [src.split_files[k] for k in sorted(src.split_files or {})]
    return [f for f in dict.fromkeys(files) if os.path.isfile(f)]


MP4: frozenset[str] = frozenset({".mp4"})
# (folder relative to the root, the suffixes taken (None: every file), whether they match in any case)
FolderSpec = tuple[str, frozenset[str] | None, bool]


def _subdirs(root: str, rel: str, *, digits: bool = False) -> list[str]:
    """The subfolders of root/rel, as paths relative to root, sorted."""
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            names = [e.name for e in it if e.is_dir() and (not digits or e.name.isdigit())]
    except OSError:
        return []
    return [f"{rel}/{name}" if rel else name for name in sorted(names)]


def _tree(root: str, rel: str) -> Iterator[str]:
    yield rel
    for sub in _subdirs(root, rel):
        yield from _tree(root, sub)


def _media_folders(src: SourceLike) -> Iterator[FolderSpec]:
    """The folders where the adapter of `src.kind` may read clip files (videos, frame images)."""
    root = src.root
    if not src.videos:
        return
    if src.kind == "nexar":
        for split in sorted(set(NEXAR_SPLITS) | {p.stem for p in annotation_candidates(src)}):
            for rel in (split, f"{split}/positive", f"{split}/negative"):
                yield rel, MP4, False
    elif src.kind == "dad":  # the adapter records stray files in subfolders too
        for split in DAD_SPLITS:
            for label in DAD_LABELS:
                for rel in _tree(root, f"videos/{split}/{label}"):
                    yield rel, None, False
    elif src.kind == "dota":
        for clip in _subdirs(root, "frames"):
            yield clip, IMAGE_SUFFIXES, True
            yield f"{clip}/images", IMAGE_SUFFIXES, True
        yield "videos", MP4, False
    elif src.kind == "dada2000":
        for category in _subdirs(root, "", digits=True):
            for clip in _subdirs(root, category, digits=True):
                yield clip, IMAGE_SUFFIXES, True
                yield f"{clip}/images", IMAGE_SUFFIXES, True
    else:
        raise ValueError(f"no clip layout known for source kind {src.kind!r}")


def _stat_files(folder: str, suffixes: frozenset[str] | None, any_case: bool) -> list[list[Any]]:
    """[name, size, mtime_ns] of the regular files directly in `folder` (links followed), by name.

    A name is taken when its suffix (pathlib's: ".jpg" alone has none) is in `suffixes` (None: all).
    """
    ends = tuple(suffixes or ())
    out = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                name = entry.name
                if ends:
                    key = name.lower() if any_case else name
                    if not key.endswith(ends) or key in suffixes:
                        continue
                try:
                    if entry.is_file():
                        st = entry.stat()
                        out.append([name, st.st_size, st.st_mtime_ns])
                except OSError:  # vanished, or a dangling link: not a file the adapter can read
                    continue
    except OSError:
        return []
    out.sort()
    return out


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_listing(src: SourceLike) -> dict[str, Any]:
    """The source manifest: annotation files by content, clip media by (size, mtime_ns).

    {"annotations": {path: [size, sha256]}, "media": {folder relative to root: [[name, size, mtime_ns]]}}
    """
    annotations = {path: [os.path.getsize(path), file_sha256(path)] for path in annotation_files(src)}
    specs = list(_media_folders(src))
    # stat releases the GIL and its latency, not the CPU, bounds it: threads overlap the calls
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        listed = pool.map(lambda spec: _stat_files(os.path.join(src.root, spec[0]), *spec[1:]), specs)
        media = {rel: files for (rel, *_), files in zip(specs, listed, strict=True) if files}
    return {
        "format": MANIFEST_FORMAT,
        "kind": src.kind,
        "root": src.root,
        "annotations": dict(sorted(annotations.items())),
        "media": dict(sorted(media.items())),
    }


def listing_fingerprint(listing: dict[str, Any]) -> str:
    """One sha256 over a listing: equal exactly when every listed file has the same entry."""
    digest = hashlib.sha256(f"{listing['format']}\n{listing['kind']}\n".encode())
    for path, (size, sha) in listing["annotations"].items():
        digest.update(f"a\0{path}\0{size}\0{sha}\n".encode())
    for folder, files in listing["media"].items():  # repr: one C call per folder, not per file
        digest.update(f"m\0{folder}\0{files!r}\n".encode())
    return digest.hexdigest()


def source_fingerprint(src: SourceLike) -> str:
    """What check_source carries as its `files` param (computed at every DAG build)."""
    return listing_fingerprint(source_listing(src))


def listing_summary(listing: dict[str, Any]) -> dict[str, int]:
    files = [f for fs in listing["media"].values() for f in fs]
    return {
        "annotation_files": len(listing["annotations"]),
        "media_files": len(files),
        "media_bytes": sum(f[1] for f in files),
    }
