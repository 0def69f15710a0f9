# Score: every policy (heads of each seed, and the baselines) through the same FSM, then the metrics.


rule score:
    input:
        benchmark=f"{R}/benchmark/{{split}}.parquet",
        train=f"{R}/benchmark/train.parquet",  # the time-only baseline is fitted on train
        cache=f"{R}/cache/{RUN}/{{split}}/index.json",
        heads=expand(
            f"{R}/heads/{RUN}/{{head}}/seed{{seed}}/metrics.json",
            head=["danger", "policy"],
            seed=CFG.heads.seeds,
        ),
        gate=expand(f"{R}/gate/{{source}}.parquet", source=SOURCES),
    output:
        scores=f"{R}/scores/{RUN}/{{split}}.parquet",
    params:
        stage=stage_params(CFG, "score"),
        code=code("score"),
    log:
        f"{R}/logs/score/{RUN}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/score/{RUN}_{{split}}.tsv"
    resources:
        mem_mb=scaled(8000),
        runtime=scaled(60),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/score.py"


rule summary:
    input:
        scores=f"{R}/scores/{RUN}/test.parquet",
        benchmark=f"{R}/benchmark/test.parquet",
    output:
        summary=f"{R}/eval/{RUN}/summary.parquet",
        table=report(
            f"{R}/eval/{RUN}/summary.txt",
            category="Metrics",
            caption="../report/summary.rst",
        ),
    params:
        stage=stage_params(CFG, "summary"),
        code=code("summary"),
    log:
        f"{R}/logs/summary/{RUN}.log",
    benchmark:
        f"{R}/benchmarks/summary/{RUN}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summary.py"


rule report_figures:
    input:
        scores=f"{R}/scores/{RUN}/test.parquet",
        benchmark=f"{R}/benchmark/test.parquet",
        summary=f"{R}/eval/{RUN}/summary.parquet",
    output:
        figures=report(
            directory(f"{R}/eval/{RUN}/figures"),
            patterns=["{name}.png"],
            category="Figures",
            caption="../report/figures.rst",
        ),
        tables=report(
            directory(f"{R}/eval/{RUN}/tables"),
            patterns=["{name}.html"],
            category="Metrics",
            caption="../report/tables.rst",
        ),
    params:
        stage=stage_params(CFG, "summary"),
        code=code("report_figures"),
    log:
        f"{R}/logs/report/{RUN}.log",
    benchmark:
        f"{R}/benchmarks/report/{RUN}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/report_figures.py"
