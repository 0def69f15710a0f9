"""Fetch one hub dataset at its pinned commit, verify it, write the completion marker (files + sha256)."""

from vlalert.download import DownloadError, hub_download, token_from_env, write_json
from vlalert.stage_config import DownloadSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
name = snakemake.wildcards.name
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, DownloadSlice)
    try:
        record = hub_download(name, job.download, token=token_from_env())
    except DownloadError as err:
        log.error("%s", err)
        raise SystemExit(f"download {name}: {err}") from None
    write_json(record.to_json(), snakemake.output.marker)
    log.info(
        "download %s: %s at %s, %d files, %d bytes",
        name,
        record.repo_id,
        record.commit,
        len(record.files),
        record.total_bytes,
    )
