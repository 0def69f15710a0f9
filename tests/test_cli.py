"""The `vlalert` command line: `predict` on a tiny trained run (one video, several, a glob, an exported
run) and its one-line errors (exit code 2), `export-run`, and `check-config` with the Snakemake dry
run's job table."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from predict_helpers import SEED, raw_config, write_mp4

from vlalert.cli import default_snakefile, job_table, main

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [
    "t_s",
    "tick",
    "frame_idx",
    "generated_text",
    "belief_parsed",
    "p_danger",
    "p_silent",
    "p_observe",
    "p_alert",
    "action",
    "vlm_action",
]


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """The session's tiny run (read-only) and a clip shorter than one window."""
    short = write_mp4(tmp_path_factory.mktemp("cli") / "short.mp4", seconds=1.0)
    return {**tiny_run, "short": short}


def predict(run, *args: str) -> int:
    return main(["predict", *args])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- predict


def test_predict_with_default_config_and_output(run, capsys, monkeypatch, tmp_path):
    """config/config.yaml of the working directory, output ./clip.vlalert.{csv,png} there."""
    (tmp_path / "config").mkdir()
    shutil.copy(run["config"], tmp_path / "config" / "config.yaml")
    monkeypatch.chdir(tmp_path)
    code = predict(run, str(run["video"]), "--run", str(run["results"]), "--format", "csv")
    out = capsys.readouterr().out
    assert code == 0
    assert "3 ticks (SILENT" in out
    table, png = tmp_path / "clip.vlalert.csv", tmp_path / "clip.vlalert.png"
    assert f"wrote {table}" in out and f"wrote {png}" in out
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    assert [r["t_s"] for r in rows] == ["2", "3", "4"]  # 5 s at 10 fps: ticks at 2, 3, 4 s
    assert json.loads(rows[0]["frame_idx"]) == [2, 5, 7, 10, 12, 15, 17, 20]
    assert {r["action"] for r in rows} <= {"SILENT", "OBSERVE", "ALERT"}
    assert png.stat().st_size > 1000


def test_missing_run_dir(run, capsys, tmp_path):
    nope = tmp_path / "nope"
    assert predict(run, str(run["video"]), "--run", str(nope), "--config", str(run["config"])) == 2
    msg = one_error_line(capsys)
    assert f"{nope}: results directory missing" in msg


def test_missing_heads(run, capsys):
    code = predict(
        run, str(run["video"]), "--run", str(run["results"]), "--config", str(run["config"]), "--seed", "4"
    )
    assert code == 2
    msg = one_error_line(capsys)
    assert "heads/t/danger/seed4: directory missing" in msg
    assert "trained first with snakemake" in msg


def test_missing_adapter(run, capsys, tmp_path):
    raw = raw_config()
    raw["cache"]["adapter"] = str(tmp_path / "adapter")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert predict(run, str(run["video"]), "--run", str(run["results"]), "--config", str(config)) == 2
    assert f"{tmp_path / 'adapter'}: directory missing" in one_error_line(capsys)


