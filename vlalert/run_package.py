"""A trained run as one self-contained folder: `vlalert export-run` writes it, `Alerter.from_run` reads it.

The workflow's results tree holds a run spread over stages (the model under models/, the adapter
under sft/{run}/, the heads under heads/{run}/{head}/seed{seed}/) and needs the config to find and
use them. `export_run` copies what prediction loads into one folder that any machine can use
without the results tree or the config file:

    OUT/
      run.json                  the manifest (below)
      README.md                 the model card: what the run is, how to use it, its numbers
      model/                    the model directory (the locally built demo model, or a local model
                                directory); absent for a hub model, which run.json names by id + revision
      adapter/                  the peft LoRA adapter; `base_model_name_or_path` in its
                                adapter_config.json rewritten to "./model" or to the hub id
      heads/{danger,policy}/seed{seed}/   model.safetensors, config.json, metrics.json of every seed
      eval/summary.parquet      the run's evaluation summary, when the run has one

run.json (format "vlalert-run", format_version 1):

- `model`: {"source": "directory", "path": "./model"} (a path relative to the run folder) or
  {"source": "hub", "name_or_path": "Qwen/...", "revision": "<commit>", "pinned": true}; a hub
  model without a revision is refused unless exported with `allow_unpinned` (then `pinned: false`,
  said in the card). `original` says where the model was loaded from in the results tree.
- `adapter`: "adapter" or null; `seeds`; `heads`: seed -> {"danger": dir, "policy": dir};
- `fsm`, `ticks`, `window`, `image_size` [h, w], `cache` {belief_layers, policy_layer}: what
  prediction needs, for a reader's eye; `config`: the whole workflow config the run was trained
  with (what loading validates and uses; the fields above must agree with it);
- `files`: every file of the folder but run.json -> {sha256, size, source, source_sha256}: the
  copy's hash and the original's path and hash (they differ only for the rewritten adapter config).

Loading (`load_run`) checks the format, that every listed file is there with its size and sha256
(`verify=False` skips the hashes), that no unlisted file sits in model/, adapter/ or heads/ (an extra
weight file would change what loads), that the adapter names the same base model as run.json, and
validates the config: each problem is a `RunPackageError` whose one line names the file.

Why one module of ~540 lines: it is the format, written and read; the writer and the checks of the
reader must name the same manifest fields, files and folders, and a change to one is a change to
the other (and to FORMAT_VERSION).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vlalert.config import ConfigError, WorkflowConfig, validate_config
from vlalert.download_config import COMMIT_RE
from vlalert.layout import HeadFiles, Layout
from vlalert.predict import PredictError, RunPaths, missing_run_file, one_line, run_paths

FORMAT = "vlalert-run"
FORMAT_VERSION = 1
MANIFEST = "run.json"
CARD = "README.md"
MODEL_DIR = "model"
MODEL_REF = "./model"  # how run.json and the adapter's config name the copied model: a path, never a hub id
ADAPTER_DIR = "adapter"
SUMMARY = "eval/summary.parquet"
HEAD_KINDS = ("danger", "policy")
# Folders whose every file must be listed: an extra weight or config file there changes what loads.
CHECKED_DIRS = (MODEL_DIR, ADAPTER_DIR, "heads")
# Files of a model directory that are never copied: pickle weights (vlalert loads safetensors only).
SKIPPED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What a hub model's snapshot needs for `from_pretrained` (config, weights, tokenizer, templates).
HUB_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken")
# The summary rows the card shows: the heads' policy over all sources.
CARD_METRICS = (
    "daus",
    "daus_U",
    "daus_P",
    "tick_auroc",
    "tick_ap",
    "tick_macro_f1",
    "clip_ap",
    "false_alerts_per_hour",
)


class RunPackageError(PredictError):
    """An exported run that cannot be written or used; the message is one line and names the file."""


def head_dir(kind: str, seed: int) -> str:
    """A head's folder inside an exported run, relative to it."""
    return f"heads/{kind}/seed{seed}"


# ----------------------------------------------------------------------------- export


def _run_config(cfg: WorkflowConfig, run: str | None, results: Path) -> WorkflowConfig:
    """The config with `run` (default: its own) and the results folder the run is read from."""
    raw = cfg.model_dump(mode="json")
    raw["run"] = run if run is not None else cfg.run
    raw["results"] = str(results)
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise RunPackageError(f"--run {run!r}: {one_line(err)}") from None


