"""Gate scores p_collision(t) for every tick of one source's clips."""

from vlalert.gate import gate_scores
from vlalert.schemas import read_table, write_table
from vlalert.stage_config import GateSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, GateSlice)
    videos = read_table("videos", snakemake.input.videos)
    chain = job.provider
    table = gate_scores(videos, chain, job.source, job)
    write_table("gate", table, snakemake.output.gate)
    by_provider = table.group_by("provider").aggregate([("video_id", "count_distinct")]).to_pylist()
    log.info(
        "gate %s (chain %s): %d ticks, %d without score; clips per provider %s",
        source,
        " -> ".join(chain),
        table.num_rows,
        table.column("p_collision").null_count,
        {r["provider"]: r["video_id_count_distinct"] for r in by_provider},
    )
