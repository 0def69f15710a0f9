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
- clip media (videos, frame images): relative path, size and mtime_ns, from one `stat` per file.
  Hashing them instead would read the whole dataset at every `snakemake` invocation, including `-n`.
  Where a stat waits on the file system (a network file system, a cold cache), STAT_THREADS threads
  overlap the waits; where it does not (a local disk, metadata cached), the threads only contend for
  the GIL, each stat handing it over: a DADA-2000-like tree of 100,000 frames in 200 folders,
  cached, lists in 0.41 s on one thread and 0.85 s on 8 (2-core AMD EPYC Zen 5, quiet, one run). So
  the listing times its first folders (`PROBE_FILES` files) on one thread and takes the threads only
  where a stat costs more than `LATENCY_BOUND_S`. The real DADA-2000 (~650,000 frames) then costs
  some 2.7 s a DAG build on a local disk, where hashing its tens of GB would cost minutes. The
  consequence, documented in the README: a video or frame whose mtime changes (a `touch`, a copy
  without `-p`) counts as changed and reruns ingest and what follows; copy or restore data with
  `cp -p` / `rsync -a` to keep mtimes.

Which annotation files and clip folders a source has is its kind's plugin's (`annotation_candidates`,
`media_folders` in vlalert/sources/<kind>.py, next to the adapter that reads them); the registry is
imported when a listing is first made (at parse time: some 15 ms; no numpy, see vlalert.frame_files).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vlalert.sources.checks import FolderSpec, SourceLike

MANIFEST_FORMAT = "vlalert-source-files-1"
STAT_THREADS = 8
PROBE_FILES = 256  # files listed on one thread before choosing between one thread and STAT_THREADS
LATENCY_BOUND_S = 20e-6  # a stat slower than this waits on the file system: threads overlap the waits
_CHUNK = 1 << 20


def annotation_files(src: SourceLike) -> list[str]:
    """The annotation-like files of `src` that exist now: sheets/CSVs/JSONs, consensus CSV, split lists.

    Only existing ones: a missing file is for check_source to report (with where to get it), not for
    Snakemake to stop on before any job runs.
    """
    from vlalert.sources.registry import adapter_for

    files = [str(p) for p in adapter_for(src.kind).annotation_candidates(src)]
    if src.consensus:
        files.append(src.consensus)
    files += [src.split_files[k] for k in sorted(src.split_files or {})]
    return [f for f in dict.fromkeys(files) if os.path.isfile(f)]


def _media_folders(src: SourceLike) -> Iterator[FolderSpec]:
    """The folders where the adapter of `src.kind` may read clip files (videos, frame images)."""
    from vlalert.sources.registry import adapter_for

    if src.videos:
        yield from adapter_for(src.kind).media_folders(src)


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


def _list_folders(
    folders: list[tuple[str, frozenset[str] | None, bool]], threads: int | None = None
) -> list[list[list[Any]]]:
    """`_stat_files` of each folder, in order: on STAT_THREADS threads where the first PROBE_FILES
    files, listed on one, took over LATENCY_BOUND_S a stat, else on one (the module docstring says
    why). `threads` skips the probe (tests)."""
    out: list[list[list[Any]]] = []
    if threads is None:
        files, t0 = 0, time.perf_counter()
        while len(out) < len(folders) and files < PROBE_FILES:
            out.append(_stat_files(*folders[len(out)]))
            files += len(out[-1])
        waits = (time.perf_counter() - t0) / max(files, 1) > LATENCY_BOUND_S
        threads = STAT_THREADS if waits else 1
    rest = folders[len(out) :]
    if threads > 1 and len(rest) > 1:
        with ThreadPoolExecutor(threads) as pool:
            return out + list(pool.map(lambda spec: _stat_files(*spec), rest))
    return out + [_stat_files(*spec) for spec in rest]


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
    listed = _list_folders(
        [(os.path.join(src.root, rel), suffixes, any_case) for rel, suffixes, any_case in specs]
    )
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
