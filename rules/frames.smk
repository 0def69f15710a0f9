# Frames: each clip decoded once, the frames of its ticks' windows stored at the model's resolution
# (vlalert.frames). SFT and the cache stage read tick windows from these stores, never from the clips.
# A killed job keeps its sealed chunks (frames/{source}.arrow.chunks/, not an output) and resumes.


rule frames:
    input:
        videos=LAYOUT.ingest_videos(),
        labels=LAYOUT.labels(),
    output:
        store=LAYOUT.frames(),
    params:
        stage=lambda wildcards: stage_params(CFG, "frames", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "frames", wildcards.source),
        code=code("frames"),
    log:
        LAYOUT.log("frames"),
    benchmark:
        LAYOUT.timing("frames")
    threads: CFG.frames.workers
    resources:
        mem_mb=scaled(2000 + 1500 * CFG.frames.workers),
        runtime=scaled(240),
        cpus_per_task=CFG.frames.workers,
    conda:
        ENV
    script:
        "../workflow/scripts/frames.py"