def _model_reference(
    cfg: WorkflowConfig, model: str, revision: str | None, allow_unpinned: bool
) -> dict[str, Any]:
    """run.json's `model`: a local directory (copied) or a hub id with its revision."""
    if cfg.model.is_tiny or Path(model).is_dir():
        return {"source": "directory", "path": MODEL_REF, "original": str(Path(model).resolve())}
    rev = revision or getattr(cfg.model, "revision", None)
    pinned = rev is not None and COMMIT_RE.fullmatch(rev) is not None  # a branch or tag moves
    if not pinned and not allow_unpinned:
        what = "without a pinned revision" if rev is None else f"at {rev!r}, which is not a commit"
        raise RunPackageError(
            f"model.name_or_path {model!r} is a hub id {what}: pass the 40-character commit the run was "
            "trained with (--revision COMMIT, or model.revision in the config), or --allow-unpinned to "
            "export a run that loads whatever the hub holds when it is used"
        )
    return {"source": "hub", "name_or_path": model, "revision": rev, "pinned": pinned}


def _copy_tree(
    src: Path, dst: Path, skip_suffixes: Sequence[str] = (), skip_names: Sequence[str] = ()
) -> list[tuple[Path, Path]]:
    """Copy the regular files under `src` (hidden ones, `skip_suffixes` and top-level `skip_names`
    left out) -> [(src, dst)]."""
    pairs = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in skip_suffixes or rel.as_posix() in skip_names:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # follows links: a hub cache snapshot's files are links to blobs
        pairs.append((path, target))
    return pairs


def _rewrite_adapter_config(path: Path, model_ref: dict[str, Any]) -> None:
    """Point the copied adapter at the exported model: "./model" (resolved against the run folder
    when loaded) or the hub id and its revision."""
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunPackageError(f"{path}: cannot read the adapter config: {one_line(err)}") from None
    if model_ref["source"] == "directory":
        conf["base_model_name_or_path"] = MODEL_REF
        conf["revision"] = None
    else:
        conf["base_model_name_or_path"] = model_ref["name_or_path"]
        conf["revision"] = model_ref["revision"]
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def export_run(
    results: str | os.PathLike[str],
    run: str | None,
    out: str | os.PathLike[str],
    cfg: WorkflowConfig,
    *,
    seeds: Sequence[int] | None = None,
    revision: str | None = None,
    allow_unpinned: bool = False,
) -> Path:
    """Copy run `run` (default: the config's) of the results tree `results`, trained with `cfg`,
    into the new folder `out`: model (or its hub reference), adapter, the heads of `seeds` (default:
    every configured seed), the run's evaluation summary, run.json and the model card.

    `out` must not exist or be empty; it appears whole or not at all. A hub model needs `revision`
    (or `model.revision` in the config) unless `allow_unpinned`.
    """
    from vlalert import __version__
    from vlalert.atomic import atomic_dir, sha256_file, write_json_atomic

    results = Path(results)
    if not results.is_dir():
        raise RunPackageError(
            f"{results}: results directory missing (RESULTS must be the workflow's results/)"
        )
    cfg = _run_config(cfg, run, results)
    seeds = list(dict.fromkeys(int(s) for s in (cfg.heads.seeds if seeds is None else seeds)))
    if not seeds:
        raise RunPackageError("no seed to export")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunPackageError(f"{out}: already exists and is not an empty folder: export into a new folder")
    runs = [run_paths(cfg, results, s) for s in seeds]
    for paths in runs:
        if problem := missing_run_file(paths, model_is_tiny=cfg.model.is_tiny):
            if str(paths.danger) in problem or str(paths.policy) in problem:
                problem += f"; or leave seed {paths.seed} out (--seeds)"
            raise RunPackageError(problem)
    model_ref = _model_reference(cfg, runs[0].model, revision, allow_unpinned)
    layout = Layout(str(results), cfg.run)
    copied: list[tuple[Path, str]] = []  # (source, path inside the package)

    with atomic_dir(out) as tmp:
        if model_ref["source"] == "directory":
            pairs = _copy_tree(Path(runs[0].model), tmp / MODEL_DIR, SKIPPED_SUFFIXES)
            copied += [(src, dst.relative_to(tmp).as_posix()) for src, dst in pairs]
        adapter = runs[0].adapter
        if adapter is not None:
            # peft's README.md is its blank card template naming the original model's path
            pairs = _copy_tree(Path(adapter), tmp / ADAPTER_DIR, skip_names=("README.md",))
            copied += [(src, dst.relative_to(tmp).as_posix()) for src, dst in pairs]
            _rewrite_adapter_config(tmp / ADAPTER_DIR / "adapter_config.json", model_ref)
        heads: dict[str, dict[str, str]] = {}
        for paths in runs:
            heads[str(paths.seed)] = {}
            for kind, src_dir in zip(HEAD_KINDS, (paths.danger, paths.policy), strict=True):
                rel = head_dir(kind, paths.seed)
                src, dst = HeadFiles(str(src_dir)), HeadFiles(str(tmp / rel))
                Path(dst.dir).mkdir(parents=True)
                for a, b in ((src.model, dst.model), (src.config, dst.config), (src.metrics, dst.metrics)):
                    if Path(a).is_file():
                        shutil.copyfile(a, b)
                        copied.append((Path(a), Path(b).relative_to(tmp).as_posix()))
                heads[str(paths.seed)][kind] = rel
        summary = None
        if Path(layout.eval_summary).is_file():
            (tmp / SUMMARY).parent.mkdir(parents=True)
            shutil.copyfile(layout.eval_summary, tmp / SUMMARY)
            copied.append((Path(layout.eval_summary), SUMMARY))
            summary = SUMMARY
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vlalert_version": __version__,
            "run": cfg.run,
            "exported_from": str(results.resolve()),
            "model": model_ref,
            "adapter": ADAPTER_DIR if adapter is not None else None,
            "seeds": seeds,
            "heads": heads,
            "eval_summary": summary,
            **_prediction_facts(cfg),
            "config": cfg.model_dump(mode="json"),
        }
        (tmp / CARD).write_text(model_card(manifest, tmp), encoding="utf-8")
        files: dict[str, dict[str, Any]] = {}
        for src, rel in copied:
            files[rel] = {
                "sha256": sha256_file(tmp / rel),
                "size": (tmp / rel).stat().st_size,
                "source": str(src.resolve()),
                "source_sha256": sha256_file(src),
            }
        files[CARD] = {"sha256": sha256_file(tmp / CARD), "size": (tmp / CARD).stat().st_size}
        manifest["files"] = files
        write_json_atomic(manifest, tmp / MANIFEST)
    return out


