# Ingest: read each source in its own format, probe every video, keep or reject each clip.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        videos=f"{R}/ingest/{{source}}/videos.parquet",
        rejected=f"{R}/ingest/{{source}}/rejected.parquet",
        consensus=f"{R}/ingest/{{source}}/consensus.parquet",
    params:
        stage=lambda wildcards: stage_params(CFG, "ingest", wildcards.source),
        code=code("ingest"),
    log:
        f"{R}/logs/ingest/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/ingest/{{source}}.tsv"
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(240),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/ingest.py"
