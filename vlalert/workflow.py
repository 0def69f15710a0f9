"""The glue between Snakemake and the library: each stage's config slice and code, and logging.

A stage's slice of the config is a typed model (vlalert.stage_config.SLICES). Its rule passes it as
two params: `stage` (`stage_params`), the fields Snakemake's params rerun-trigger compares, so a
stage reruns exactly when one of its own keys changes (changing `labels.alert_s` reruns relabel and
what follows, never ingest), and `untracked` (`stage_untracked`), the fields that are no rerun
trigger (speed keys, and facts that reach the stage through its files), wrapped in `Untracked` so
that Snakemake records nothing of them. The script rebuilds its slice from those two params alone
(`job_slice`), which validates them against the slice model: a rule that passes a wrong slice stops
its job with the rule, the field and the problem named.

`STAGE_CODE` is the single declaration of the library code each rule's script runs; the rules pass
`code_sha256(script)` as a `code` param, so a stage reruns when the *content* of that code changes
(editing vlalert/labels.py reruns relabel and what follows, never ingest) and not when a file is
merely touched or rewritten byte-identically (the profiles leave out Snakemake's `code` rerun
trigger, which compares the script's mtime).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from vlalert.config import ConfigError, WorkflowConfig
from vlalert.log_lines import ProgressLines
from vlalert.stage_config import StageSlice, slice_of

# Rule script (workflow/scripts/<name>.py) -> the vlalert modules it runs, relative to the package:
# a module ("labels", "synthetic.truth") or a whole package ("beliefs": every module under
# vlalert/beliefs/); the parent packages' __init__.py come with each entry. The list is every
# vlalert module reachable from the script through imports (those inside functions included), except
# vlalert.config, vlalert.stage_config and vlalert.workflow: what they do reaches a stage through its
# params (its config slice) or does not change its outputs (logging, the slice check), and
# vlalert.layout: where a job reads and writes is its declared inputs and outputs, which Snakemake
# tracks. tests/test_tracking.py recomputes that reach from the scripts' imports and fails when an
# entry is missing.
_TABLES = ("actions", "schemas", "atomic", "devices", "strict")
_TICKS = ("labels", "splits", "ticks", *_TABLES)
_BELIEFS = ("beliefs", "frame_files", "video", *_TICKS)
# the heads package less heads.synthetic (test and benchmark data, built on the label rule)
_HEADS = (
    *(
        "heads.config",
        "heads.danger",
        "heads.data",
        "heads.fsm",
        "heads.policy",
        "heads.standardize",
        "heads.train",
    ),
    *("cache.store", *_TABLES),
)
_SCORES = ("score", "baselines", "summary", "metrics", *_HEADS, *_BELIEFS)
_SOURCES = ("sources", "frame_files", "video", *_TABLES)
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "download_hub": ("download", "download_config", *_SOURCES),
    "check_source": ("download", "download_config", "source_files", *_SOURCES),
    "make_demo": ("synthetic", *_SOURCES),
    "ingest": ("ingest", *_SOURCES),
    "gate": (
        *("gate", "badas.config", "badas.model", "badas.provider", "badas.windows"),
        *("sources.base", "sources.common", "sources.consensus"),  # the consensus CSV's column names
        *("synthetic.truth", "ticks", "frame_files", "video", *_TABLES),
    ),
    "relabel": _TICKS,
    "beliefs": ("synthetic.truth", *_BELIEFS),
    "frames": ("frames", "frame_files", "video", "vlm.config", "vlm.resize", "download_config", *_TABLES),
    "benchmark": ("benchmark", "sources", "frame_files", "video", *_TICKS),
    "tiny_model": (
        *("vlm.config", "vlm.data", "vlm.inputs", "vlm.loss", "vlm.pretrain", "vlm.resize", "vlm.tiny"),
        "vlm.tokenizer",
        *("download_config", "synthetic", *_BELIEFS),  # the pretraining corpus is rendered
    ),
    "sft": (
        *("vlm.checkpoint", "vlm.config", "vlm.data", "vlm.inputs", "vlm.loading", "vlm.lora"),
        *("vlm.loss", "vlm.resize", "vlm.sft", "vlm.tokenizer", "download_config", "frames", *_BELIEFS),
    ),
    "cache_shard": (
        *("cache", "vlm.config", "vlm.inputs", "vlm.loading", "vlm.lora", "vlm.patch"),
        *("vlm.resize", "vlm.tokenizer", "download_config", "frames", *_BELIEFS),
    ),
    "cache_gather": ("cache.store", *_TABLES),
    "heads": _HEADS,
    "score": _SCORES,
    "summary": _SCORES,
    "report_figures": ("report.evaluation", *_SCORES),
    "report_data": ("report.data", "report.evaluation", "report.facts", *_SCORES),
    "report_model": ("report.beliefs", "report.evaluation", "report.training", *_SCORES),
}
PACKAGE_DIR = Path(__file__).resolve().parent


def code_files(script: str) -> list[Path]:
    """The vlalert files of STAGE_CODE[script]: modules, every module of a package, parent __init__s."""
    return sorted(
        {PACKAGE_DIR / "__init__.py"}.union(*(_entry_files(PACKAGE_DIR, e) for e in STAGE_CODE[script]))
    )


@functools.cache  # the rules share packages: each is listed once per parse
def _entry_files(package_dir: Path, entry: str) -> frozenset[Path]:
    parts = entry.split(".")
    files = {package_dir.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))}
    path = package_dir.joinpath(*parts)
    if path.is_dir():
        return frozenset(files | set(path.rglob("*.py")))
    if path.with_suffix(".py").is_file():
        return frozenset(files | {path.with_suffix(".py")})
    raise ValueError(f"STAGE_CODE: no module or package vlalert.{entry}")


@functools.cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:  # keyed by stat: a long-lived process sees edits
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_of(path, st.st_size, st.st_mtime_ns)


def code_sha256(script: str, scripts_dir: str | os.PathLike[str]) -> str:
    """sha256 of the rule script `scripts_dir/<script>.py` and the library code it runs (by content).

    Computed at parse time for every rule: it reads and hashes ~80 small files (a few ms).
    """
    digest = hashlib.sha256()
    named = [(f"workflow/scripts/{script}.py", Path(scripts_dir) / f"{script}.py")]
    named += [(f"vlalert/{p.relative_to(PACKAGE_DIR).as_posix()}", p) for p in code_files(script)]
    for name, path in named:
        digest.update(f"{name}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Untracked:
    """A rule's `untracked` param: handed to the script, but no rerun trigger.

    Snakemake's params trigger records a job's params of builtin types only (None, numbers, str,
    list, tuple, dict, set); a value of another type is passed to the script and recorded nowhere.
    """

    values: dict[str, Any]


def stage_params(cfg: WorkflowConfig, stage: str, key: str | None = None) -> dict[str, Any]:
    """A rule's `stage` param: its slice's tracked fields (`key`: the job's source or hub dataset)."""
    return slice_of(cfg, stage, key).tracked()


def stage_untracked(cfg: WorkflowConfig, stage: str, key: str | None = None) -> Untracked:
    """A rule's `untracked` param: the rest of its slice (the slice model's UNTRACKED)."""
    return Untracked(slice_of(cfg, stage, key).untracked())


S = TypeVar("S", bound=StageSlice)


def _given(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted paths where two params differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in {**a, **b} for p in _differences(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))]
    return [] if a == b else [path or "(all)"]


