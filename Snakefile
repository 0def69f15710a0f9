# VLAlert: from public dashcam datasets to tick-level driver alerts.
# Stages (DESIGN.md): demo/download -> ingest -> gate -> relabel -> beliefs -> benchmark
#   -> tiny_model -> sft -> cache -> heads (x seeds) -> score -> summary/report.
# This file only wires: config validation and helpers live in rules/common.smk,
# every computation in the vlalert package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/gate.smk"
include: "rules/relabel.smk"
include: "rules/beliefs.smk"
include: "rules/benchmark.smk"
include: "rules/model.smk"
include: "rules/sft.smk"
include: "rules/cache.smk"
include: "rules/heads.smk"
include: "rules/score.smk"


rule all:
    default_target: True
    input:
        benchmark_outputs(),
        f"{R}/eval/{RUN}/summary.parquet",
        f"{R}/eval/{RUN}/figures",
