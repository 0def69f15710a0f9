# Config validation and the path/params helpers shared by every stage.
# Imports stay light (no torch, no transformers) so that `snakemake -n` parses in well under 3 s.

from vlalert.config import validate_config
from vlalert.workflow import stage_params

CFG = validate_config(config)
R = CFG.results
RUN = CFG.run
SOURCES = CFG.enabled_sources()
ENV = "../envs/vlalert.yaml"


wildcard_constraints:
    source="|".join(SOURCES),
    split="train|val|test",
    head="danger|policy",
    seed=r"\d+",


def source_cfg(wildcards):
    return CFG.sources[wildcards.source]


def source_inputs(wildcards):
    """What ingest needs before it may read a source: the rendered demo corpus, or the user's files."""
    if CFG.demo.enabled:
        return {"demo": f"{R}/demo/{wildcards.source}/demo_manifest.json"}
    return {}


def gate_inputs(wildcards):
    inputs = {"videos": f"{R}/ingest/{wildcards.source}/videos.parquet"}
    if CFG.demo.enabled:  # the demo manifest stands for every file the demo renders
        return inputs | source_inputs(wildcards)
    src = source_cfg(wildcards)
    provider = CFG.gate_provider(wildcards.source)
    if provider == "scene":
        inputs["scene_truth"] = src.scene_truth
    elif provider == "scores_file":
        inputs["scores"] = src.gate_scores
    elif provider == "consensus":
        inputs["consensus"] = src.consensus
    elif provider == "badas" and CFG.gate.badas.model_path:
        inputs["badas_weights"] = CFG.gate.badas.model_path
    return inputs


def beliefs_inputs(wildcards):
    inputs = {
        "labels": f"{R}/labels/{wildcards.source}.parquet",
        "videos": f"{R}/ingest/{wildcards.source}/videos.parquet",
    }
    scene_truth = source_cfg(wildcards).scene_truth
    if CFG.demo.enabled:
        return inputs | source_inputs(wildcards)
    if scene_truth:
        inputs["scene_truth"] = scene_truth
    return inputs


def benchmark_outputs():
    return expand(f"{R}/benchmark/{{split}}.parquet", split=["train", "val", "test"]) + [
        f"{R}/benchmark/manifest.json"
    ]
