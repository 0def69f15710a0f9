"""The real samples of ../shared/data/real through the data half of the DAG (config/real-sample.yaml).

The labels of the five real DAD clips are pinned by hand. Each clip is 100 frames at 20 fps (ticks at
2, 3 and 4 s); its consensus times are on a 30 fps clock (frame = T * 30, shown at T * 30 / 20 s):

| clip   | ego | alert -> t_r         | collision -> t_event | ticks 2, 3, 4 s                    |
| 000478 | no  | 1.00 s = f30 -> 1.50 | 2.76 s = f83 -> 4.14 | OBSERVE(non-ego) x2, post-event    |
| 000487 | yes | 2.48 s = f74 -> 3.72 | 3.08 s = f92 -> 4.62 | OBSERVE, OBSERVE, ALERT            |
| 000493 | yes | 1.04 s = f31 -> 1.56 | 3.16 s = f95 -> 4.74 | ALERT, ALERT, post-event (>= 3.56) |
| 000512 | no  | 2.52 s = f76 -> 3.78 | 3.00 s = f90 -> 4.50 | OBSERVE, OBSERVE, OBSERVE(non-ego) |
| 000528 | no  | 1.64 s = f49 -> 2.46 | 2.96 s = f89 -> 4.44 | OBSERVE, OBSERVE(non-ego) x2       |

Frames looked at: in 000478 the two motorbikes touch around frames 83-90 (frame 55, the 20 fps
reading of 2.76 s, shows no contact); in 000487 the scooter is against the ego car at frame 92 (not
at 62); in 000512 the two scooters collide at frames 88-90 (not at 60).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlalert.schemas import read_table

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow  # every test reads the real samples' run of the DAG

S, OB, A = "SILENT", "OBSERVE", "ALERT"
NON_EGO, OBS, ALR, POST = "alert->observe:non-ego", "observe-window", "alert-window", "post-event"
DAD_LABELS = {
    "testing-positive-000478": [(OB, NON_EGO), (OB, NON_EGO), (S, POST)],
    "testing-positive-000487": [(OB, OBS), (OB, OBS), (A, ALR)],
    "testing-positive-000493": [(A, ALR), (A, ALR), (S, POST)],
    "testing-positive-000512": [(OB, OBS), (OB, OBS), (OB, NON_EGO)],
    "testing-positive-000528": [(OB, OBS), (OB, NON_EGO), (OB, NON_EGO)],
}
DAD_TIMES = {  # t_risky_s, t_event_s in seconds of the 20 fps clips
    "testing-positive-000478": (1.5, 4.14),
    "testing-positive-000487": (3.72, 4.62),
    "testing-positive-000493": (1.56, 4.74),
    "testing-positive-000512": (3.78, 4.5),
    "testing-positive-000528": (2.46, 4.44),
}


def real_sample_config(real_data: Path, results: Path) -> dict:
    """config/real-sample.yaml with its ../shared paths made absolute and its results in `results`."""
    raw = yaml.safe_load((REPO / "config" / "real-sample.yaml").read_text())
    shared = REPO.parent / "shared"
    for src in raw["sources"].values():
        for key in ("root", "annotations", "consensus"):
            if src.get(key):
                src[key] = str((REPO / src[key]).resolve()) if src[key].startswith("..") else src[key]
                assert src[key].startswith(str(shared.resolve())) or Path(src[key]).exists()
    raw["results"] = str(results)
    return raw


@pytest.fixture(scope="module")
def real_run(real_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("real")
    cfg = work / "real-sample.yaml"
    cfg.write_text(yaml.safe_dump(real_sample_config(real_data, work / "results")))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(cfg)]
    res = subprocess.run([*cmd, "--cores", "2"], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    return work / "results", cmd


def test_real_dad_labels_pinned_by_hand(real_run):
    results, _ = real_run
    videos = {
        r["video_id"]: r for r in read_table("videos", results / "ingest/dad/videos.parquet").to_pylist()
    }
    assert set(videos) == set(DAD_LABELS)
    for vid, (t_r, t_e) in DAD_TIMES.items():
        assert videos[vid]["fps"] == pytest.approx(20.0)
        assert (videos[vid]["t_risky_s"], videos[vid]["t_event_s"]) == pytest.approx((t_r, t_e), abs=1e-6)
        prov = json.loads(videos[vid]["meta"])["provenance"]["t_event_s"]
        assert prov["clock_fps"] == 30.0 and prov["field"] == "Time-of-collision"
    labels = read_table("labels", results / "labels/dad.parquet").to_pylist()
    got: dict[str, list] = {}
    for row in labels:
        got.setdefault(row["video_id"], []).append((row["t_s"], row["action"], row["rule"], row["excluded"]))
    for vid, expected in DAD_LABELS.items():
        assert [t for t, *_ in got[vid]] == [2.0, 3.0, 4.0]
        assert [(a, r) for _, a, r, _ in got[vid]] == expected, vid
        assert [x for *_, x in got[vid]] == [r == "post-event" for _, r in expected]


def test_real_sample_manifest(real_run):
    results, _ = real_run
    manifest = json.loads((results / "benchmark/manifest.json").read_text())
    # every real clip accepted; DoTA val (peers' test) and DAD testing all land in test
    assert manifest["sources"]["dad"]["accepted"] == 5 and manifest["sources"]["dota"]["accepted"] == 1402
    assert manifest["totals"]["train"]["ticks"] == manifest["totals"]["val"]["ticks"] == 0
    assert manifest["positives"]["test"] == {"dad": 5, "dota": 1402}
    assert manifest["consensus"] == {"dad": {"applied": 5}, "dota": {"applied": 582, "applied-less2s": 16}}
    dota = manifest["ticks"]["test"]["dota"]
    assert dota[A] > 0 and dota[OB] > 0 and dota[S] > 0
    # no ALERT or OBSERVE at or after a collision
    bench = read_table("benchmark", results / "benchmark/test.parquet")
    for row in bench.filter(bench["is_positive"]).to_pylist():
        if row["action"] != S:
            assert row["t_s"] < row["t_event_s"] - 1e-6, row
    decisions = read_table("consensus", results / "ingest/dota/consensus.parquet")
    assert decisions.num_rows == 598 and all(decisions.column("peer_test").to_pylist())


def test_real_sample_plans_nothing_after_the_benchmark(real_run):
    _, cmd = real_run
    res = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr
