"""One source's frames store: each clip decoded once, its ticks' window frames at model resolution."""

import time

from vlalert.frames.store import clip_frames, store_spec, write_store
from vlalert.schemas import read_table
from vlalert.stage_config import FramesSlice
from vlalert.workflow import job_logging, job_slice

# Guarded: the decoding workers are spawned processes, and a spawned process runs this file again
# as `__mp_main__` (without Snakemake's `snakemake` object) before it can unpickle its work.
if __name__ == "__main__":
    snakemake = globals()["snakemake"]
    source = snakemake.wildcards.source
    with job_logging(snakemake.log[0]) as log:
        job = job_slice(snakemake, FramesSlice)
        import torch

        torch.set_num_threads(1)  # the in-process path decodes one clip at a time; workers get 1 each
        clips = clip_frames(
            read_table("labels", snakemake.input.labels), read_table("videos", snakemake.input.videos)
        )
        t0, c0 = time.perf_counter(), time.process_time()
        counts = write_store(
            clips,
            store_spec(job.frames, job.model),
            snakemake.output.store,
            workers=min(job.frames.workers, max(1, snakemake.threads)),
            chunk_clips=job.frames.chunk_clips,
            progress=job.frames.progress,
        )
        log.info(
            "frames %s: %d clips, %d frames, %.1f MB in %.1f s (%.1f CPU s in this process), "
            "%d of %d chunks resumed",
            source,
            counts["clips"],
            counts["frames"],
            counts["bytes"] / 1e6,
            time.perf_counter() - t0,
            time.process_time() - c0,
            counts["resumed_chunks"],
            counts["chunks"],
        )
