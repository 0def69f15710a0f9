"""Ingest one source: adapters + video probing -> videos.parquet and rejected.parquet."""

from vlalert.ingest import ingest_source, write_ingest
from vlalert.stage_config import IngestSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, IngestSlice)
    clips, rejections, decisions = ingest_source(source, job.source, strict=job.strict)
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
