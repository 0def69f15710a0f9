"""Metrics of every policy on the test split, mean ± std over seeds, and the plain-text table."""

from vlalert.schemas import read_table, write_table
from vlalert.stage_config import SummarySlice
from vlalert.summary import format_summary, summarize_scores
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, SummarySlice)
    scores = read_table("scores", snakemake.input.scores)
    benchmark = read_table("benchmark", snakemake.input.benchmark)
    summary = summarize_scores(scores, benchmark, job.scoring, job.ticks.hz)
    write_table("summary", summary, snakemake.output.summary)
    text = format_summary(summary)
    with open(snakemake.output.table, "w") as fh:
        fh.write(text + "\n")
    log.info("test split, all sources:\n%s", text)
    print(text)
