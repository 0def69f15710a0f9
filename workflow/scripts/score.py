"""Score one split: the heads of every seed and the baselines, all through the same FSM."""

from pathlib import Path

import pyarrow as pa

from vlalert.baselines import fit_time_only
from vlalert.heads.train import HEADS
from vlalert.layout import Layout
from vlalert.schemas import read_table, write_table
from vlalert.score import score_counts, score_split
from vlalert.stage_config import ScoreSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, ScoreSlice)
    layout = Layout.of(job)  # the rule's `heads` input: each head's metrics.json in these folders
    heads_dirs = {seed: {h: Path(layout.head(h, seed).dir) for h in HEADS} for seed in job.heads.seeds}
    gate = pa.concat_tables([read_table("gate", p) for p in snakemake.input.gate])
    benchmark = read_table("benchmark", snakemake.input.benchmark)
    time_only = fit_time_only(read_table("benchmark", snakemake.input.train), job.heads)
    log.info("time-only baseline fitted on train: %s", time_only.to_json())
    scores = score_split(
        benchmark, Path(snakemake.input.cache).parent, heads_dirs, gate, job.heads.fsm, time_only=time_only
    )
    log.info("score %s: %s", snakemake.wildcards.split, score_counts(scores))
    write_table("scores", scores, snakemake.output.scores)
