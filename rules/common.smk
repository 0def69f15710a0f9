# Config validation and the path/params helpers shared by every stage.
# Imports stay light (no torch, no transformers) so that `snakemake -n` parses in well under 3 s.

from pathlib import Path

from vlalert.config import validate_config
from vlalert.download_config import download_for_source
from vlalert.layout import Layout
from vlalert.source_files import annotation_files, source_fingerprint
from vlalert.stage_config import source_origin
from vlalert.workflow import code_sha256, stage_params, stage_untracked

CFG = validate_config(config)
LAYOUT = Layout.of(CFG)  # every path under the run's results folder: vlalert/layout.py
SOURCES = CFG.enabled_sources()
ENV = "../envs/vlalert.yaml"


wildcard_constraints:
    source="|".join(SOURCES),
    split="train|val|test",
    head="danger|policy",
    seed=r"\d+",


# Resources, one way: every rule that runs a job declares mem_mb and runtime (minutes) as scaled(base), so
# that they grow with the retry attempt, and cpus_per_task (its threads) and gpu, where it can use one, as
# plain numbers, or with for_badas/scaled(badas=) where the gate provider decides; only the rules that
# gather small files (cache_gather, summary, report_data, report_figures) declare none and take the
# profile's defaults.
def scaled(base, badas=None):
    """A resource that grows with the retry attempt (the SLURM profile retries after OOM or timeout).

    With `badas`, sources whose gate provider is Open-BADAS (a GPU model) get that base instead.
    """

    def value(wildcards, attempt):
        heavy = badas is not None and CFG.uses_badas(wildcards.source)
        return (badas if heavy else base) * attempt

    return value


def for_badas(badas, other):
    """A gate resource that depends on whether the source's gate provider is Open-BADAS."""
    return lambda wildcards: badas if CFG.uses_badas(wildcards.source) else other


def source_cfg(wildcards):
    return CFG.sources[wildcards.source]


def code(script):
    """A rule's `code` param: sha256 of workflow/scripts/<script>.py and the vlalert code it runs.

    By content (vlalert.workflow.STAGE_CODE): an edit reruns the rule, a touch does not.
    """
    return code_sha256(script, Path(workflow.basedir) / "workflow" / "scripts")


def source_upstream(wildcards):
    """The job that puts a source's files on disk: the demo renderer or the hub download (none by hand)."""
    origin = source_origin(CFG, wildcards.source)
    if origin == "demo":
        return {"demo": LAYOUT.demo_manifest(wildcards.source)}
    if origin == "hub":
        return {"download": LAYOUT.download_marker(download_for_source(CFG.download, wildcards.source))}
    return {}


def ingest_inputs(wildcards):
    """The source's files: its manifest, and (placed by hand) its annotation and consensus files.

    Files rendered by the demo or fetched from the hub do not exist yet when a first run's DAG is
    built, so declaring them would change ingest's input set on the second run (and rerun it): the
    manifest stands for them (it holds their sha256).
    """
    # the source manifest check_source writes (annotations by content, clips by size and mtime)
    inputs = {"source_files": LAYOUT.source_manifest(wildcards.source)}
    if source_origin(CFG, wildcards.source) == "hand":
        inputs["annotations"] = annotation_files(source_cfg(wildcards))
    return inputs


def gate_inputs(wildcards):
    inputs = {"videos": LAYOUT.ingest_videos(wildcards.source)}
    if CFG.demo.enabled:  # the demo manifest stands for every file the demo renders
        return inputs | source_upstream(wildcards)
    src = source_cfg(wildcards)
    chain = CFG.gate_chain(wildcards.source)
    if "scene" in chain:
        inputs["scene_truth"] = src.scene_truth
    if "scores_file" in chain:
        inputs["scores"] = src.gate_scores
    if "consensus" in chain:
        inputs["consensus"] = src.consensus
    if "badas" in chain and CFG.gate.badas.model_path:
        inputs["badas_weights"] = CFG.gate.badas.model_path
    return inputs


def beliefs_inputs(wildcards):
    inputs = {
        "labels": LAYOUT.labels(wildcards.source),
        "videos": LAYOUT.ingest_videos(wildcards.source),
    }
    scene_truth = source_cfg(wildcards).scene_truth
    if CFG.demo.enabled:
        return inputs | source_upstream(wildcards)
    if scene_truth:
        inputs["scene_truth"] = scene_truth
    return inputs


def model_outputs():
    return [LAYOUT.eval_summary]  # the figures: report_outputs() (rules/report.smk)


def benchmark_outputs():
    return expand(LAYOUT.benchmark(), split=["train", "val", "test"]) + [LAYOUT.benchmark_manifest]


def heads_runtime(wildcards, input, attempt):
    """Minutes for the job: its epochs over the train split's ticks (HeadsTrainConfig.runtime_minutes),
    times the attempt. Before the benchmark exists (a dry run), the published scale's train ticks."""
    ticks = 97_649
    if os.path.exists(input.train_labels):
        import pyarrow.parquet as pq

        ticks = pq.read_metadata(input.train_labels).num_rows
    return CFG.heads.runtime_minutes(ticks) * attempt
