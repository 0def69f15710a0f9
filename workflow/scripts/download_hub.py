"""Fetch one hub dataset at its pinned commit, verify it, write the completion marker (files + sha256)."""

from vlalert.download import DownloadError, hub_download, token_from_env, write_json
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
name = snakemake.wildcards.name
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "download", name)
    try:
        record = hub_download(name, cfg.download[name], token=token_from_env())
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
