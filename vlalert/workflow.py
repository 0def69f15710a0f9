"""The glue between Snakemake and the library: which config keys each stage depends on, and logging.

`stage_params` is the single declaration of a stage's config dependencies. The rules pass it as
`params`, so Snakemake's params rerun-trigger reruns a stage exactly when one of its own keys
changes (changing `labels.alert_s` reruns relabel and what follows, never ingest). The scripts
check that the params they were given equal what the config says, so a stage can never read a
key that is not part of its params.

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
from pathlib import Path
from typing import Any, Literal

from vlalert.cache.config import SPEED_KEYS as CACHE_SPEED_KEYS
from vlalert.config import ConfigError, WorkflowConfig, validate_config
from vlalert.download import layout_params
from vlalert.download_config import download_for_source, download_params

STAGES = (
    "download",
    "check_source",
    "demo",
    "ingest",
    "gate",
    "relabel",
    "beliefs",
    "benchmark",
    "tiny_model",
    "sft",
    "cache",
    "heads",
    "score",
    "summary",
)


# Rule script (workflow/scripts/<name>.py) -> the vlalert modules it runs, relative to the package:
# a module ("labels", "synthetic.truth") or a whole package ("beliefs": every module under
# vlalert/beliefs/); the parent packages' __init__.py come with each entry. The list is every
# vlalert module reachable from the script through imports (those inside functions included), except
# vlalert.config and vlalert.workflow: what they do reaches a stage through its params (its config
# slice) or does not change its outputs (logging, the params check), and vlalert.layout: where a job
# reads and writes is its declared inputs and outputs, which Snakemake tracks. tests/test_tracking.py
# recomputes that reach from the scripts' imports and fails when an entry is missing.
_TABLES = ("actions", "schemas", "atomic", "devices", "strict")
_TICKS = ("labels", "splits", "ticks", *_TABLES)
_BELIEFS = ("beliefs", "video", *_TICKS)
# the heads package less heads.synthetic (test and benchmark data, built on the label rule)
_HEADS = (
    *("heads.config", "heads.danger", "heads.data", "heads.fsm", "heads.policy", "heads.train"),
    *("cache.store", *_TABLES),
)
_SCORES = ("score", "baselines", "summary", "metrics", *_HEADS, *_BELIEFS)
_SOURCES = ("sources", "video", *_TABLES)
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "download_hub": ("download", "download_config", *_SOURCES),
    "check_source": ("download", "download_config", "source_files", *_SOURCES),
    "make_demo": ("synthetic", *_SOURCES),
    "ingest": ("ingest", *_SOURCES),
    "gate": (
        *("gate", "badas.config", "badas.model", "badas.provider", "badas.windows"),
        *("sources.base", "sources.common", "sources.consensus"),  # the consensus CSV's column names
        *("synthetic.truth", "ticks", "video", *_TABLES),
    ),
    "relabel": _TICKS,
    "beliefs": ("synthetic.truth", *_BELIEFS),
    "benchmark": ("benchmark", "sources", "video", *_TICKS),
    "tiny_model": ("vlm.config", "vlm.data", "vlm.inputs", "vlm.tiny", "vlm.tokenizer", *_BELIEFS),
    "sft": (
        *("vlm.checkpoint", "vlm.config", "vlm.data", "vlm.inputs", "vlm.loading", "vlm.lora"),
        *("vlm.sft", "vlm.tokenizer", *_BELIEFS),
    ),
    "cache_shard": (
        *("cache", "vlm.config", "vlm.inputs", "vlm.loading", "vlm.lora", "vlm.patch"),
        *("vlm.tokenizer", *_BELIEFS),
    ),
    "cache_gather": ("cache.store", *_TABLES),
    "heads": _HEADS,
    "score": _SCORES,
    "summary": _SCORES,
    "report_figures": ("report", *_SCORES),
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


def source_origin(cfg: WorkflowConfig, source: str) -> Literal["demo", "hub", "hand"]:
    """How a source's files get on disk: rendered by the demo, downloaded from the hub, or placed by hand."""
    if cfg.demo.enabled:
        return "demo"
    return "hub" if download_for_source(cfg.download, source) is not None else "hand"


