"""The Snakemake DAG itself: lint, config errors before any job, an end-to-end demo run, partial reruns.

The demo run and every test that reads it (and the hand-placed source's real ingest) are `slow`;
lint, the bad config and the full config's dry run are in the fast tier."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from vlalert.schemas import SCHEMAS, read_table

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = None,
    timeout: int = 1200,
    repo: Path = REPO,
    env: dict[str, str] | None = None,
):
    cmd = [SNAKEMAKE, "-s", str(repo / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(configfile or REPO / "config" / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


HEAVY = ("numpy", "pyarrow", "polars", "pandas", "sklearn", "torch", "transformers", "PIL", "av", "decord")


def test_parse_imports_nothing_heavy():
    """The Snakefile's parse imports none of the heavy libraries (DESIGN: a no-op dry run within 1.3x a
    bare Snakefile): the vlalert modules the Snakefile and rules/*.smk import at top level, imported
    together in a fresh interpreter, leave none of them in sys.modules."""
    lines = []
    for f in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        lines += [
            ln
            for ln in f.read_text().splitlines()
            if re.match(r"(from vlalert\S* import|import vlalert)", ln)
        ]
    assert any("vlalert.config" in ln for ln in lines), lines  # the parse-time imports were found
    code = "\n".join([*lines, "import sys", f"print([m for m in {HEAVY!r} if m in sys.modules])"])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]", f"parse-time imports pull {res.stdout.strip()}"


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    stats = dry_run_output.split("Job stats:", 1)[1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)
        if m.group(1) != "total"
    }


def test_lint_is_clean():
    res = subprocess.run(
        [SNAKEMAKE, "--lint", "-s", str(REPO / "Snakefile")], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_config_stops_before_any_job(tmp_path):
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["labels"]["alert_s"] = -1.0
    raw["window"]["nframes"] = 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    res = snakemake(tmp_path, "--cores", "1", configfile=bad)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "labels.alert_s" in out and "window.nframes: unknown key" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_every_output_has_its_schema(demo_run):
    results = demo_run / "results"
    for source in ("nexar", "dada2000", "dota", "dad"):
        videos = read_table("videos", results / "ingest" / source / "videos.parquet")
        assert videos.num_rows >= 4
        read_table("rejected", results / "ingest" / source / "rejected.parquet")
        read_table("gate", results / "gate" / f"{source}.parquet")
        labels = read_table("labels", results / "labels" / f"{source}.parquet")
        assert labels.num_rows > 0
        assert set(len(f) for f in labels.column("frame_idx").to_pylist()) == {8}
        assert read_table("beliefs", results / "beliefs" / f"{source}.parquet").num_rows > 0
    for split in ("train", "val", "test"):
        table = pq.read_table(results / "benchmark" / f"{split}.parquet")
        assert table.schema.equals(SCHEMAS["benchmark"], check_metadata=False)
        index = json.loads((results / "cache" / "demo" / split / "index.json").read_text())
        for part in sorted((results / "cache" / "demo" / split).glob("part-*.parquet")):
            read_table("cache", part)
        assert index
    for head in ("danger", "policy"):
        for seed in (1, 2, 3, 4, 5):
            out = results / "heads" / "demo" / head / f"seed{seed}"
            assert {p.name for p in out.iterdir()} >= {
                "model.safetensors",
                "config.json",
                "metrics.json",
                "train_log.parquet",
            }
    scores = read_table("scores", results / "scores" / "demo" / "test.parquet")
    assert set(scores.column("policy").to_pylist()) == {
        "heads",
        "danger",
        "heads-shuffled",
        "time-only",
        "gate",
        "vlm",
        "always-silent",
        "always-alert",
    }
    summary = read_table("summary", results / "eval" / "demo" / "summary.parquet")
    assert "daus" in set(summary.column("metric").to_pylist())
    assert "DAUS" in (results / "eval" / "demo" / "summary.txt").read_text()


@pytest.mark.slow
def test_sft_lowers_val_loss_and_the_adapter_is_saved(demo_run):
    sft = demo_run / "results" / "sft" / "demo"
    metrics = json.loads((sft / "metrics.json").read_text())
    assert metrics["final_val_loss"] < 0.5 * metrics["initial_val_loss"]
    assert (sft / "adapter" / "adapter_model.safetensors").stat().st_size > 0


@pytest.mark.slow
def test_report_holds_the_figures_and_tables(demo_run):
    res = snakemake(demo_run, "--report", "report.html")
    assert res.returncode == 0, res.stderr[-4000:]
    html = (demo_run / "report.html").read_text()
    figures = sorted(p.name for p in (demo_run / "results" / "eval" / "demo" / "figures").glob("*.png"))
    assert {"bars_daus.png", "reliability_heads.png"} <= set(figures)
    assert any(name.startswith("timelines_") for name in figures)
    for name in [*figures, "key_metrics.html", "summary.txt"]:
        assert name in html, f"{name} missing from the report"


def _summary_row(summary, policy: str, metric: str, source: str = "all") -> tuple[float, float]:
    """(mean, std over seeds; 0 for a policy scored once) of one cell of the demo's summary."""
    rows = summary.filter(
        (summary["policy"] == policy) & (summary["metric"] == metric) & (summary["source"] == source)
    )
    assert rows.height == 1, f"summary has {rows.height} rows for {policy}/{metric}/{source}"
    std = rows["std"][0]
    return float(rows["mean"][0]), 0.0 if std is None or std != std else float(std)


@pytest.mark.slow
def test_signal_flows_from_the_pixels_to_the_alert(demo_run):
    """The heads must read the tick's hidden states, not the clock: on the demo's test split they beat
    the time-only baseline and the trivial policies on tick AUROC by more than the seeds' spread, and
    the same heads on z/r shuffled across the ticks of each clip (times kept) lose that margin."""
    import polars as pl

    summary = pl.read_parquet(demo_run / "results" / "eval" / "demo" / "summary.parquet")
    heads, spread = _summary_row(summary, "heads", "tick_auroc")
    shuffled, shuffled_spread = _summary_row(summary, "heads-shuffled", "tick_auroc")
    baselines = {
        p: _summary_row(summary, p, "tick_auroc")[0] for p in ("time-only", "always-silent", "always-alert")
    }
    best = max(baselines.values())
    margin = heads - best
    report = f"heads {heads:.3f} ± {spread:.3f}, shuffled {shuffled:.3f} ± {shuffled_spread:.3f}, {baselines}"
    assert margin > spread, f"the heads do not beat the clock by more than the seeds' spread: {report}"
    assert heads - shuffled > spread + shuffled_spread, f"shuffling z/r keeps the heads' margin: {report}"
    assert shuffled - best < margin / 2, f"the shuffled heads keep over half the margin: {report}"


@pytest.mark.slow
def test_faults_are_rejected_not_dropped(demo_run):
    results = demo_run / "results"
    for source in ("nexar", "dada2000", "dota", "dad"):
        demo = json.loads((results / "demo" / source / "demo_manifest.json").read_text())
        rejected = read_table("rejected", results / "ingest" / source / "rejected.parquet")
        assert set(demo["faults"]) <= set(rejected.column("video_id").to_pylist())
        videos = read_table("videos", results / "ingest" / source / "videos.parquet")
        assert set(videos.column("video_id").to_pylist()) == set(demo["clips"])


@pytest.mark.slow
def test_manifest_counts_match_the_tables(demo_run):
    results = demo_run / "results"
    manifest = json.loads((results / "benchmark" / "manifest.json").read_text())
    seen = set()
    for split in ("train", "val", "test"):
        table = read_table("benchmark", results / "benchmark" / f"{split}.parquet")
        ids = {
            (s, v)
            for s, v in zip(
                table.column("source").to_pylist(), table.column("video_id").to_pylist(), strict=True
            )
        }
        assert not ids & seen, "a clip is in two splits"
        seen |= ids
        assert len(manifest["files"][split]["sha256"]) == 64
    for source in ("nexar", "dada2000", "dota", "dad"):
        n_rejected = read_table("rejected", results / "ingest" / source / "rejected.parquet").num_rows
        assert manifest["sources"][source]["rejected"] == n_rejected


@pytest.mark.slow
def test_changing_alert_s_reruns_only_relabel_and_benchmark(demo_run, tmp_path):
    assert planned_jobs(snakemake(demo_run, "-n").stdout + "Job stats:\n") == {}
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["labels"]["alert_s"] = 3.0
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    res = snakemake(demo_run, "-n", configfile=changed)
    assert res.returncode == 0, res.stderr
    jobs = planned_jobs(res.stdout)
    assert jobs.get("relabel") == 4 and jobs.get("benchmark") == 1
    assert not {"demo_source", "ingest", "gate"} & set(jobs)


# ---------------------------------------------------------------- what reruns a completed run
# Each test changes files of the completed demo run and puts them back (bytes and mtime), so that
# the run stays complete for the other tests: dry runs only, no job is run again.


def plan(workdir: Path, *args: str, **kwargs) -> dict[str, int]:
    """{rule: jobs} that `snakemake -n` plans ({} when it says there is nothing to be done)."""
    res = snakemake(workdir, "-n", *args, **kwargs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return planned_jobs(res.stdout + "Job stats:\n")


@contextlib.contextmanager
def restored(*files: Path):
    """Put each file back as it was, bytes and mtime, whatever the test did to it."""
    saved = [(f, f.read_bytes(), f.stat()) for f in files]
    try:
        yield
    finally:
        for f, data, st in saved:
            f.write_bytes(data)
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def touch(*files: Path) -> None:
    """A new mtime (one second on) and a byte-identical rewrite: the content does not change."""
    for f in files:
        f.write_bytes(f.read_bytes())
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def assert_reruns_source(jobs: dict[str, int], n_sources: int = 1) -> None:
    """check_source and ingest of the changed source(s), and everything after them; never the demo."""
    assert jobs.get("check_source") == n_sources and jobs.get("ingest") == n_sources, jobs
    assert jobs.get("relabel") == n_sources and {"benchmark", "sft", "heads", "score", "all"} <= set(jobs)
    assert "demo_source" not in jobs


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["nexar/train.csv", "dota/badas_consensus_dota_test.csv"])
def test_editing_an_annotation_reruns_ingest_and_what_follows(demo_run, rel):
    assert plan(demo_run) == {}
    sheet = demo_run / "results" / "demo" / rel
    with restored(sheet):
        sheet.write_text(sheet.read_text().replace("\n", "\r\n"))  # the same rows, other bytes
        jobs = plan(demo_run)
    assert_reruns_source(jobs)
    assert plan(demo_run) == {}


@pytest.mark.slow
def test_replacing_a_video_reruns_ingest_and_what_follows(demo_run):
    clips = sorted((demo_run / "results" / "demo" / "dad" / "videos" / "training").rglob("*.mp4"))
    with restored(clips[0]):
        clips[0].write_bytes(clips[1].read_bytes())
        jobs = plan(demo_run)
    assert_reruns_source(jobs)
    assert plan(demo_run) == {}


@pytest.mark.slow
def test_a_touched_annotation_reruns_nothing_a_touched_clip_reruns_its_ingest(demo_run):
    demo = demo_run / "results" / "demo"
    annotations = [demo / "nexar" / "train.csv", demo / "dota" / "metadata_val.json"]
    annotations += [
        demo / "dada2000" / "DADA2000_video_annotations.xlsx",
        demo / "dad" / "badas_consensus_dad_test.csv",
    ]
    with restored(*annotations):
        touch(*annotations)
        assert plan(demo_run) == {}
    # Clips count by size and mtime (vlalert/source_files.py; README): a touched frame is a change.
    frame = sorted((demo / "dota" / "frames").rglob("*.jpg"))[0]
    with restored(frame):
        touch(frame)
        assert_reruns_source(plan(demo_run))
    assert plan(demo_run) == {}


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The workflow and the vlalert package copied, to edit code without touching the checkout."""
    copy = tmp_path_factory.mktemp("repo")
    for name in ("Snakefile", "rules", "workflow", "vlalert", "profiles", "envs", "config", "report"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, copy / name)
    return copy


@pytest.mark.slow
def test_library_code_reruns_by_content_not_by_mtime(demo_run, repo_copy):
    """The copy's vlalert comes first on the path: its code hashes are what the dry runs compare."""
    env = os.environ | {"PYTHONPATH": str(repo_copy)}
    labels = repo_copy / "vlalert" / "labels.py"
    scripts = repo_copy / "workflow" / "scripts"
    touch(labels, scripts / "relabel.py", scripts / "sft.py", repo_copy / "vlalert" / "vlm" / "sft.py")
    assert plan(demo_run, repo=repo_copy, env=env) == {}

    with restored(labels):
        labels.write_text(labels.read_text() + "\n# an edit of the library code relabel runs\n")
        jobs = plan(demo_run, repo=repo_copy, env=env)
    assert jobs.get("relabel") == 4 and {"beliefs", "benchmark", "sft", "heads", "score"} <= set(jobs)
    assert not {"demo_source", "check_source", "ingest", "gate"} & set(jobs)


@pytest.mark.slow
def test_files_placed_by_hand_are_inputs_of_ingest(tmp_path):
    """A real (hand-placed) source: its annotation file is an input of ingest, checked by content."""
    nexar = tmp_path / "resources" / "nexar"
    (nexar / "train" / "negative").mkdir(parents=True)
    sheet = nexar / "train.csv"
    sheet.write_text("id,time_of_event,time_of_alert,target\n")
    clip = nexar / "train" / "negative" / "00001.mp4"
    clip.write_bytes(b"not a video: rejected by ingest, with the reason")
    (tmp_path / "resources" / "gate.csv").write_text("video_id,t_s,p_collision\n")
    cfg = {
        "run": "hand",
        "demo": {"enabled": False},
        "cache": {"belief_layers": [1, 2, 3, 4], "policy_layer": 3},
        "gate": {"provider": "scores_file"},
        "labels": {"gated_sources": []},
        "sources": {
            "nexar": {"kind": "nexar", "root": "resources/nexar", "gate_scores": "resources/gate.csv"}
        },
    }
    config = tmp_path / "hand.yaml"
    config.write_text(yaml.safe_dump(cfg))
    target = "results/hand/ingest/nexar/videos.parquet"
    res = snakemake(tmp_path, "--cores", "2", target, configfile=config, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert read_table("rejected", tmp_path / "results/hand/ingest/nexar/rejected.parquet").num_rows == 1
    res = snakemake(tmp_path, "-n", "--forceall", target, configfile=config)
    assert re.search(
        r"rule ingest:\n    input: results/hand/download/nexar.layout.json, resources/nexar/train.csv\n",
        res.stdout,
    )

    touch(sheet)
    assert plan(tmp_path, target, configfile=config) == {}
    with restored(sheet):
        sheet.write_text(sheet.read_text() + "00001,,,0\n")
        assert plan(tmp_path, target, configfile=config) == {"check_source": 1, "ingest": 1}
    with restored(clip):
        clip.write_bytes(b"another file")
        assert plan(tmp_path, target, configfile=config) == {"check_source": 1, "ingest": 1}


@pytest.mark.slow
def test_benchmark_is_rebuilt_identically_elsewhere(demo_run, tmp_path):
    """Determinism of the data half of the DAG: a second run elsewhere gives identical label tables."""
    other = tmp_path / "again"
    other.mkdir()
    res = snakemake(other, "--cores", "2", "benchmark")
    assert res.returncode == 0, res.stderr[-4000:]
    for source in ("nexar", "dada2000", "dota", "dad"):
        a = read_table("labels", demo_run / "results" / "labels" / f"{source}.parquet")
        b = read_table("labels", other / "results" / "labels" / f"{source}.parquet")
        assert a.equals(b)
    shutil.rmtree(other)


def test_a_config_given_on_the_command_line_is_used_alone(tmp_path):
    """full.yaml is not merged over the demo: SFT and cache on the GPU with the 4B model's layers."""
    from vlalert.config import load_config

    for rel in ("resources/open-badas/config.json", *(f"resources/badas_consensus/{s}_test.csv" for s in
                ("dada", "dota", "dad"))):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")  # the hand-placed inputs, as names only: a dry run opens nothing
    res = snakemake(tmp_path, "-n", configfile=REPO / "config" / "full.yaml", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = planned_jobs(res.stdout)
    assert not {"tiny_model", "demo_source"} & set(jobs)  # nothing of the demo's
    assert jobs["sft"] == 1 and jobs["cache_shard"] >= 3 and jobs["heads"] == 10
    blocks = {
        m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", res.stdout, re.M | re.S)
    }
    for rule in ("sft", "cache_shard"):
        assert re.search(r"\bgpu=1\b", blocks[rule]), blocks[rule]
        assert "results/full/" in blocks[rule]  # the run's own results folder, never the demo's tables
    cfg = load_config(REPO / "config" / "full.yaml")  # what `vlalert check-config` validates
    assert cfg.model.name_or_path == "Qwen/Qwen3-VL-4B-Instruct" and not cfg.model.is_tiny
    assert (list(cfg.cache.belief_layers), cfg.cache.policy_layer) == ([20, 24, 28, 32], 33)
    assert cfg.sft.device != "cpu" and cfg.results == "results/full"
    assert cfg.gate_chain("dota") == ["consensus", "badas"]


@pytest.mark.slow
def test_predict_runs_the_demo_run_on_a_real_dad_clip(demo_run, real_data, tmp_path):
    """`vlalert predict` on real 1280x720 footage with the demo's trained run (a plumbing check)."""
    video = real_data / "dad" / "videos" / "testing" / "positive" / "000478.mp4"
    out = tmp_path / "real"
    cmd = [str(Path(sys.executable).with_name("vlalert")), "predict", str(video)]
    cmd += ["--run", str(demo_run / "results"), "--config", str(REPO / "config" / "config.yaml")]
    res = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=demo_run)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    table = pq.read_table(out.with_suffix(".parquet")).to_pylist()
    assert [r["t_s"] for r in table] == [2.0, 3.0, 4.0]  # 100 frames at 20 fps
    assert table[0]["frame_idx"] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {r["action"] for r in table} <= {"SILENT", "OBSERVE", "ALERT"}
    assert all(0.0 <= r["p_alert"] <= 1.0 for r in table)
    assert out.with_suffix(".png").stat().st_size > 1000