def _prediction_facts(cfg: WorkflowConfig) -> dict[str, Any]:
    """What prediction needs beside the files, as run.json shows it (the config holds the same)."""
    return {
        "fsm": cfg.heads.fsm.model_dump(mode="json"),
        "ticks": cfg.ticks.model_dump(mode="json"),
        "window": cfg.window.model_dump(mode="json"),
        "image_size": list(cfg.model.image_size),
        "cache": {"belief_layers": list(cfg.cache.belief_layers), "policy_layer": cfg.cache.policy_layer},
    }


# ----------------------------------------------------------------------------- the model card


def _summary_rows(path: Path) -> list[str]:
    """The card's metrics table: the heads' policy over all sources, mean ± std over seeds."""
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except Exception:  # a summary the card cannot read is left out, the file itself is still copied
        return []
    found = {r["metric"]: r for r in rows if r.get("policy") == "heads" and r.get("source") == "all"}
    lines = []
    for metric in CARD_METRICS:
        if (r := found.get(metric)) is None or r.get("mean") is None:
            continue
        std = f" ± {r['std']:.3f}" if r.get("std") is not None else ""
        lines.append(f"| {metric} | {r['mean']:.3f}{std} | {r['n_seeds']} |")
    return ["| metric | mean ± std | seeds |", "| --- | --- | --- |", *lines] if lines else []