def stage_params(cfg: WorkflowConfig, stage: str, source: str | None = None) -> dict[str, Any]:
    """The config slice that `stage` (for `source`) reads; nothing more, so nothing else reruns it."""
    if stage == "download":  # `source` names a hub dataset of cfg.download here
        assert source is not None
        return download_params(cfg.download[source])
    src = cfg.sources[source] if source is not None else None
    if stage == "check_source":
        assert src is not None and source is not None
        return layout_params(src) | {"origin": source_origin(cfg, source)}
    if stage == "demo":
        assert src is not None
        return {"kind": src.kind, "root": src.root, "demo": cfg.demo.model_dump()}
    if stage == "ingest":
        assert src is not None
        return {
            "kind": src.kind,
            "root": src.root,
            "annotations": src.annotations,
            "consensus": src.consensus,
            "consensus_clock_fps": src.consensus_clock_fps,
            "split_files": src.split_files,
            "videos": src.videos,
            "strict": cfg.strict,
        }
    if stage == "gate":
        assert src is not None and source is not None
        chain = cfg.gate_chain(source)
        return {
            "provider": chain,
            "scene_truth": src.scene_truth if "scene" in chain else None,
            "gate_scores": src.gate_scores if "scores_file" in chain else None,
            "consensus_ramp_s": cfg.gate.consensus_ramp_s if "consensus" in chain else None,
            # what changes the scores (weights, windows, temperature), not how fast they are computed
            "badas": {
                k: v
                for k, v in cfg.gate.badas.model_dump().items()
                if k not in ("progress", "batch_size", "cache_dir", "device")
            }
            if "badas" in chain
            else None,
            "ticks": cfg.ticks.model_dump(),
            "window": cfg.window.model_dump(),
        }
    if stage == "relabel":
        assert src is not None and source is not None
        return {
            "labels": cfg.labels.model_dump(),
            "gate": {
                k: v
                for k, v in cfg.gate.model_dump().items()
                if k in ("alert_min", "observe_min", "lookback_s")
            },
            "ticks": cfg.ticks.model_dump(),
            "window": cfg.window.model_dump(),
            "prefix_negatives": src.prefix_negatives,
        }
    if stage == "beliefs":
        assert src is not None
        return {
            "beliefs": cfg.beliefs.model_dump(),
            "labels": cfg.labels.model_dump(),
            "window": cfg.window.model_dump(),
            "scene_truth": src.scene_truth,
        }
    if stage == "cache":
        # The tiny model's depth is known now: bad layer lists stop the run at parse time.
        if cfg.model.is_tiny and (problem := cfg.cache.layer_problem(cfg.model.tiny.num_hidden_layers)):
            raise ConfigError(problem)
        return {
            "model": cfg.model.model_dump(),
            "cache": {k: v for k, v in cfg.cache.model_dump().items() if k not in CACHE_SPEED_KEYS},
        }
    if stage == "heads":
        return {"heads": cfg.heads.model_dump()}
    if stage == "score":
        return {"heads": cfg.heads.model_dump()}
    if stage == "summary":
        return {"scoring": cfg.scoring.model_dump(), "ticks": cfg.ticks.model_dump()}
    if stage == "benchmark":
        return {
            "splits": cfg.splits.model_dump(),
            "split_maps": {name: cfg.sources[name].split_map for name in cfg.enabled_sources()},
            "strict": cfg.strict,
        }
    if stage == "tiny_model":
        # what build_tiny_model reads: widths and seed, the prompt texts (tokenizer corpus), geometry
        keys = {"tiny", "system_prompt", "instruction", "image_height", "image_width", "patch_size"}
        keys |= {"temporal_patch_size", "spatial_merge_size", "image_mean", "image_std"}
        return {"model": cfg.model.model_dump(mode="json", include=keys)}
    if stage == "sft":
        return {"model": cfg.model.model_dump(mode="json"), "sft": cfg.sft.result_keys()}
    raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")


def config_for_job(snakemake: Any, stage: str, source: str | None = None) -> WorkflowConfig:
    """Validate the job's config and check its params are the stage's declared slice."""
    cfg = validate_config(snakemake.config)
    expected = stage_params(cfg, stage, source)
    given = snakemake.params.stage
    if given != expected:
        raise ConfigError(f"{stage}: params {given!r} differ from the config slice {expected!r}")
    return cfg


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

    Every way a job can fail ends up in that file: an exception with its traceback (a full disk
    named as such), and a `SystemExit` with its message.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ballast = _reserve_space(log_path.with_name(f".{log_path.name}.reserve"))
    with open(log_path, "w") as fh, contextlib.redirect_stderr(fh):
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
