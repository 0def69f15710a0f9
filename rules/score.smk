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
            caption="../report/summary.rst",
            category="3. Evaluation (test split)",  # rules/report.smk: EVALUATION
            subcategory="Summary (text)",
            labels={"table": "summary.txt", "seeds": ", ".join(str(s) for s in CFG.heads.seeds)},
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
