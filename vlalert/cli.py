"""The `vlalert` command line: small tools around the workflow (the workflow itself is `snakemake`).

- `vlalert check-config FILE`: validate a config, then show what `snakemake` would run with it;
- `vlalert predict VIDEO... --run RUN`: run a trained run (an exported one, or the workflow's results
  directory) on videos or glob patterns (vlalert.alerter, vlalert.predict);
- `vlalert export-run RESULTS --run NAME OUT/`: a trained run as a self-contained folder
  (vlalert.run_package);
- `vlalert convert-badas IN.pth OUT_DIR`: Open-BADAS's released checkpoint -> safetensors
  (vlalert.badas.convert).

Exit codes: 0 success, 2 an input that cannot be used (invalid config, missing run, unreadable or
too short video, a tampered exported run; one line on stderr naming the path), 1 the Snakemake dry
run failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import vlalert
from vlalert import __version__
from vlalert.config import ConfigError, WorkflowConfig, load_config

DEFAULT_CONFIG = "config/config.yaml"


def _one_line(err: BaseException) -> str:
    """A multi-line error (a config's list of keys) as one line, its parts joined by "; "."""
    parts = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not parts:
        return type(err).__name__
    head, rest = parts[0], parts[1:]
    if head.endswith(":") and rest:
        return f"{head} {'; '.join(rest)}"
    return "; ".join(parts)


def _fail(message: str) -> int:
    print(f"vlalert: {message}", file=sys.stderr)
    return 2


def _load(path: str) -> WorkflowConfig:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found")
    return load_config(path)


# ----------------------------------------------------------------------------- check-config


def default_snakefile() -> Path:
    """The repository's Snakefile, beside the vlalert package (an editable install or a checkout)."""
    return Path(vlalert.__file__).resolve().parents[1] / "Snakefile"


def job_table(output: str) -> str | None:
    """The first "Job stats:" table of a dry run's output (Snakemake prints it twice), or None."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Job stats:"), None)
    if start is None:
        return None
    table = []
    for line in lines[start:]:
        table.append(line)
        if line.split()[:1] == ["total"]:
            return "\n".join(table)
    return None


def dry_run(
    config_file: str | os.PathLike[str], snakefile: str | os.PathLike[str]
) -> subprocess.CompletedProcess:
    """`snakemake -n` in the working directory, as `snakemake --configfile FILE` would run there.

    `--quiet rules host` keeps the job counts table and drops the per-job listing (a bare `-q`
    drops the table too in Snakemake 9).
    """
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "host"]
    cmd += ["-s", str(snakefile), "--configfile", str(config_file)]
    return subprocess.run(cmd, capture_output=True, text=True)


_YTE_RE = re.compile(r"^__use_yte__\s*:\s*(true|True|TRUE|yes|Yes|on)\s*(#.*)?$", re.M)


def yte_warning(path: str | os.PathLike[str]) -> str | None:
    """A warning when the file opts into yte templating, which makes loading it run Python."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not _YTE_RE.search(text):
        return None
    return (
        f"WARNING: {path} sets `__use_yte__: true`: snakemake renders it with yte, which runs the Python "
        "in it (`?...` expressions, `__definitions__` imports) with your permissions when the config is "
        "loaded. Read it before using a config file you did not write."
    )


def _check_config(args: argparse.Namespace) -> int:
    if warning := yte_warning(args.file):
        print(warning, file=sys.stderr)
    try:
        cfg = _load(args.file)
    except (ConfigError, OSError) as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{args.file}: valid (run {cfg.run!r}, results in {cfg.results}/)")
    for name in cfg.enabled_sources():
        src = cfg.sources[name]
        print(f"  source {name}: kind {src.kind}, root {src.root}, gate {' -> '.join(cfg.gate_chain(name))}")
    snakefile = Path(args.snakefile) if args.snakefile else default_snakefile()
    if not snakefile.is_file():
        print(f"{snakefile}: Snakefile not found, no dry run (pass --snakefile PATH)")
        return 0
    res = dry_run(args.file, snakefile)
    out = res.stdout + res.stderr
    if res.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-15:])
        print(f"snakemake dry run failed (exit {res.returncode}):\n{tail}", file=sys.stderr)
        return 1
    table = job_table(out)
    if table is not None:
        print(f"snakemake would run (dry run of {snakefile}, working directory {Path.cwd()}):")
        print(table)
    elif "Nothing to be done" in out:
        print("snakemake: nothing to be done (every output is present and up to date)")
    else:
        print("snakemake dry run printed no job table:\n" + out.strip())
    return 0


# ----------------------------------------------------------------------------- predict


def _alerter(args: argparse.Namespace):
    """The run `--run` names: an exported run (its own config) or the workflow's results tree."""
    from vlalert.alerter import Alerter
    from vlalert.run_package import is_packaged_run

    if is_packaged_run(args.run):
        if args.config is not None:
            raise ConfigError(f"{args.run}: an exported run carries its own config: leave --config out")
        seeds = [args.seed] if args.seed is not None else None
        return Alerter.from_run(args.run, seeds=seeds, device=args.device, verbose=args.verbose)
    cfg = _load(args.config or DEFAULT_CONFIG)
    seed = args.seed if args.seed is not None else cfg.heads.seeds[0]
    return Alerter.from_results(args.run, cfg, seeds=[seed], device=args.device, verbose=args.verbose)


