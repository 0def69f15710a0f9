# Benchmark: video-level train/val/test splits of every source's ticks, plus a manifest.


rule benchmark:
    input:
        labels=expand(f"{R}/labels/{{source}}.parquet", source=SOURCES),
        videos=expand(f"{R}/ingest/{{source}}/videos.parquet", source=SOURCES),
        rejected=expand(f"{R}/ingest/{{source}}/rejected.parquet", source=SOURCES),
        consensus=expand(f"{R}/ingest/{{source}}/consensus.parquet", source=SOURCES),
        beliefs=expand(f"{R}/beliefs/{{source}}.parquet", source=SOURCES),
    output:
        train=f"{R}/benchmark/train.parquet",
        val=f"{R}/benchmark/val.parquet",
        test=f"{R}/benchmark/test.parquet",
        manifest=f"{R}/benchmark/manifest.json",
    params:
        stage=stage_params(CFG, "benchmark"),
        sources=SOURCES,
        code=code("benchmark"),
    log:
        f"{R}/logs/benchmark/benchmark.log",
    benchmark:
        f"{R}/benchmarks/benchmark/benchmark.tsv"
    resources:
        mem_mb=scaled(8000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/benchmark.py"
