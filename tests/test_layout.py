"""The results layout (vlalert/layout.py): the paths DESIGN.md promises, the rules' files, and the
library code that finds a run's files afterwards (cache shards, SFT, `vlalert predict`) agreeing."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlalert.cache.paths import adapter_location, model_location, part_files, shard_inputs, summary_files
from vlalert.config import WorkflowConfig, load_config, validate_config
from vlalert.layout import JOB_FILES, Layout
from vlalert.predict import run_paths

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_the_paths_are_those_of_the_data_contracts():
    """Every file of DESIGN.md's "Data contracts", spelled out: a rename here moves a user's files."""
    lay = Layout("res", "r1")
    assert lay.ingest_videos("dad") == "res/ingest/dad/videos.parquet"
    assert lay.ingest_rejected("dad") == "res/ingest/dad/rejected.parquet"
    assert lay.ingest_consensus("dad") == "res/ingest/dad/consensus.parquet"
    assert lay.gate("dad") == "res/gate/dad.parquet"
    assert lay.labels("dad") == "res/labels/dad.parquet"
    assert lay.beliefs("dad") == "res/beliefs/dad.parquet"
    assert lay.benchmark("val") == "res/benchmark/val.parquet"
    assert lay.benchmark_manifest == "res/benchmark/manifest.json"
    assert lay.cache_part("val", "00001") == "res/cache/r1/val/part-00001.parquet"
    assert lay.cache_part_summary("val", "00001") == "res/cache/r1/val/part-00001.summary.json"
    assert lay.cache_index("val") == "res/cache/r1/val/index.json"
    head = lay.head("danger", 3)
    assert head.dir == "res/heads/r1/danger/seed3"
    assert [head.model, head.config, head.metrics, head.train_log] == [
        f"res/heads/r1/danger/seed3/{name}"
        for name in ("model.safetensors", "config.json", "metrics.json", "train_log.parquet")
    ]
    assert lay.scores("test") == "res/scores/r1/test.parquet"
    assert (lay.eval_summary, lay.eval_figures) == ("res/eval/r1/summary.parquet", "res/eval/r1/figures")
    sft = lay.sft
    assert (sft.dir, sft.adapter, sft.adapter_config) == (
        "res/sft/r1",
        "res/sft/r1/adapter",
        "res/sft/r1/adapter/adapter_config.json",
    )
    assert (sft.train_log, sft.metrics, sft.checkpoints) == (
        "res/sft/r1/train_log.parquet",
        "res/sft/r1/metrics.json",
        "res/sft/r1/checkpoints",
    )


def test_without_a_value_a_method_gives_the_snakemake_pattern():
    lay = Layout("res", "r1")
    assert lay.labels() == "res/labels/{source}.parquet"
    assert lay.cache_part() == "res/cache/r1/{split}/part-{shard}.parquet"
    assert lay.head().metrics == "res/heads/r1/{head}/seed{seed}/metrics.json"
    assert lay.log("heads") == "res/logs/heads/r1/{head}_seed{seed}.log"
    assert lay.timing("cache_shard") == "res/benchmarks/cache/r1/{split}_part-{shard}.tsv"
    with pytest.raises(KeyError):
        lay.timing("cache_gather")  # a rule that keeps no timing


def _config(**overrides) -> WorkflowConfig:
    raw = {
        "run": "r1",
        "sources": {"nexar": {"kind": "nexar", "root": "r", "scene_truth": "s.json"}},
        "demo": {"enabled": False},
        "labels": {"gated_sources": []},
        "cache": {"belief_layers": [1, 2, 3, 4], "policy_layer": 3, "shards": 2},
    }
    return validate_config(raw | overrides)


def test_cache_shards_and_predict_find_what_sft_and_heads_wrote():
    cfg = _config()
    lay = Layout.of(cfg)
    assert lay == Layout("results/r1", "r1")
    assert adapter_location(cfg) == lay.sft.adapter
    assert shard_inputs(cfg, "val")["adapter"] == lay.sft.adapter_config  # the sft rule's output
    assert model_location(cfg) == lay.model(cfg.model) == "results/r1/models/tiny-qwen3vl"
    assert part_files(cfg, "val") == [lay.cache_part("val", s) for s in ("00000", "00001")]
    assert summary_files(cfg, "val") == [lay.cache_part_summary("val", s) for s in ("00000", "00001")]

    seed = cfg.heads.seeds[0]
    paths = run_paths(cfg, cfg.results)
    assert (paths.model, paths.adapter) == (lay.model(cfg.model), lay.sft.adapter)
    assert paths.danger == Path(lay.head("danger", seed).dir)
    assert paths.policy == Path(lay.head("policy", seed).dir)
    # predict reads a run copied elsewhere: the same layout under the folder it is given
    moved = run_paths(cfg, "elsewhere/")
    assert moved.danger == Path(Layout("elsewhere", "r1").head("danger", seed).dir)
    assert moved.adapter == Layout("elsewhere", "r1").sft.adapter


def test_an_adapter_of_ones_own_or_none():
    for setting, expected in (("none", None), ("/adapters/mine", "/adapters/mine")):
        cfg = _config(cache={"belief_layers": [1, 2, 3, 4], "policy_layer": 3, "adapter": setting})
        assert Layout.of(cfg).adapter(cfg.cache) == expected
        assert adapter_location(cfg) == expected == run_paths(cfg, cfg.results).adapter


def test_sft_writes_its_run_directory_as_the_layout_names_it():
    from vlalert.vlm.sft import SFTJob

    cfg = _config()
    files = Layout.of(cfg).sft
    job = SFTJob(model_path="m", train="t", val="v", run_dir=files.dir, sft=cfg.sft, model=cfg.model)
    assert job.paths == files


# ------------------------------------------------------------------------------ the DAG's files


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str]
    output: list[str]
    log: list[str]
    benchmark: list[str]


def dry_run_jobs(workdir: Path, configfile: Path) -> list[Job]:
    """Every job of a dry run from scratch: rule, wildcards, output, log and benchmark files."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    res = subprocess.run(
        [*cmd, "--configfile", str(configfile), "-n", "--cores", "1"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", res.stdout, re.M | re.S):
        fields = {k: v.split(", ") for k, v in re.findall(r"^    (\w+): (.*)$", m.group(2), re.M)}
        wildcards = dict(kv.split("=", 1) for kv in fields.get("wildcards", []))
        files = (fields.get(k, []) for k in ("output", "log", "benchmark"))
        jobs.append(Job(m.group(1), wildcards, *files))
    return jobs


def expected_outputs(lay: Layout, rule: str, w: dict[str, str], cfg: WorkflowConfig) -> list[str] | None:
    """The files the layout says `rule` writes for wildcards `w` (None: the model's own files)."""
    source, split, shard = (w.get(k, "") for k in ("source", "split", "shard"))
    sft, head = lay.sft, lay.head(w.get("head", ""), w.get("seed", ""))
    sources = sorted(cfg.enabled_sources())
    return {
        "all": [],
        "download_hub": [lay.download_marker(w.get("name", ""))],
        "check_source": [lay.source_manifest(source)],
        "demo_source": [lay.demo_manifest(source)],
        "ingest": [lay.ingest_videos(source), lay.ingest_rejected(source), lay.ingest_consensus(source)],
        "gate": [lay.gate(source)],
        "relabel": [lay.labels(source)],
        "beliefs": [lay.beliefs(source)],
        "frames": [lay.frames(source)],
        "benchmark": [*(lay.benchmark(s) for s in ("train", "val", "test")), lay.benchmark_manifest],
        "tiny_model": None,
        "sft": [sft.adapter_config, sft.adapter_model, sft.train_log, sft.metrics],
        "cache_shard": [lay.cache_part(split, shard), lay.cache_part_summary(split, shard)],
        "cache_gather": [lay.cache_index(split)],
        "heads": [head.model, head.config, head.metrics, head.train_log],
        "score": [lay.scores(split)],
        "summary": [lay.eval_summary, lay.eval_summary_table],
        "report_figures": [
            *(lay.eval_figure(f"timelines_{s}.png") for s in sources),
            lay.eval_figure("bars_daus.png"),
            lay.eval_figure("reliability_heads.png"),
            lay.eval_tables,
        ],
        "report_data": [lay.report.overview, lay.report.benchmark_counts, lay.report.rejected],
        "report_model": [
            lay.report.sft_loss,
            *(lay.report.head_loss(h) for h in ("danger", "policy")),
            *(lay.report.belief_spans(s) for s in sources),
        ],
    }[rule]


@pytest.mark.parametrize("name", ["config.yaml", "full.yaml"])
def test_every_file_of_the_dag_is_where_the_layout_says(tmp_path, name):
    """A dry run from scratch: each job's outputs, log and timing are the layout's, and `vlalert
    predict` looks for the adapter and the heads where the sft and heads jobs write them."""
    for rel in ("resources/open-badas/config.json", *(f"resources/badas_consensus/{s}_test.csv" for s in
                ("dada", "dota", "dad"))):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")  # full.yaml's hand-placed inputs, as names only
    configfile = REPO / "config" / name
    cfg = load_config(configfile)
    lay = Layout.of(cfg)
    jobs = dry_run_jobs(tmp_path, configfile)
    assert {"benchmark", "sft", "cache_shard", "heads", "summary"} <= {job.rule for job in jobs}
    outputs = set()
    for job in jobs:
        rule, w = job.rule, job.wildcards
        expected = expected_outputs(lay, rule, w, cfg)
        if expected is None:  # the demo model's directory: files named by transformers
            assert {str(Path(p).parent) for p in job.output} == {lay.model(cfg.model)}
        else:
            assert job.output == expected, rule
        if rule != "all":
            assert job.log == [lay.log(rule).format(**w)], rule
            timing = [lay.timing(rule).format(**w)] if JOB_FILES[rule][1] else []
            assert job.benchmark == timing, rule
        outputs |= set(job.output)

    paths = run_paths(cfg, cfg.results)
    assert paths.adapter is not None and f"{paths.adapter}/adapter_config.json" in outputs
    for head_dir in (paths.danger, paths.policy):
        assert {str(head_dir / "config.json"), str(head_dir / "model.safetensors")} <= outputs
