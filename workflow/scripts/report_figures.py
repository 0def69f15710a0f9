"""Figures and tables of the evaluation (clip timelines, per-source DAUS bars, reliability diagram)."""

from pathlib import Path

from vlalert.report.evaluation import write_report
from vlalert.schemas import read_table
from vlalert.stage_config import SummarySlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, SummarySlice)
    figures = Path(snakemake.output.bars).parent
    paths = write_report(
        read_table("scores", snakemake.input.scores),
        read_table("benchmark", snakemake.input.benchmark),
        read_table("summary", snakemake.input.summary),
        figures,
        tick_hz=job.ticks.hz,
        sources=snakemake.params.sources,  # every source gets its timelines, one without clips says so
    )
    tables = Path(snakemake.output.tables)
    tables.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.suffix in (".csv", ".html"):
            path.rename(tables / path.name)
    log.info("report: %s", [p.name for p in paths])
