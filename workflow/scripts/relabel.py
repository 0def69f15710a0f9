"""Tick labels of one source: the risky-time + 2 s rule with BADAS gating."""

from vlalert.labels import label_source
from vlalert.schemas import read_table, write_table
from vlalert.stage_config import RelabelSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, RelabelSlice)
    videos = read_table("videos", snakemake.input.videos)
    gate = read_table("gate", snakemake.input.gate)
    labels = label_source(videos, gate, source, job)
    write_table("labels", labels, snakemake.output.labels)
    log.info("relabel %s: %d ticks", source, labels.num_rows)
