# Relabel: the risky-time + 2 s rule with BADAS gating, one row per tick.


rule relabel:
    input:
        videos=LAYOUT.ingest_videos(),
        gate=LAYOUT.gate(),
    output:
        labels=LAYOUT.labels(),
    params:
        stage=lambda wildcards: stage_params(CFG, "relabel", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "relabel", wildcards.source),
        code=code("relabel"),
    log:
        LAYOUT.log("relabel"),
    benchmark:
        LAYOUT.timing("relabel")
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/relabel.py"