def model_card(manifest: dict[str, Any], folder: Path) -> str:
    """README.md of an exported run: what it is, how to use it, what it was trained and scored with."""
    m = manifest
    cfg = m["config"]
    ref = m["model"]
    if ref["source"] == "directory":
        tiny = cfg["model"]["name_or_path"] == "tiny-qwen3vl"
        model = f"`{MODEL_DIR}/` (a copy of {'the demo model built locally' if tiny else ref['original']})"
    elif ref["pinned"]:
        model = f"`{ref['name_or_path']}` on the Hugging Face hub at revision `{ref['revision']}`"
    else:
        model = (
            f"`{ref['name_or_path']}` on the Hugging Face hub, **unpinned** (exported with "
            "--allow-unpinned: it loads whatever the hub holds when it is used)"
        )
    front = ["---", "library_name: peft", "tags: [vlalert, dashcam, driver-alerts]"]
    if ref["source"] == "hub":
        front.append(f"base_model: {ref['name_or_path']}")
    front.append("---")
    fsm = ", ".join(f"{k}={v}" for k, v in m["fsm"].items())
    window = m["window"]
    lines = [
        *front,
        "",
        f"# VLAlert run `{m['run']}`",
        "",
        "Says SILENT, OBSERVE or ALERT for every tick of a dashcam video: a vision-language model with a",
        "LoRA adapter writes an analysis and a safety belief per tick, a DangerHead and a PolicyHead read",
        "its hidden states, and a finite-state decoder turns the policy's probabilities into the action.",
        "",
    ]
    if cfg["model"]["name_or_path"] == "tiny-qwen3vl":
        lines += [
            "**Demo run.** The model is the toy-width, randomly initialised demo model trained on synthetic",
            "clips: its alerts mean nothing on real driving. It exists to show the pipeline end to end.",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```bash",
        "vlalert predict clip.mp4 --run .          # clip.vlalert.parquet + clip.vlalert.png",
        'vlalert predict "videos/*.mp4" --run . --out-dir predictions/',
        "```",
        "",
        "```python",
        "from vlalert import Alerter",
        "",
        'alerter = Alerter.from_run("path/to/this/folder")',
        'ticks = alerter.predict("clip.mp4")  # a pyarrow Table, one row per tick',
        "```",
        "",
        "## What it is",
        "",
        f"- model: {model}",
        f"- adapter: `{m['adapter']}/`" if m["adapter"] else "- adapter: none (the base model as loaded)",
        f"- heads: DangerHead and PolicyHead of seeds {', '.join(map(str, m['seeds']))}; prediction "
        "averages their probabilities over the seeds and decodes the mean with the FSM",
        f"- ticks at {m['ticks']['hz']:g} Hz, each sees {window['frames']} frames over the last "
        f"{window['span_s']:g} s, resized to {m['image_size'][0]}x{m['image_size'][1]}",
        f"- hidden states: z from layers {m['cache']['belief_layers']}, "
        f"r from layer {m['cache']['policy_layer']}",
        f"- FSM: {fsm}",
        f"- exported by vlalert {m['vlalert_version']} from `{m['exported_from']}`; run.json lists every "
        "file with its sha256 (checked when the run is loaded) and the whole config it was trained with",
        "",
    ]
    if m.get("eval_summary"):
        table = _summary_rows(folder / m["eval_summary"])
        if table:
            lines += [
                "## Evaluation",
                "",
                f"The run's own evaluation (`{m['eval_summary']}`), heads policy over all sources:",
                "",
                *table,
                "",
            ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- load


@dataclass(frozen=True)
class PackagedRun:
    """An exported run, checked: its folder, manifest, config and the resolved files prediction loads."""

    dir: Path
    manifest: dict[str, Any]
    cfg: WorkflowConfig
    model: str  # a local directory (the copy, or the hub snapshot of the pinned revision) or a hub id
    adapter: str | None
    heads: dict[int, tuple[Path, Path]]  # seed -> (danger dir, policy dir)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.heads)

    def run_paths(self, seed: int) -> RunPaths:
        if seed not in self.heads:
            raise RunPackageError(
                f"{self.dir / MANIFEST}: no heads of seed {seed} (exported seeds: "
                f"{', '.join(map(str, self.seeds))})"
            )
        danger, policy = self.heads[seed]
        return RunPaths(self.dir, self.model, self.adapter, danger, policy, seed)


def is_packaged_run(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder with a run.json (an exported run, not a results tree)."""
    return (Path(path) / MANIFEST).is_file()


def _inside(folder: Path, rel: str, where: str) -> Path:
    """`folder / rel` for a relative POSIX path that stays inside `folder`."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise RunPackageError(f"{folder / MANIFEST}: {where} {rel!r} is not a path inside the run folder")
    return folder.joinpath(*pure.parts)


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise RunPackageError(f"{folder}: run folder missing")
    if not path.is_file():
        raise RunPackageError(
            f"{path}: file missing: not an exported run (make one with `vlalert export-run`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunPackageError(f"{path}: unreadable manifest: {one_line(err)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunPackageError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunPackageError(
            f"{path}: format_version {version!r}: this vlalert reads up to {FORMAT_VERSION} (upgrade vlalert)"
        )
    for key in ("model", "seeds", "heads", "config", "files"):
        if key not in manifest:
            raise RunPackageError(f"{path}: no {key!r} entry")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], *, hashes: bool = True) -> None:
    """Every listed file present with its size (and sha256); nothing unlisted where weights load from."""
    from vlalert.atomic import sha256_file

    files = manifest["files"]
    listed = set()
    for rel, entry in sorted(files.items()):
        path = _inside(folder, rel, "file")
        listed.add(path)
        if not path.is_file():
            raise RunPackageError(f"{path}: file missing (run.json lists it): re-export the run")
        if path.stat().st_size != entry.get("size") or (hashes and sha256_file(path) != entry.get("sha256")):
            raise RunPackageError(
                f"{path}: contents differ from run.json (changed after export): re-export the run"
            )
    for name in CHECKED_DIRS:
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and path not in listed:
                raise RunPackageError(f"{path}: not part of the exported run (run.json does not list it)")


def _check_facts(folder: Path, manifest: dict[str, Any], cfg: WorkflowConfig) -> None:
    """run.json's readable copies of the FSM, window, ticks, ... must say what its config says."""
    for key, value in _prediction_facts(cfg).items():
        if key in manifest and manifest[key] != value:
            raise RunPackageError(
                f"{folder / MANIFEST}: {key!r} differs from the config it lists ({manifest[key]!r} vs "
                f"{value!r}): the manifest was edited; re-export the run"
            )


def resolve_model(folder: Path, ref: dict[str, Any]) -> str:
    """Where the model loads from: the run's copy, the hub snapshot of the pinned revision (fetched
    into the hub cache when not there yet), or the bare hub id of an unpinned export."""
    source = ref.get("source")
    if source == "directory":
        path = _inside(folder, str(ref.get("path", "")), "model path")
        if not (path / "config.json").is_file():
            raise RunPackageError(f"{path / 'config.json'}: file missing: the run's model is incomplete")
        return str(path)
    if source != "hub" or not ref.get("name_or_path"):
        raise RunPackageError(f"{folder / MANIFEST}: model must be a directory or a hub id, got {ref!r}")
    if not ref.get("revision"):
        return str(ref["name_or_path"])
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id=ref["name_or_path"], revision=ref["revision"], allow_patterns=list(HUB_PATTERNS)
        )
    except Exception as err:  # offline, unknown revision, no access: the hub says which
        raise RunPackageError(
            f"{folder / MANIFEST}: cannot get model {ref['name_or_path']} at revision {ref['revision']}: "
            f"{one_line(err)}"
        ) from None


def _check_adapter(folder: Path, adapter: Path, ref: dict[str, Any]) -> None:
    """The copied adapter must name the run's model (the path relative to the run folder, or the hub id)."""
    conf_path = adapter / "adapter_config.json"
    try:
        base = json.loads(conf_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as err:
        raise RunPackageError(f"{conf_path}: unreadable adapter config: {one_line(err)}") from None
    want = ref.get("path") if ref.get("source") == "directory" else ref.get("name_or_path")
    if base != want:
        raise RunPackageError(
            f"{conf_path}: base_model_name_or_path {base!r} is not the run's model {want!r}: "
            "re-export the run"
        )
    if ref.get("source") == "directory":
        _inside(folder, str(base), "the adapter's base model")  # resolved against the run folder


def load_run(folder: str | os.PathLike[str], *, verify: bool = True) -> PackagedRun:
    """Read and check an exported run (`verify`: also compare every file's sha256 with run.json)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    verify_files(folder, manifest, hashes=verify)
    try:
        cfg = validate_config(manifest["config"])
    except ConfigError as err:
        raise RunPackageError(f"{folder / MANIFEST}: config: {one_line(err)}") from None
    _check_facts(folder, manifest, cfg)
    ref = manifest["model"]
    adapter = None
    if manifest.get("adapter"):
        adapter_dir = _inside(folder, str(manifest["adapter"]), "adapter")
        _check_adapter(folder, adapter_dir, ref)
        adapter = str(adapter_dir)
    heads: dict[int, tuple[Path, Path]] = {}
    for seed in manifest["seeds"]:
        entry = manifest["heads"].get(str(seed))
        if not isinstance(entry, dict) or set(entry) != set(HEAD_KINDS):
            raise RunPackageError(
                f"{folder / MANIFEST}: heads of seed {seed} must name a danger and a policy folder"
            )
        dirs = [_inside(folder, str(entry[k]), f"{k} head") for k in HEAD_KINDS]
        for d in dirs:
            files = HeadFiles(str(d))
            for needed in (files.config, files.model):
                if not Path(needed).is_file():
                    raise RunPackageError(f"{needed}: file missing: re-export the run")
        heads[int(seed)] = (dirs[0], dirs[1])
    if not heads:
        raise RunPackageError(f"{folder / MANIFEST}: no seed")
    model = resolve_model(folder, ref)
    return PackagedRun(folder, manifest, cfg, model, adapter, heads)
