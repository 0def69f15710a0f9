"""Train one head with one seed on the VLM cache."""

from pathlib import Path

from vlalert.heads.train import train_head
from vlalert.stage_config import HeadsSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, HeadsSlice)
    metrics = train_head(
        snakemake.wildcards.head,
        int(snakemake.wildcards.seed),
        Path(snakemake.input.train_cache).parent,
        Path(snakemake.input.val_cache).parent,
        snakemake.input.train_labels,
        snakemake.input.val_labels,
        job.heads,
        Path(snakemake.output.model).parent,
    )
    log.info("heads %s seed %s: %s", snakemake.wildcards.head, snakemake.wildcards.seed, metrics)
