# Score: every policy (heads of each seed, and the baselines) through the same FSM, then the metrics.


rule score:
    input:
        benchmark=LAYOUT.benchmark(),
        train=LAYOUT.benchmark("train"),  # the time-only baseline is fitted on train
        cache=LAYOUT.cache_index(),
        heads=expand(
            LAYOUT.head().metrics,
            head=["danger", "policy"],
            seed=CFG.heads.seeds,
        ),
        gate=expand(LAYOUT.gate(), source=SOURCES),
    output:
        scores=LAYOUT.scores(),
    params:
        stage=stage_params(CFG, "score"),
        untracked=stage_untracked(CFG, "score"),
        code=code("score"),
    log:
        LAYOUT.log("score"),
    benchmark:
        LAYOUT.timing("score")
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
        scores=LAYOUT.scores("test"),
        benchmark=LAYOUT.benchmark("test"),
    output:
        summary=LAYOUT.eval_summary,
        table=report(
            LAYOUT.eval_summary_table,
            category="Metrics",
            caption="../report/summary.rst",
        ),
    params:
        stage=stage_params(CFG, "summary"),
        untracked=stage_untracked(CFG, "summary"),
        code=code("summary"),
    log:
        LAYOUT.log("summary"),
    benchmark:
        LAYOUT.timing("summary")
    conda:
        ENV
    script:
        "../workflow/scripts/summary.py"


rule report_figures:
    input:
        scores=LAYOUT.scores("test"),
        benchmark=LAYOUT.benchmark("test"),
        summary=LAYOUT.eval_summary,
    output:
        figures=report(
            directory(LAYOUT.eval_figures),
            patterns=["{name}.png"],
            category="Figures",
            caption="../report/figures.rst",
        ),
        tables=report(
            directory(LAYOUT.eval_tables),
            patterns=["{name}.html"],
            category="Metrics",
            caption="../report/tables.rst",
        ),
    params:
        stage=stage_params(CFG, "summary"),
        untracked=stage_untracked(CFG, "summary"),
        code=code("report_figures"),
    log:
        LAYOUT.log("report_figures"),
    benchmark:
        LAYOUT.timing("report_figures")
    conda:
        ENV
    script:
        "../workflow/scripts/report_figures.py"
