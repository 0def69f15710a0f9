"""Gate scores p_collision(t) for every tick of one source's clips."""

from vlalert.gate import gate_scores
from vlalert.schemas import read_table, write_table
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "gate", source)
    videos = read_table("videos", snakemake.input.videos)
    provider = cfg.gate_provider(source)
    table = gate_scores(videos, provider, cfg.sources[source], cfg)
    write_table("gate", table, snakemake.output.gate)
    log.info(
        "gate %s (%s): %d ticks, %d without score",
        source,
        provider,
        table.num_rows,
        table.column("p_collision").null_count,
    )