def test_missing_heads_file(run, capsys, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    (results / "heads" / "t" / "policy" / f"seed{SEED}" / "model.safetensors").unlink()
    assert predict(run, str(run["video"]), "--run", str(results), "--config", str(run["config"])) == 2
    assert f"policy/seed{SEED}/model.safetensors: file missing" in one_error_line(capsys)


def test_unreadable_video(run, capsys, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    assert predict(run, str(bad), "--run", str(run["results"]), "--config", str(run["config"])) == 2
    msg = one_error_line(capsys)
    assert str(bad) in msg and "unreadable video" in msg


def test_video_shorter_than_one_window(run, capsys):
    assert predict(run, str(run["short"]), "--run", str(run["results"]), "--config", str(run["config"])) == 2
    msg = one_error_line(capsys)
    assert f"{run['short']}: video too short: 1.00 s (10 frames at 10 fps)" in msg
    assert "window.span_s = 2 s" in msg


def test_bad_config(run, capsys, tmp_path):
    raw = raw_config()
    raw["window"] = {"span_s": -1.0}
    raw["bogus"] = 1
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert predict(run, str(run["video"]), "--run", str(run["results"]), "--config", str(config)) == 2
    msg = one_error_line(capsys)
    assert msg.startswith(f"vlalert: {config}: invalid config: ")
    assert "window.span_s" in msg and "bogus: unknown key" in msg
    missing = tmp_path / "absent.yaml"
    assert predict(run, str(run["video"]), "--run", str(run["results"]), "--config", str(missing)) == 2
    assert f"{missing}: config file not found" in one_error_line(capsys)


def test_predict_several_videos_into_a_folder(run, capsys, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(run["video"], clips / "a.mp4")
    write_mp4(clips / "b.mp4", seconds=4.0)
    out = tmp_path / "out"
    args = [str(clips / "a.mp4"), str(clips / "b.mp4"), "--run", str(run["results"])]
    assert predict(run, *args, "--config", str(run["config"]), "--out-dir", str(out)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{clips / 'a.mp4'}: 3 ticks") and lines[3].startswith(
        f"{clips / 'b.mp4'}: 2 ticks"
    )
    for name, ticks in (("a", 3), ("b", 2)):
        assert pq.read_table(out / f"{name}.vlalert.parquet").num_rows == ticks
        assert (out / f"{name}.vlalert.png").is_file()


def test_predict_a_quoted_glob(run, capsys, monkeypatch, tmp_path):
    (tmp_path / "v").mkdir()
    shutil.copy(run["video"], tmp_path / "v" / "one.mp4")
    shutil.copy(run["video"], tmp_path / "v" / "two.mp4")
    monkeypatch.chdir(tmp_path)
    assert predict(run, "v/*.mp4", "--run", str(run["results"]), "--config", str(run["config"])) == 0
    out = capsys.readouterr().out
    assert out.count("3 ticks") == 2 and "v/one.mp4:" in out and "v/two.mp4:" in out
    assert (tmp_path / "one.vlalert.parquet").is_file() and (tmp_path / "two.vlalert.png").is_file()


def test_several_videos_are_checked_before_anything_runs(run, capsys, tmp_path):
    base = ["--run", str(run["results"]), "--config", str(run["config"])]
    assert predict(run, str(run["video"]), str(run["video"]), "--out", str(tmp_path / "x"), *base) == 0
    capsys.readouterr()  # the same clip twice is one clip: --out fits
    two = [str(run["video"]), str(run["short"])]
    assert predict(run, *two, "--out", str(tmp_path / "x"), *base) == 2
    assert "--out names the files of one clip, but 2 videos were given: use --out-dir" in one_error_line(
        capsys
    )
    assert predict(run, *two, "--out-dir", str(tmp_path / "o"), *base) == 2
    assert f"{run['short']}: video too short" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()  # the long clip was not predicted either
    assert predict(run, str(tmp_path / "none-*.mp4"), *base) == 2
    assert "none-*.mp4: no file matches this pattern" in one_error_line(capsys)
    same_name = tmp_path / "other" / run["video"].name
    same_name.parent.mkdir()
    shutil.copy(run["video"], same_name)
    assert predict(run, str(run["video"]), str(same_name), *base) == 2
    assert "would overwrite the outputs of" in one_error_line(capsys)


# ----------------------------------------------------------------------------- export-run


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The session's run exported (seed 3, the one it trains) through the CLI, and the predictions
    of `vlalert predict` on the results tree to compare with."""
    root = tmp_path_factory.mktemp("export")
    args = ["export-run", str(run["results"]), str(root / "pkg"), "--config", str(run["config"])]
    assert main([*args, "--seeds", "3"]) == 0
    base = ["--run", str(run["results"]), "--config", str(run["config"]), "--out", str(root / "tree")]
    assert main(["predict", str(run["video"]), *base]) == 0
    return {"pkg": root / "pkg", "tree": pq.read_table(root / "tree.parquet"), "root": root}


def test_export_run_then_predict_without_the_tree_or_config(run, exported, capsys, monkeypatch, tmp_path):
    moved = Path(shutil.copytree(exported["pkg"], tmp_path / "elsewhere" / "run"))
    monkeypatch.chdir(tmp_path)  # no config/config.yaml here
    assert main(["predict", str(run["video"]), "--run", "elsewhere/run", "--out", "p"]) == 0
    assert "3 ticks" in capsys.readouterr().out
    table, tree = pq.read_table(tmp_path / "p.parquet"), exported["tree"]
    for col in ("p_danger", "p_silent", "p_observe", "p_alert"):
        assert table.column(col).to_pylist() == pytest.approx(tree.column(col).to_pylist(), abs=1e-6)
    assert table.column("action").to_pylist() == tree.column("action").to_pylist()
    meta = json.loads(table.schema.metadata[b"vlalert.predict"])
    assert meta["seeds"] == [3] and meta["model"] == str(Path("elsewhere/run/model"))
    code = main(["predict", str(run["video"]), "--run", str(moved), "--config", str(run["config"])])
    assert code == 2 and "an exported run carries its own config" in one_error_line(capsys)


def test_export_run_prints_what_it_wrote(exported, capsys, run, tmp_path):
    args = ["export-run", str(run["results"]), str(tmp_path / "p2"), "--config", str(run["config"])]
    assert main([*args, "--seeds", "3", "--run", "t"]) == 0
    out = capsys.readouterr().out
    assert f"exported run 't' to {tmp_path / 'p2'}: model ./model, seeds 3" in out
    assert f"vlalert predict VIDEO --run {tmp_path / 'p2'}" in out
    assert (tmp_path / "p2" / "run.json").is_file() and (tmp_path / "p2" / "README.md").is_file()


def test_export_run_errors_are_one_line(run, capsys, tmp_path):
    args = ["export-run", str(run["results"]), str(tmp_path / "p"), "--config", str(run["config"])]
    assert main(args) == 2  # seed 4 is configured but never trained
    msg = one_error_line(capsys)
    assert "heads/t/danger/seed4: directory missing" in msg and "--seeds" in msg
    raw = raw_config()
    raw["model"]["name_or_path"] = "SomeOrg/Some-VL"
    hub = tmp_path / "hub.yaml"
    hub.write_text(yaml.safe_dump(raw))
    hub_args = ["export-run", str(run["results"]), str(tmp_path / "h"), "--config", str(hub), "--seeds", "3"]
    assert main(hub_args) == 2
    assert "hub id without a pinned revision" in one_error_line(capsys)
    assert main([*hub_args, "--revision", "0123456789abcdef0123456789abcdef01234567"]) == 0
    assert "model SomeOrg/Some-VL@0123456789abcdef0123456789abcdef01234567" in capsys.readouterr().out
    assert main([*hub_args]) == 2  # h exists now
    assert "already exists and is not an empty folder" in one_error_line(capsys)


def test_predict_keeps_library_warnings_out(run, exported, tmp_path):
    """In a terminal-less run nothing but our own lines reaches stderr (the libraries warn: see below)."""
    exe = str(Path(sys.executable).with_name("vlalert"))
    cmd = [exe, "predict", str(run["video"]), "--run", str(exported["pkg"]), "--out", str(tmp_path / "q")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and "3 ticks" in res.stdout


def test_verbose_lets_the_libraries_warn(run, exported, recwarn, tmp_path, monkeypatch):
    """A library that warns while the model loads (as transformers and peft do on a version change)
    is silent by default and heard with --verbose."""
    import warnings

    from vlalert.cache import stage

    real = stage.load_extractor

    def warning_loader(*args, **kwargs):
        warnings.warn("a library's deprecation notice", FutureWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "load_extractor", warning_loader)
    args = ["predict", str(run["video"]), "--run", str(exported["pkg"])]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert [str(w.message) for w in recwarn] == []
    assert main([*args, "--out", str(tmp_path / "b"), "--verbose"]) == 0
    assert any(issubclass(w.category, FutureWarning) for w in recwarn), [str(w.message) for w in recwarn]


# ----------------------------------------------------------------------------- check-config

DRY_RUN = """Building DAG of jobs...
Job stats:
job        count
-------  -------
ingest         4
sft            1
total          5

Job stats:
job        count
-------  -------
ingest         4
total          5
"""


def test_job_table_is_the_first_table():
    table = job_table(DRY_RUN)
    assert table.splitlines()[0] == "Job stats:"
    assert table.splitlines()[-1].split() == ["total", "5"]
    assert "sft" in table
    assert job_table("Nothing to be done (all requested files are present and up to date).") is None


def test_default_snakefile_is_the_repositorys():
    assert default_snakefile() == REPO / "Snakefile"


def test_check_config_prints_the_dag(tmp_path):
    """A fresh working directory: every stage of the demo would run. The suite's one dry run of the
    demo config through `vlalert check-config` (its invalid configs are checked in-process below)."""
    res = subprocess.run(
        [sys.executable, "-m", "vlalert.cli", "check-config", str(REPO / "config" / "config.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "valid (run 'demo'" in out and "source dota" in out
    table = out.split("Job stats:", 1)[1]
    jobs = dict(line.split() for line in table.splitlines()[3:] if len(line.split()) == 2)
    assert jobs["demo_source"] == "4" and jobs["sft"] == "1"
    assert int(jobs["total"]) > 20


def test_check_config_without_snakefile(capsys, tmp_path):
    missing = tmp_path / "Snakefile"
    assert main(["check-config", str(REPO / "config" / "config.yaml"), "--snakefile", str(missing)]) == 0
    out = capsys.readouterr().out
    assert "valid (run 'demo'" in out
    assert f"{missing}: Snakefile not found" in out


def test_check_config_reports_a_failing_dry_run(capsys, tmp_path, monkeypatch):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text('rule all:\n    input: "never-made.txt"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["check-config", str(REPO / "config" / "config.yaml"), "--snakefile", str(snakefile)]) == 1
    err = capsys.readouterr().err
    assert "snakemake dry run failed" in err and "never-made.txt" in err


def test_check_config_invalid_skips_the_dry_run(capsys, tmp_path):
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["ticks"]["hz"] = 0
    raw["gate"]["bogus"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["check-config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "ticks.hz" in captured.err and "gate.bogus: unknown key" in captured.err
    assert "Job stats" not in captured.out


def test_every_argument_has_help_text():
    import argparse

    from vlalert.cli import build_parser

    def without_help(parser: argparse.ArgumentParser, name: str) -> list[str]:
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sub_parser in action.choices.items():
                    out += without_help(sub_parser, f"{name} {sub}")
            elif not action.help:
                out.append(f"{name}: {action.dest}")
        return out

    assert without_help(build_parser(), "vlalert") == []
