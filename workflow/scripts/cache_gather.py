"""A split's cache index: its shard parts with rows, sha256 and summaries (vlalert.cache.store)."""

from vlalert.cache.store import gather_split
from vlalert.stage_config import CacheSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, CacheSlice)
    index = gather_split(
        snakemake.input.parts,
        snakemake.input.summaries,
        snakemake.output.index,
        split=snakemake.wildcards.split,
        run=job.run,
    )
    log.info(
        "cache %s: %d rows in %d parts, totals %s",
        index["split"],
        index["rows"],
        len(index["parts"]),
        index["totals"],
    )
