"""Ingest one source: adapters + video probing -> videos.parquet and rejected.parquet."""

from vlalert.ingest import ingest_source, write_ingest
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "ingest", source)
    clips, rejections, decisions = ingest_source(source, cfg.sources[source], strict=cfg.strict)
    write_ingest(
        clips,
        rejections,
        snakemake.output.videos,
        snakemake.output.rejected,
        decisions,
        snakemake.output.consensus,
    )
    for d in decisions:
        if d.decision != "applied":
            log.info("consensus %s (%s): %s: %s", d.video_id, d.csv_id, d.decision, d.reason)
    for r in rejections:
        log.warning("rejected %s", r.reason)
    log.info("ingest %s: %d accepted, %d rejected", source, len(clips), len(rejections))
