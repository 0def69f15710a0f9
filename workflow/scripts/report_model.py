"""The report's training curves (SFT, heads per seed) and belief-span views (vlalert.report)."""

import json
from pathlib import Path

from vlalert.report.beliefs import write_belief_report
from vlalert.report.training import write_training_report
from vlalert.schemas import read_table
from vlalert.stage_config import SummarySlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job_slice(snakemake, SummarySlice)  # checks the params; the figures read only their input files
    head_logs: dict[str, dict[int, object]] = {}
    kept: dict[str, dict[int, int | None]] = {}
    # the head inputs are listed in the order of params.head_seeds
    pairs = zip(
        snakemake.params.head_seeds, snakemake.input.head_logs, snakemake.input.head_metrics, strict=True
    )
    for (head, seed), log_path, metrics_path in pairs:
        head_logs.setdefault(head, {})[seed] = read_table("heads_train_log", log_path)
        kept.setdefault(head, {})[seed] = json.loads(Path(metrics_path).read_text()).get("kept_epoch")
    sft_log = snakemake.input.get("sft_log")  # absent when the run uses no adapter of its own
    paths = write_training_report(
        read_table("sft_train_log", sft_log) if sft_log else None,
        head_logs,
        kept,
        sft_out=snakemake.output.sft_loss,
        head_out=dict(zip(head_logs, snakemake.output.head_loss, strict=True)),
        run=snakemake.params.run,
    )
    paths += write_belief_report(
        read_table("benchmark", snakemake.input.benchmark),
        Path(snakemake.input.cache).parent,
        read_table("scores", snakemake.input.scores),
        dict(zip(snakemake.params.sources, snakemake.output.belief_spans, strict=True)),
    )
    log.info("report model: %s", [p.name for p in paths])