def job_slice(snakemake: Any, model: type[S]) -> S:
    """The job's config slice, rebuilt from its `stage` and `untracked` params alone.

    Params that are not a valid `model` (another stage's slice, a field missing, unknown or out of
    bounds, a field in the wrong one of the two params) stop the job naming the rule, each field and
    its problem.
    """
    rule = getattr(snakemake, "rule", None) or "?"
    where = f"rule {rule}: params of the {model.STAGE} slice ({model.__name__})"
    tracked = getattr(snakemake.params, "stage", None)
    untracked = getattr(snakemake.params, "untracked", None)
    if not isinstance(tracked, dict):
        raise ConfigError(f"{where}: `stage` must be the slice's tracked fields, got {_given(tracked)}")
    if not isinstance(untracked, Untracked):
        raise ConfigError(
            f"{where}: `untracked` must be vlalert.workflow.Untracked (stage_untracked), got "
            f"{_given(untracked)}; a plain value would make those fields a rerun trigger"
        )
    try:
        job = model.from_params(tracked, untracked.values)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(slice)"
            given = "" if e["type"] == "missing" else f" (given {_given(e['input'])})"
            lines.append(f"  {field}: {e['msg'].removeprefix('Value error, ')}{given}")
        raise ConfigError(f"{where} are not valid:\n" + "\n".join(lines)) from None
    misplaced = _differences(job.tracked(), tracked) + _differences(job.untracked(), untracked.values)
    if misplaced:
        raise ConfigError(
            f"{where}: {sorted(set(misplaced))} passed in the wrong param: `stage` holds the tracked "
            f"fields, `untracked` those of {model.__name__}.UNTRACKED"
        )
    return job


