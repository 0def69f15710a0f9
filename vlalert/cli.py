"""The `vlalert` command line: small tools around the workflow (the workflow itself is `snakemake`)."""

from __future__ import annotations

import argparse
import sys

from vlalert import __version__
from vlalert.config import ConfigError, load_config


def _check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except (ConfigError, OSError) as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{args.file}: valid (run {cfg.run!r}, results in {cfg.results}/)")
    for name in cfg.enabled_sources():
        src = cfg.sources[name]
        print(f"  source {name}: kind {src.kind}, root {src.root}, gate {cfg.gate_provider(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalert", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vlalert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate a workflow config file")
    check.add_argument("file")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
