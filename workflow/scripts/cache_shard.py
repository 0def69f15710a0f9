"""One shard of a split's cache: z_t / r_t of its ticks, resumable (vlalert.cache.stage)."""

from vlalert.cache.paths import adapter_location, model_location
from vlalert.cache.stage import run_shard
from vlalert.devices import resolve_device
from vlalert.stage_config import CacheSlice
from vlalert.workflow import job_logging, job_slice

# Guarded: the frame workers are spawned processes, and a spawned process runs this file again as
# `__mp_main__` (without Snakemake's `snakemake` object) before it can unpickle its work.
if __name__ == "__main__":
    snakemake = globals()["snakemake"]
    with job_logging(snakemake.log[0]):
        job = job_slice(snakemake, CacheSlice)
        # on the CPU, stay within the cores Snakemake gave this job
        if resolve_device(job.cache.device, "cache.device") == "cpu":
            import torch

            torch.set_num_threads(max(1, snakemake.threads))
        run_shard(
            snakemake.input.benchmark,
            snakemake.output.part,
            snakemake.output.summary,
            cfg=job,
            split=snakemake.wildcards.split,
            shard=int(snakemake.wildcards.shard),
            model_path=model_location(job),
            adapter_dir=adapter_location(job),
            frames=list(snakemake.input.frames),
        )
