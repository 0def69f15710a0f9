# Heads: DangerHead and PolicyHead on the VLM cache, one job per (head, seed). They train on
# heads.device (CPU by default: bit-identical reruns) with heads.threads torch threads.

HEADS_GPU = int(CFG.heads.device.startswith("cuda"))
HEADS_THREADS = CFG.heads.threads or 1


rule heads:
    input:
        train_cache=f"{R}/cache/{RUN}/train/index.json",
        val_cache=f"{R}/cache/{RUN}/val/index.json",
        train_labels=f"{R}/benchmark/train.parquet",
        val_labels=f"{R}/benchmark/val.parquet",
    output:
        model=f"{R}/heads/{RUN}/{{head}}/seed{{seed}}/model.safetensors",
        config=f"{R}/heads/{RUN}/{{head}}/seed{{seed}}/config.json",
        metrics=f"{R}/heads/{RUN}/{{head}}/seed{{seed}}/metrics.json",
        train_log=f"{R}/heads/{RUN}/{{head}}/seed{{seed}}/train_log.parquet",
    params:
        stage=stage_params(CFG, "heads"),
        code=code("heads"),
    log:
        f"{R}/logs/heads/{RUN}/{{head}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/heads/{RUN}_{{head}}_seed{{seed}}.tsv"
    threads: HEADS_THREADS
    resources:
        gpu=HEADS_GPU,
        mem_mb=scaled(8000),
        runtime=scaled(120),
        cpus_per_task=HEADS_THREADS,
    conda:
        ENV
    script:
        "../workflow/scripts/heads.py"
