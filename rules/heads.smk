# Heads: DangerHead and PolicyHead on the VLM cache, one job per (head, seed). They train on
# heads.device (CPU by default: bit-identical reruns) with heads.threads torch threads.

HEADS_GPU = int(CFG.heads.device.startswith("cuda"))
HEADS_THREADS = CFG.heads.threads or 1


rule heads:
    input:
        train_cache=LAYOUT.cache_index("train"),
        val_cache=LAYOUT.cache_index("val"),
        train_labels=LAYOUT.benchmark("train"),
        val_labels=LAYOUT.benchmark("val"),
    output:
        model=LAYOUT.head().model,
        config=LAYOUT.head().config,
        metrics=LAYOUT.head().metrics,
        train_log=LAYOUT.head().train_log,
    params:
        stage=stage_params(CFG, "heads"),
        untracked=stage_untracked(CFG, "heads"),
        code=code("heads"),
    log:
        LAYOUT.log("heads"),
    benchmark:
        LAYOUT.timing("heads")
    threads: HEADS_THREADS
    resources:
        gpu=HEADS_GPU,
        mem_mb=scaled(8000),
        runtime=heads_runtime,
        cpus_per_task=HEADS_THREADS,
    conda:
        ENV
    script:
        "../workflow/scripts/heads.py"
