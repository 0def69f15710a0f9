# Benchmark: video-level train/val/test splits of every source's ticks, plus a manifest.


rule benchmark:
    input:
        labels=expand(LAYOUT.labels(), source=SOURCES),
        videos=expand(LAYOUT.ingest_videos(), source=SOURCES),
        rejected=expand(LAYOUT.ingest_rejected(), source=SOURCES),
        consensus=expand(LAYOUT.ingest_consensus(), source=SOURCES),
        beliefs=expand(LAYOUT.beliefs(), source=SOURCES),
    output:
        train=LAYOUT.benchmark("train"),
        val=LAYOUT.benchmark("val"),
        test=LAYOUT.benchmark("test"),
        manifest=LAYOUT.benchmark_manifest,
    params:
        stage=stage_params(CFG, "benchmark"),
        untracked=stage_untracked(CFG, "benchmark"),
        sources=SOURCES,
        code=code("benchmark"),
    log:
        LAYOUT.log("benchmark"),
    benchmark:
        LAYOUT.timing("benchmark")
    resources:
        mem_mb=scaled(8000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/benchmark.py"
