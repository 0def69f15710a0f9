"""Render one source's synthetic demo corpus in that source's own format."""

from vlalert.sources.synthetic import make_demo_source
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "demo", source)
    manifest = make_demo_source(cfg.sources[source].kind, cfg.sources[source].root, cfg.demo)
    log.info("demo %s: %d clips, %d faults", source, len(manifest["clips"]), len(manifest["faults"]))
