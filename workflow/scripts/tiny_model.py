"""Build the demo's tiny Qwen3-VL: tokenizer trained on the train split's SFT targets, random weights."""

from pathlib import Path

from vlalert.schemas import read_table
from vlalert.stage_config import TinyModelSlice
from vlalert.vlm.data import target_corpus, trainable_rows
from vlalert.vlm.tiny import build_tiny_model
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, TinyModelSlice)
    corpus = target_corpus(trainable_rows(read_table("benchmark", snakemake.input.train)))
    out = build_tiny_model(
        Path(snakemake.output.config).parent,
        corpus,
        job.model,
        seed=job.model.tiny.seed,
        window=job.window,
        phrasing=job.beliefs.phrasing,
        on_log=log.info,
    )
    log.info("tiny model in %s from %d train targets", out, len(corpus))
