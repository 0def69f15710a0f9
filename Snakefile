# VLAlert: from public dashcam datasets to tick-level driver alerts.
# Stages (DESIGN.md): demo/download -> ingest -> gate -> relabel -> beliefs -> benchmark
#   -> tiny_model -> sft -> cache -> heads (x seeds) -> score -> summary/report.
# This file only wires: config validation and helpers live in rules/common.smk,
# every computation in the vlalert package.

import os

from snakemake.utils import min_version

min_version("9.0")

# Jobs use the threads they are given: Snakemake sets OMP/MKL/OpenBLAS to a job's `threads`, but
# not polars, whose pool is sized once at import; the rules that use polars run on one thread.
os.environ.setdefault("POLARS_MAX_THREADS", "1")


# A config given on the command line (--configfile) is used alone, on the defaults of
# vlalert/config.py; the embedded demo's config is read only when none is given.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/gate.smk"
include: "rules/relabel.smk"
include: "rules/beliefs.smk"
include: "rules/frames.smk"
include: "rules/benchmark.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/cache.smk"
include: "rules/heads.smk"
include: "rules/score.smk"
include: "rules/report.smk"


# The report's front page (`snakemake --report report.html`); its items: rules/report.smk.
report: "report/workflow.rst"


# A run with a source placed without videos (`videos: false`) stops at the benchmark: SFT, cache and
# scoring read frames.
rule all:
    default_target: True
    input:
        benchmark_outputs(),
        model_outputs() if CFG.frame_sources() == SOURCES else [],
        report_outputs(),
