# Heads: DangerHead and PolicyHead on the VLM cache, one job per (head, seed).


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
    threads: 1
    resources:
        mem_mb=scaled(8000),
        runtime=120,
        gpu=0,
    conda:
        ENV
    script:
        "../workflow/scripts/heads.py"
