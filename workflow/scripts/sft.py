"""LoRA SFT of the VLM on the benchmark's train ticks (torchrun ranks when sft.nproc > 1)."""

import sys
from pathlib import Path

from vlalert.vlm.sft import SFTJob, SFTPaths, launch
from vlalert.workflow import config_for_job, job_logging

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    cfg = config_for_job(snakemake, "sft")
    paths = SFTPaths(Path(snakemake.output.metrics).parent)
    declared = (Path(snakemake.output.adapter_config).parent, Path(snakemake.output.train_log))
    if declared != (paths.adapter, paths.train_log):
        raise ValueError(f"sft outputs {declared} do not follow the run layout of {paths.run_dir}")
    job = SFTJob(
        model_path=snakemake.params.model,
        train=snakemake.input.train,
        val=snakemake.input.val,
        run_dir=str(paths.run_dir),
        sft=cfg.sft,
        model=cfg.model,
    )
    metrics = launch(job, stream=sys.stderr)
    log.info(
        "sft: val loss %.4f -> %.4f, parse rate %s",
        metrics["initial_val_loss"],
        metrics["final_val_loss"],
        metrics["val_parse_rate"],
    )