LOG_RESERVE_BYTES = 1 << 20


def _reserve_space(path: Path) -> Path | None:
    """A ballast file of LOG_RESERVE_BYTES beside the log, freed when the job fails.

    On a full disk the log file cannot grow either; deleting the ballast first gives the failure
    message room, so the reason lands in the job's own log, not only on Snakemake's stderr.
    """
    try:
        with open(path, "wb") as fh:
            fh.write(b"\0" * LOG_RESERVE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return path


def _failure_lines(err: BaseException) -> list[str]:
    """What a user needs beyond the traceback: for a full disk, which file system and how full."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(err.filename) if err.filename else Path.cwd()
        probe = next((p for p in (where, *where.parents) if p.exists()), Path.cwd())
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            free = -1
        return [
            f"disk full (errno {err.errno}, {os.strerror(err.errno)}) writing {err.filename or '?'}: "
            f"{free / 1e9:.2f} GB free on the file system of {probe}; free space (or point `results` "
            "elsewhere) and rerun: completed outputs are kept, the partial ones were removed"
        ]
    return []


@contextlib.contextmanager
def job_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Send logging, warnings and progress bars (stderr) of one job to its rule's log file.

    Progress bars arrive as one line per interval with their rate and ETA (vlalert.log_lines).

    Every way a job can fail ends up in that file: an exception with its traceback (a full disk
    named as such), and a `SystemExit` with its message.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ballast = _reserve_space(log_path.with_name(f".{log_path.name}.reserve"))
    with (
        open(log_path, "w") as fh,
        contextlib.closing(ProgressLines(fh)) as stderr_lines,  # bars as periodic lines, not \r frames
        contextlib.redirect_stderr(stderr_lines),
    ):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        log = logging.getLogger("vlalert")
        try:
            yield log
        except BaseException as err:
            if ballast is not None:
                ballast.unlink(missing_ok=True)
                ballast = None
            if isinstance(err, SystemExit):
                if err.code not in (None, 0):
                    log.error("job failed: %s", err.code)
            elif isinstance(err, KeyboardInterrupt):
                log.error("job interrupted")
            else:
                for line in _failure_lines(err):
                    log.error("%s", line)
                log.exception("job failed")
            raise
        finally:
            if ballast is not None:
                ballast.unlink(missing_ok=True)
            root.removeHandler(handler)
            with contextlib.suppress(OSError):  # a flush that fails must not hide the job's own error
                fh.flush()
                sys.stderr.flush()
