"""Figures and tables of the report (clip timelines, per-source DAUS bars, reliability diagram)."""

from pathlib import Path

from vlalert.report import write_report
from vlalert.schemas import read_table
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "summary")
    paths = write_report(
        read_table("scores", snakemake.input.scores),
        read_table("benchmark", snakemake.input.benchmark),
        read_table("summary", snakemake.input.summary),
        snakemake.output.figures,
        tick_hz=cfg.ticks.hz,
    )
    tables = Path(snakemake.output.tables)
    tables.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.suffix in (".csv", ".html"):
            path.rename(tables / path.name)
    log.info("report: %s", [p.name for p in paths])
