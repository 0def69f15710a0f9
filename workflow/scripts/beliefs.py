"""Beliefs of one source's ticks; an incomplete LLM run keeps its partial rows and fails loudly."""

from vlalert.beliefs.llm import BeliefsIncomplete
from vlalert.beliefs.stage import partial_path, write_beliefs_job
from vlalert.schemas import read_table
from vlalert.stage_config import BeliefsSlice
from vlalert.synthetic.truth import read_scene_truth
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
source = snakemake.wildcards.source
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, BeliefsSlice)
    scene_path = job.source.scene_truth
    scene = read_scene_truth(scene_path, job.source.kind) if scene_path else None
    labels = read_table("labels", snakemake.input.labels)
    videos = read_table("videos", snakemake.input.videos)
    out = snakemake.output.beliefs
    # this job's requests in flight: its share of the run-wide `llm_requests` resource (profiles)
    concurrency = int(snakemake.resources.get("llm_requests", 0)) or None
    try:
        beliefs = write_beliefs_job(out, labels, videos, job, scene, concurrency=concurrency)
    except BeliefsIncomplete as err:
        partial = partial_path(out)
        raise SystemExit(f"beliefs {source}: {err} (partial rows in {partial}; answers are cached)") from None
    log.info(
        "beliefs %s: %d ticks, providers %s",
        source,
        beliefs.num_rows,
        beliefs.group_by("provider").aggregate([("tick", "count")]).to_pylist(),
    )
