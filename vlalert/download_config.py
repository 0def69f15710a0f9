"""The `download:` section of the workflow config: which hub repositories fill which source roots.

Kept apart from `vlalert.download` (which fetches and checks files, and imports the source adapters)
so that the config model can validate this section without importing any adapter: the adapters
import the config, and the config must not import them back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from vlalert.strict import StrictModel

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class DownloadConfig(StrictModel):
    """One hub repository to fetch at a pinned commit into `local_dir`.

    `source` names the configured source whose root this download fills: its ingest then waits for
    the download instead of a layout check. Datasets used only for comparison (VLAlert-Bench) have none.
    """

    enabled: bool = True
    repo_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
    repo_type: Literal["dataset", "model"] = "dataset"
    revision: str = Field(min_length=1)
    allow_unpinned: bool = False  # True: a branch/tag is resolved to its commit at download time
    allow_patterns: list[str] | None = None  # None: the whole repository
    local_dir: str = Field(min_length=1)
    source: str | None = None
    max_workers: int = Field(8, ge=1, le=64)

    @model_validator(mode="after")
    def _pinned(self) -> DownloadConfig:
        if not self.allow_unpinned and not COMMIT_RE.fullmatch(self.revision):
            raise ValueError(
                f"revision {self.revision!r} is not a commit: pin a 40-character commit sha (the repo's "
                "'Files and versions' -> 'History' page on the hub lists them), or set allow_unpinned: true "
                "to resolve it at download time (the commit used is recorded in the marker)"
            )
        if self.allow_patterns is not None and not self.allow_patterns:
            raise ValueError("allow_patterns is empty: it would select no file (omit it for the whole repo)")
        return self


def download_config_errors(
    downloads: Mapping[str, DownloadConfig], source_roots: Mapping[str, str]
) -> list[str]:
    """Cross-checks of the `download` section against the sources (for the config model's validator).

    `source_roots` maps each enabled source to its root. A download that fills a source must write
    exactly into that source's root, and two downloads must not share a folder.
    """
    errors = []
    owner: dict[str, str] = {}
    for name, dl in downloads.items():
        if not dl.enabled:
            continue
        key = os.path.normpath(dl.local_dir)
        if key in owner:
            errors.append(f"download.{name}.local_dir {dl.local_dir!r} is also used by download.{owner[key]}")
        owner[key] = name
        if dl.source is None:
            continue
        if dl.source not in source_roots:
            errors.append(f"download.{name}.source names {dl.source!r}, which is not an enabled source")
        elif os.path.normpath(source_roots[dl.source]) != key:
            errors.append(
                f"download.{name}.local_dir {dl.local_dir!r} must equal sources.{dl.source}.root "
                f"{source_roots[dl.source]!r}: the download fills that source"
            )
    return errors


def download_for_source(downloads: Mapping[str, DownloadConfig], source: str) -> str | None:
    """The enabled download that fills `source`, or None when the user places its files by hand."""
    for name, dl in downloads.items():
        if dl.enabled and dl.source == source:
            return name
    return None
