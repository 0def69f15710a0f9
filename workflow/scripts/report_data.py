"""The report's data pages: run overview, ticks per split x source x action, rejections."""

from vlalert.report.data import write_data_report
from vlalert.report.facts import read_facts
from vlalert.schemas import read_table
from vlalert.stage_config import SummarySlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job_slice(snakemake, SummarySlice)  # checks the params; the pages read only their input files
    sources = list(snakemake.params.sources)
    facts = read_facts(snakemake.input.manifest, sources)
    rejected = {s: read_table("rejected", p) for s, p in zip(sources, snakemake.input.rejected, strict=True)}
    paths = write_data_report(
        facts,
        rejected,
        overview=snakemake.output.overview,
        counts=snakemake.output.counts,
        rejections=snakemake.output.rejected,
    )
    log.info(
        "report data: %s; sources without test clips: %s",
        [p.name for p in paths],
        facts.sources_without("test"),
    )