def _predict(args: argparse.Namespace) -> int:
    from vlalert.predict import PredictError, expand_videos, output_prefixes, summary_line

    try:
        videos = expand_videos(args.video)
        prefixes = output_prefixes(videos, args.out, args.out_dir)
        alerter = _alerter(args)
        clips = alerter.iter_predict(videos, fps=args.fps, progress=sys.stderr.isatty())
        for clip, prefix in zip(clips, prefixes, strict=True):
            result = alerter.write(clip, prefix, args.format)
            print(f"{clip.video}: {summary_line(result)}")
            print(f"wrote {result.table_path}")
            print(f"wrote {result.png_path}")
    except (ConfigError, OSError) as err:
        return _fail(_one_line(err))
    except PredictError as err:
        return _fail(str(err))
    return 0


# ----------------------------------------------------------------------------- export-run


def _export_run(args: argparse.Namespace) -> int:
    from vlalert.run_package import RunPackageError, export_run, read_manifest

    try:
        cfg = _load(args.config)
        out = export_run(
            args.results,
            args.run,
            args.out,
            cfg,
            seeds=args.seeds,
            revision=args.revision,
            allow_unpinned=args.allow_unpinned,
        )
        manifest = read_manifest(out)
    except (ConfigError, OSError) as err:
        return _fail(_one_line(err))
    except RunPackageError as err:
        return _fail(str(err))
    ref = manifest["model"]
    model = (
        ref["path"]
        if ref["source"] == "directory"
        else f"{ref['name_or_path']}@{ref['revision'] or 'UNPINNED'}"
    )
    seeds = ", ".join(map(str, manifest["seeds"]))
    print(
        f"exported run {manifest['run']!r} to {out}: model {model}, seeds {seeds}, "
        f"{len(manifest['files'])} files"
    )
    print(f"use it: vlalert predict VIDEO --run {out}   (Python: Alerter.from_run({str(out)!r}))")
    return 0


# ----------------------------------------------------------------------------- convert-badas


def _convert_badas(args: argparse.Namespace) -> int:
    from vlalert.badas.convert import ConvertError, convert_checkpoint, read_config_file, summary

    try:
        config = read_config_file(args.config) if args.config else None
        result = convert_checkpoint(args.checkpoint, args.out_dir, config)
    except (ConvertError, OSError) as err:
        return _fail(_one_line(err))
    print(summary(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"vlalert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a workflow config and show what the DAG would run")
    check.add_argument("file", help="the workflow config (YAML) to check, as `--configfile` takes it")
    check.add_argument(
        "--snakefile", default=None, help="Snakefile for the dry run (default: the repository's)"
    )
    check.set_defaults(func=_check_config)

    pred = sub.add_parser(
        "predict", help="run a trained run on videos: per-tick table and timeline PNG for each"
    )
    pred.add_argument(
        "video",
        nargs="+",
        help="video files (mp4, ...), folders of frame images (need --fps), or quoted glob patterns "
        '("videos/*.mp4", "**" reaches into folders)',
    )
    pred.add_argument(
        "--run",
        required=True,
        metavar="RUN",
        help="a run exported with `vlalert export-run`, or the workflow's results directory",
    )
    pred.add_argument(
        "--config",
        default=None,
        help=f"workflow config of a results directory (default: {DEFAULT_CONFIG}); "
        "an exported run carries its own",
    )
    pred.add_argument(
        "--seed",
        type=int,
        default=None,
        help="heads seed (default: the mean over every seed of an exported run; the first in "
        "heads.seeds of a results directory)",
    )
    pred.add_argument(
        "--out",
        default=None,
        metavar="OUT_PREFIX",
        help="one video: writes OUT_PREFIX.{parquet,csv} and OUT_PREFIX.png",
    )
    pred.add_argument(
        "--out-dir",
        default=None,
        metavar="DIR",
        help="writes DIR/<video name>.vlalert.{parquet,csv,png} for each video "
        "(default: the working directory)",
    )
    pred.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="per-tick table (default: parquet)"
    )
    pred.add_argument("--fps", type=float, default=None, help="frame rate of a frame folder")
    pred.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="default: cache.device of the run's config",
    )
    pred.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own warnings, log lines and loading bars (hidden by default)",
    )
    pred.set_defaults(func=_predict)

    export = sub.add_parser(
        "export-run",
        help="copy a trained run into a self-contained folder (model or its pinned hub reference, adapter, "
        "heads of every seed, config, model card) that `predict` and `Alerter.from_run` use on their own",
    )
    export.add_argument("results", metavar="RESULTS", help="the workflow's results directory holding the run")
    export.add_argument("out", metavar="OUT", help="the new folder to write (must not exist, or be empty)")
    export.add_argument(
        "--run", default=None, metavar="NAME", help="the run to export (default: the config's run)"
    )
    export.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"the config the run was trained with (default: {DEFAULT_CONFIG})",
    )
    export.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="heads seeds to include (default: every seed in heads.seeds)",
    )
    export.add_argument(
        "--revision",
        default=None,
        metavar="COMMIT",
        help="the hub revision a hub model was trained with (default: model.revision of the config, if any)",
    )
    export.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="export a hub model without a revision (recorded as unpinned: it loads whatever "
        "the hub holds when used)",
    )
    export.set_defaults(func=_export_run)

    conv = sub.add_parser(
        "convert-badas",
        help="Open-BADAS's released .pth (read with torch.load weights_only=True) -> "
        "model.safetensors + config.json",
    )
    conv.add_argument(
        "checkpoint", metavar="IN.pth", help="e.g. weights/badas_open.pth from nexar-ai/BADAS-Open"
    )
    conv.add_argument("out_dir", metavar="OUT_DIR", help="directory for model.safetensors + config.json")
    conv.add_argument(
        "--config",
        default=None,
        metavar="CONFIG_JSON",
        help="a BADAS model config JSON (default: the released ViT-L/16); the checkpoint's own head "
        "hyper-parameters apply on top, as in Open-BADAS's loader",
    )
    conv.set_defaults(func=_convert_badas)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
