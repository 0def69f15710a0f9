"""Metrics of every policy on the test split, mean ± std over seeds, and the plain-text table."""

from vlalert.schemas import read_table, write_table
from vlalert.summary import format_summary, summarize_scores
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "summary")
    scores = read_table("scores", snakemake.input.scores)
    benchmark = read_table("benchmark", snakemake.input.benchmark)
    summary = summarize_scores(scores, benchmark, cfg.scoring, cfg.ticks.hz)
    write_table("summary", summary, snakemake.output.summary)
    text = format_summary(summary)
    with open(snakemake.output.table, "w") as fh:
        fh.write(text + "\n")
    log.info("test split, all sources:\n%s", text)
    print(text)
