"""Tick labels of one source: the risky-time + 2 s rule with BADAS gating."""

from vlalert.labels import label_source
from vlalert.schemas import read_table, write_table
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "relabel", source)
    videos = read_table("videos", snakemake.input.videos)
    gate = read_table("gate", snakemake.input.gate)
    labels = label_source(videos, gate, source, cfg)
    write_table("labels", labels, snakemake.output.labels)
    log.info("relabel %s: %d ticks", source, labels.num_rows)
