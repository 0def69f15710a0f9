"""A split's cache index: its shard parts with rows, sha256 and summaries (vlalert.cache.store)."""

from vlalert.cache.store import gather_split
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "cache")
    index = gather_split(
        snakemake.input.parts,
        snakemake.input.summaries,
        snakemake.output.index,
        split=snakemake.wildcards.split,
        run=cfg.run,
    )
    log.info(
        "cache %s: %d rows in %d parts, totals %s",
        index["split"],
        index["rows"],
        len(index["parts"]),
        index["totals"],
    )
