"""Check a source placed by hand: fail with every missing file or folder at once, and where to get it."""

from vlalert.download import check_source_layout, format_problems, write_json
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "check_source", source)
    report = check_source_layout(source, cfg.sources[source])
    for warning in report.warnings:
        log.warning("%s", warning)
    if not report.ok:
        message = format_problems(report)
        log.error("%s", message)
        raise SystemExit(message)
    write_json(report.to_json(), snakemake.output.layout)
    log.info("check_source %s: layout complete, %s", source, report.found)
