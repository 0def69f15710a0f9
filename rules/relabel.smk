# Relabel: the risky-time + 2 s rule with BADAS gating, one row per tick.


rule relabel:
    input:
        videos=f"{R}/ingest/{{source}}/videos.parquet",
        gate=f"{R}/gate/{{source}}.parquet",
    output:
        labels=f"{R}/labels/{{source}}.parquet",
    params:
        stage=lambda wildcards: stage_params(CFG, "relabel", wildcards.source),
        code=code("relabel"),
    log:
        f"{R}/logs/relabel/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/relabel/{{source}}.tsv"
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/relabel.py"
