"""Check a source's layout (placed by hand: fail with every missing item) and write its file manifest."""

from vlalert.download import check_source_layout, format_problems, write_json
from vlalert.source_files import listing_fingerprint, listing_summary, source_listing
from vlalert.stage_config import CheckSourceSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, CheckSourceSlice)
    origin = job.origin
    report = check_source_layout(source, job.source)
    for warning in report.warnings:
        log.warning("%s", warning)
    if not report.ok:
        message = format_problems(report)
        if origin == "hand":
            log.error("%s", message)
            raise SystemExit(message)
        # rendered by the demo or fetched at a pinned commit: ingest rejects what is missing, clip by clip
        log.warning("%s", message)
    listing = source_listing(job.source)
    files = listing_fingerprint(listing)
    if files != snakemake.params.files:
        # Snakemake records the fingerprint it computed before this job: the next run sees the change
        log.warning(
            "check_source %s: files changed since the DAG was built; the next run reruns ingest", source
        )
    write_json(report.to_json() | {"fingerprint": files, "files": listing}, snakemake.output.layout)
    log.info(
        "check_source %s (%s): layout %s, %s",
        source,
        origin,
        "complete" if report.ok else "incomplete",
        listing_summary(listing),
    )
