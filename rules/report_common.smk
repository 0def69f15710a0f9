# The report's categories, labels and file lists (rules/report.smk): helpers only, as the linter asks.

from vlalert.report.facts import overview_labels

DATA = "1. Data"
TRAINING = "2. Training"
EVALUATION = "3. Evaluation (test split)"
BELIEFS = "4. Belief spans (test split)"
HEADS = ["danger", "policy"]
HEAD_SEEDS = [(head, seed) for head in HEADS for seed in CFG.heads.seeds]
SEED_LIST = ", ".join(str(s) for s in CFG.heads.seeds)
FIRST_SEED = str(min(CFG.heads.seeds))  # the seed the timelines and belief spans show


def run_overview_labels(wildcards, input):
    """The run overview's labels, read from the benchmark manifest when the report is built."""
    return overview_labels(
        input.manifest, model=CFG.model.name_or_path, seeds=CFG.heads.seeds, sources=SOURCES
    )


def timeline_files():
    return [LAYOUT.eval_figure(f"timelines_{s}.png") for s in sorted(SOURCES)]


def evaluation_files():
    """What report_figures writes (names: vlalert.report.evaluation.figure_names, and the tables)."""
    return timeline_files() + [
        LAYOUT.eval_figure("bars_daus.png"),
        LAYOUT.eval_figure("reliability_heads.png"),
        LAYOUT.eval_tables,
    ]


def report_model_inputs(wildcards):
    """Heads' logs of every seed, the test split's cache, scores and benchmark; SFT's log when this
    run trains its own adapter (cache.adapter: sft)."""
    inputs = {
        "head_logs": [LAYOUT.head(h, s).train_log for h, s in HEAD_SEEDS],
        "head_metrics": [LAYOUT.head(h, s).metrics for h, s in HEAD_SEEDS],
        "benchmark": LAYOUT.benchmark("test"),
        "cache": LAYOUT.cache_index("test"),
        "scores": LAYOUT.scores("test"),
    }
    if CFG.cache.adapter_mode() == "sft":
        inputs["sft_log"] = LAYOUT.sft.train_log
    return inputs


def report_outputs():
    """The report's items for `all`: the data pages always, the model's when the run trains one."""
    files = [LAYOUT.report.overview, LAYOUT.report.benchmark_counts, LAYOUT.report.rejected]
    if CFG.frame_sources() != SOURCES:
        return files
    files += evaluation_files() + [LAYOUT.report.sft_loss]
    files += [LAYOUT.report.head_loss(h) for h in HEADS]
    return files + [LAYOUT.report.belief_spans(s) for s in sorted(SOURCES)]
