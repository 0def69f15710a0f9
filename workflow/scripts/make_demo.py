"""Render one source's synthetic demo corpus in that source's own format."""

from vlalert.sources.synthetic import make_demo_source
from vlalert.stage_config import DemoSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, DemoSlice)
    manifest = make_demo_source(job.source.kind, job.source.root, job.demo)
    log.info("demo %s: %d clips, %d faults", source, len(manifest["clips"]), len(manifest["faults"]))
