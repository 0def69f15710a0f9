"""Getting the sources onto disk: hub datasets by download, the others by a layout check.

Hub datasets (Nexar, the published VLAlert-Bench annotations) are fetched with `huggingface_hub`
at a pinned commit, so that two runs months apart read the same bytes; every file is then checked
against the hub's own listing (sha256 of LFS files, git blob sha1 of the others) and recorded with
its sha256 in a completion marker. The same record is written next to the files
(`<local_dir>/vlalert_download_record.json`): a copy of the source folder, moved without the run's
results, still says which commit it holds, the resolved one for a branch (`allow_unpinned`).
A run that is cut short keeps every finished file (the hub client skips them on the next run) and a
dropped connection is resumed with an HTTP Range request by the client itself. The token comes
from the HF_TOKEN environment variable only: never from the config, the machine's stored login, or
anything that is written to disk.

DADA-2000, DoTA and DAD cannot be downloaded automatically; `check_source_layout` lists, at once,
every file or folder that a source's adapter needs and does not find, and where to obtain it. What
each kind needs and where to get it are its plugin's (`check_layout`, `OBTAIN` in
vlalert/sources/<kind>.py); this module adds what every kind shares (the root, the consensus CSV,
the gate scores) and the report.

It imports nothing heavy at module level (huggingface_hub and the source adapters are imported
where they are used). The `download:` config section's model is in vlalert.download_config, which
the config imports; what check_source and download_hub depend on is their slice
(vlalert.stage_config).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vlalert.atomic import write_json_atomic
from vlalert.download_config import COMMIT_RE, DownloadConfig
from vlalert.sources.checks import Problem, SourceLike

log = logging.getLogger(__name__)

TOKEN_ENV = "HF_TOKEN"
HASH_CHUNK = 1 << 20
# The download's record, beside the files it describes (the run's marker under results/ is the other copy).
RECORD_NAME = "vlalert_download_record.json"

OBTAIN_GATE_SCORES = (
    "a gate scores table (Parquet or CSV with video_id, t_s, p_collision), e.g. from an Open-BADAS run; "
    "or choose another gate provider for sources.{name}"
)


class DownloadError(RuntimeError):
    """A hub download that cannot complete; the message says what to change (never holds the token)."""


# ---------------------------------------------------------------------------------------------
# Hub download
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    path: str  # path in the repository ('/'-separated), also its place under local_dir
    size: int
    sha256: str


@dataclass(frozen=True)
class DownloadRecord:
    """What the completion marker holds: enough to prove later which bytes a run read."""

    name: str
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    endpoint: str
    allow_patterns: list[str] | None
    local_dir: str
    files: list[FileRecord] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def pinned(self) -> bool:
        """Whether the config named the commit itself (else a branch or tag resolved to `commit`)."""
        return COMMIT_RE.fullmatch(self.revision) is not None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["pinned"] = self.pinned
        out["n_files"] = len(self.files)
        out["total_bytes"] = self.total_bytes
        return out


@dataclass(frozen=True)
class RepoEntry:
    """One file of the hub's listing at the commit: what its bytes must hash to."""

    path: str
    size: int
    blob_id: str  # git blob sha1 of the file as stored in git (the pointer, for LFS files)
    lfs_sha256: str | None = None  # sha256 of the content, for LFS files
    lfs_size: int | None = None

    @property
    def content_size(self) -> int:
        return self.lfs_size if self.lfs_size is not None else self.size


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The hub token, from HF_TOKEN only (an empty value counts as none)."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


