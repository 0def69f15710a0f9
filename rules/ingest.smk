# Ingest: read each source in its own format, probe every video, keep or reject each clip.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        videos=LAYOUT.ingest_videos(),
        rejected=LAYOUT.ingest_rejected(),
        consensus=LAYOUT.ingest_consensus(),
    params:
        stage=lambda wildcards: stage_params(CFG, "ingest", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "ingest", wildcards.source),
        code=code("ingest"),
    log:
        LAYOUT.log("ingest"),
    benchmark:
        LAYOUT.timing("ingest")
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(240),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/ingest.py"
