# Report: what `snakemake --report report.html` collects. One file per kind of output, each with
# its own caption (report/*.rst), in four categories; labels (source, split, seed, head) make each
# figure findable in the report's tables. The front page is report/workflow.rst.


include: "report_common.smk"


rule report_data:
    input:
        manifest=LAYOUT.benchmark_manifest,
        rejected=expand(LAYOUT.ingest_rejected(), source=SOURCES),
    output:
        overview=report(
            LAYOUT.report.overview,
            caption="../report/overview.rst",
            category=DATA,
            subcategory="Run overview",
            labels=run_overview_labels,
        ),
        counts=report(
            LAYOUT.report.benchmark_counts,
            caption="../report/benchmark_counts.rst",
            category=DATA,
            subcategory="Benchmark",
            labels={"figure": "ticks per split, source and action", "splits": "train, val, test"},
        ),
        rejected=report(
            LAYOUT.report.rejected,
            caption="../report/rejected.rst",
            category=DATA,
            subcategory="Rejected clips",
            labels={"figure": "rejected clips by reason", "sources": ", ".join(SOURCES)},
        ),
    params:
        stage=stage_params(CFG, "summary"),
        untracked=stage_untracked(CFG, "summary"),
        sources=SOURCES,
        code=code("report_data"),
    log:
        LAYOUT.log("report_data"),
    benchmark:
        LAYOUT.timing("report_data")
    conda:
        ENV
    script:
        "../workflow/scripts/report_data.py"


rule report_figures:
    input:
        scores=LAYOUT.scores("test"),
        benchmark=LAYOUT.benchmark("test"),
        summary=LAYOUT.eval_summary,
    output:
        timelines=[
            report(
                path,
                caption="../report/timelines.rst",
                category=EVALUATION,
                subcategory="Clip timelines",
                labels={"source": s, "split": "test", "policy": "heads", "seed": FIRST_SEED},
            )
            for s, path in zip(sorted(SOURCES), timeline_files())
        ],
        bars=report(
            LAYOUT.eval_figure("bars_daus.png"),
            caption="../report/bars.rst",
            category=EVALUATION,
            subcategory="DAUS per source",
            labels={"figure": "DAUS, U and P per source and policy", "seeds": SEED_LIST},
        ),
        reliability=report(
            LAYOUT.eval_figure("reliability_heads.png"),
            caption="../report/reliability.rst",
            category=EVALUATION,
            subcategory="Calibration",
            labels={"figure": "reliability of p_alert", "policy": "heads", "seeds": SEED_LIST},
        ),
        tables=report(
            directory(LAYOUT.eval_tables),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category=EVALUATION,
            subcategory="Key metrics",
            labels={"table": "{name}", "seeds": SEED_LIST},
        ),
    params:
        stage=stage_params(CFG, "summary"),
        untracked=stage_untracked(CFG, "summary"),
        sources=SOURCES,
        code=code("report_figures"),
    log:
        LAYOUT.log("report_figures"),
    benchmark:
        LAYOUT.timing("report_figures")
    conda:
        ENV
    script:
        "../workflow/scripts/report_figures.py"


rule report_model:
    input:
        unpack(report_model_inputs),
    output:
        sft_loss=report(
            LAYOUT.report.sft_loss,
            caption="../report/sft_loss.rst",
            category=TRAINING,
            subcategory="SFT",
            labels={"stage": "SFT (LoRA)", "model": CFG.model.name_or_path},
        ),
        head_loss=[
            report(
                LAYOUT.report.head_loss(head),
                caption="../report/head_loss.rst",
                category=TRAINING,
                subcategory="Heads",
                labels={"head": head, "seeds": SEED_LIST},
            )
            for head in HEADS
        ],
        belief_spans=[
            report(
                LAYOUT.report.belief_spans(s),
                caption="../report/belief_spans.rst",
                category=BELIEFS,
                subcategory="Generated belief per tick",
                labels={"source": s, "split": "test", "policy": "heads", "seed": FIRST_SEED},
            )
            for s in sorted(SOURCES)
        ],
    params:
        stage=stage_params(CFG, "summary"),
        untracked=stage_untracked(CFG, "summary"),
        sources=sorted(SOURCES),
        head_seeds=HEAD_SEEDS,
        run=CFG.run,
        code=code("report_model"),
    log:
        LAYOUT.log("report_model"),
    benchmark:
        LAYOUT.timing("report_model")
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/report_model.py"