def public_endpoint(endpoint: str) -> str:
    """The endpoint as recorded and logged: without any user:password part of the URL."""
    parts = urlsplit(endpoint)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts).rstrip("/")


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def file_digests(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(sha256 of the content, git blob sha1) in one pass; the hub lists the latter for non-LFS files."""
    size = os.path.getsize(path)
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def select_entries(entries: Iterable[RepoEntry], allow_patterns: list[str] | None) -> list[RepoEntry]:
    """The files the download takes: the same pattern semantics as huggingface_hub's own filter."""
    from huggingface_hub.utils import filter_repo_objects

    return sorted(
        filter_repo_objects(list(entries), allow_patterns=allow_patterns, key=lambda e: e.path),
        key=lambda e: e.path,
    )


def verify_files(local_dir: str | os.PathLike[str], expected: list[RepoEntry]) -> list[FileRecord]:
    """Hash every expected file and compare it with the listing; a bad file is deleted and named.

    Deleting is what makes the next run fetch it again: the hub client skips a file that is present
    and recorded as downloaded at the same commit.
    """
    root = Path(local_dir)
    records, bad = [], []
    for entry in expected:
        path = root / entry.path
        if not path.is_file():
            bad.append(f"{entry.path}: missing after download")
            continue
        size = path.stat().st_size
        sha256, blob = file_digests(path)
        if size != entry.content_size:
            problem = f"size {size} bytes, the hub lists {entry.content_size}"
        elif entry.lfs_sha256 is not None and sha256 != entry.lfs_sha256:
            problem = f"sha256 {sha256}, the hub lists {entry.lfs_sha256}"
        elif entry.lfs_sha256 is None and blob != entry.blob_id:
            problem = f"git blob sha1 {blob}, the hub lists {entry.blob_id}"
        else:
            records.append(FileRecord(entry.path, size, sha256))
            continue
        path.unlink()
        bad.append(f"{entry.path}: {problem} (deleted; the next run fetches it again)")
    if bad:
        raise DownloadError(
            f"{len(bad)} file(s) in {root} do not match the hub listing:\n  " + "\n  ".join(bad)
        )
    return records


def _hub_error(
    err: Exception, dl: DownloadConfig, name: str, endpoint: str, token: str | None
) -> DownloadError:
    """A hub exception as a message that says which config key or environment variable to fix."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{dl.repo_type} repo {dl.repo_id} at {endpoint}"
    if isinstance(err, RevisionNotFoundError):
        msg = (
            f"download.{name}: revision {dl.revision!r} does not exist in the {where}; set "
            f"download.{name}.revision to one of its commits (the hub's 'Files and versions' -> 'History')"
        )
    elif isinstance(err, GatedRepoError):
        msg = (
            f"download.{name}: the {where} is gated: accept its terms on the hub with your account, then "
            f"export {TOKEN_ENV} with a read token of that account"
        )
    elif isinstance(err, RepositoryNotFoundError):
        hint = f"check download.{name}.repo_id and repo_type"
        if token is None:
            hint += f"; if the repo is private, export {TOKEN_ENV} with a token that can read it"
        msg = f"download.{name}: the {where} was not found or is not readable ({hint})"
    elif isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code == 401:
        msg = f"download.{name}: the hub refused the credentials for the {where}: check {TOKEN_ENV}"
    else:
        msg = (
            f"download.{name}: downloading the {where} failed: {type(err).__name__}: {err}. Files already "
            "complete are kept; run again to resume"
        )
    return DownloadError(_scrub(msg, token))


def list_repo_entries(api: Any, dl: DownloadConfig, commit: str) -> list[RepoEntry]:
    from huggingface_hub.hf_api import RepoFile

    return [
        RepoEntry(
            path=f.path,
            size=f.size,
            blob_id=f.blob_id,
            lfs_sha256=f.lfs.sha256 if f.lfs is not None else None,
            lfs_size=f.lfs.size if f.lfs is not None else None,
        )
        for f in api.list_repo_tree(dl.repo_id, repo_type=dl.repo_type, revision=commit, recursive=True)
        if isinstance(f, RepoFile)
    ]


def hub_download(
    name: str,
    dl: DownloadConfig,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> DownloadRecord:
    """Fetch `dl.repo_id` at its commit into `dl.local_dir`, verify every file, return the record.

    endpoint: None for huggingface_hub's own (HF_ENDPOINT, else huggingface.co); tests and mirrors
    pass another. token: None for anonymous access; callers pass `token_from_env()`.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    shown = public_endpoint(endpoint)
    auth: str | bool = token or False  # False: never fall back to a token stored on the machine
    api = HfApi(endpoint=endpoint, token=auth)
    try:
        commit = dl.revision
        if not COMMIT_RE.fullmatch(commit):
            commit = api.repo_info(dl.repo_id, repo_type=dl.repo_type, revision=dl.revision).sha
            log.warning(
                "download %s: revision %r is not pinned; it resolved to %s (set revision: %s to pin it)",
                name,
                dl.revision,
                commit,
                commit,
            )
        expected = select_entries(list_repo_entries(api, dl, commit), dl.allow_patterns)
        if any(e.path == RECORD_NAME for e in expected):
            raise DownloadError(
                f"download.{name}: {dl.repo_id} has a file {RECORD_NAME}, the name of vlalert's own record "
                f"of the download: leave it out of download.{name}.allow_patterns"
            )
        if not expected:
            raise DownloadError(
                f"download.{name}: allow_patterns {dl.allow_patterns} match no file of {dl.repo_id} "
                f"at {commit}"
            )
        log.info(
            "download %s: %s@%s from %s, %d files, %.1f MB",
            name,
            dl.repo_id,
            commit[:12],
            shown,
            len(expected),
            sum(e.content_size for e in expected) / 1e6,
        )
        snapshot_download(
            dl.repo_id,
            repo_type=dl.repo_type,
            revision=commit,
            local_dir=dl.local_dir,
            allow_patterns=dl.allow_patterns,
            token=auth,
            endpoint=endpoint,
            max_workers=dl.max_workers,
        )
    except DownloadError:
        raise
    except Exception as err:  # every hub or network failure is reported the same way, token scrubbed
        # `from None`: the chained hub exception is not kept, so nothing it carries reaches a log.
        raise _hub_error(err, dl, name, shown, token) from None
    files = verify_files(dl.local_dir, expected)
    record = DownloadRecord(
        name=name,
        repo_id=dl.repo_id,
        repo_type=dl.repo_type,
        revision=dl.revision,
        commit=commit,
        endpoint=shown,
        allow_patterns=dl.allow_patterns,
        local_dir=dl.local_dir,
        files=files,
    )
    write_json_atomic(record.to_json(), Path(dl.local_dir) / RECORD_NAME)
    return record


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write atomically: a marker that exists is always complete."""
    return write_json_atomic(data, path)


# ---------------------------------------------------------------------------------------------
# Layout checks of the sources placed by hand
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutReport:
    source: str
    kind: str
    root: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "root": self.root,
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
            "warnings": [asdict(p) for p in self.warnings],
            "found": self.found,
        }


def format_problems(report: LayoutReport) -> str:
    lines = [
        f"source {report.source!r} ({report.kind}) under {report.root}: "
        f"{len(report.problems)} missing item(s); place them and run again:"
    ]
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


def check_source_layout(name: str, src: SourceLike) -> LayoutReport:
    """Every file and folder `src` needs that is not there, with where to get it; nothing is read but names.

    Missing clips among present ones are not problems here: ingest rejects those one by one, with reasons.
    """
    from vlalert.sources import consensus
    from vlalert.sources.registry import ADAPTERS

    if src.kind not in ADAPTERS:
        raise ValueError(f"no layout check for source kind {src.kind!r}; known: {sorted(ADAPTERS)}")
    plugin = ADAPTERS[src.kind]
    problems: list[Problem] = []
    warnings: list[Problem] = []
    root = Path(src.root)
    if not root.is_dir():
        problems.append(Problem(str(root), f"folder missing (sources.{name}.root)", plugin.OBTAIN))
    found = plugin.check_layout(src, problems, warnings)
    if src.consensus and not Path(src.consensus).is_file():
        problems.append(
            Problem(src.consensus, f"missing: sources.{name}.consensus", consensus.OBTAIN.format(name=name))
        )
    if src.gate_scores and not Path(src.gate_scores).is_file():
        problems.append(
            Problem(
                src.gate_scores, f"missing: sources.{name}.gate_scores", OBTAIN_GATE_SCORES.format(name=name)
            )
        )
    return LayoutReport(name, src.kind, src.root, problems, warnings, found)
