"""Beliefs of one source's ticks; an incomplete LLM run keeps its partial rows and fails loudly."""

from vlalert.beliefs.llm import BeliefsIncomplete
from vlalert.beliefs.stage import generate_beliefs
from vlalert.schemas import read_table, write_table
from vlalert.synthetic.truth import read_scene_truth
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "beliefs", source)
    scene_path = cfg.sources[source].scene_truth
    scene = read_scene_truth(scene_path, cfg.sources[source].kind) if scene_path else None
    labels = read_table("labels", snakemake.input.labels)
    videos = read_table("videos", snakemake.input.videos)
    try:
        beliefs = generate_beliefs(labels, videos, cfg, scene)
    except BeliefsIncomplete as err:
        partial = snakemake.output.beliefs.replace(".parquet", ".partial.parquet")
        write_table("beliefs", err.partial, partial)
        raise SystemExit(f"beliefs {source}: {err} (partial rows in {partial}; answers are cached)") from None
    write_table("beliefs", beliefs, snakemake.output.beliefs)
    log.info(
        "beliefs %s: %d ticks, providers %s",
        source,
        beliefs.num_rows,
        beliefs.group_by("provider").aggregate([("tick", "count")]).to_pylist(),
    )
