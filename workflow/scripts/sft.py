"""LoRA SFT of the VLM on the benchmark's train ticks (torchrun ranks when sft.nproc > 1)."""

import sys
from pathlib import Path

from vlalert.layout import Layout
from vlalert.stage_config import SFTSlice
from vlalert.vlm.sft import SFTJob, launch
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, SFTSlice)
    files = Layout.of(job).sft
    names = ("adapter_config", "adapter_model", "train_log", "metrics")
    declared = [Path(getattr(snakemake.output, n)) for n in names]
    if declared != [Path(getattr(files, n)) for n in names]:
        raise ValueError(f"sft outputs {declared} are not the run's layout under {files.dir}")
    job = SFTJob(
        model_path=snakemake.params.model,
        train=snakemake.input.train,
        val=snakemake.input.val,
        run_dir=files.dir,
        sft=job.sft,
        model=job.model,
        frames=tuple(snakemake.input.frames),
    )
    metrics = launch(job, stream=sys.stderr)
    log.info(
        "sft: val loss %.4f -> %.4f, parse rate %s",
        metrics["initial_val_loss"],
        metrics["final_val_loss"],
        metrics["val_parse_rate"],
    )
