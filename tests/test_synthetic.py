"""The synthetic demo corpus: native layouts, determinism, believable motion, truth, faults."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image, UnidentifiedImageError

from vlalert.config import DemoConfig
from vlalert.sources import consensus, dada2000
from vlalert.sources.registry import KIND_FPS
from vlalert.sources.synthetic import (
    DADA_SHEET,
    DEMOS,
    MANIFEST,
    MARKER,
    SCENE_TRUTH,
    make_demo_source,
    plan_demo,
)
from vlalert.synthetic.render import Camera, render_clip_frame
from vlalert.synthetic.scenarios import (
    EGO_SCENARIOS,
    POSITIVE_SCENARIOS,
    Scenario,
    agent_tracks,
    course_ttc,
    timeline,
)

KINDS = ("nexar", "dada2000", "dota", "dad")
SMALL = DemoConfig(clips_per_source=4)
TINY = DemoConfig(clips_per_source=4, width=64, height=48, max_duration_s=6.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("demo")
    return {k: (root / k, make_demo_source(k, root / k, SMALL)) for k in KINDS}


def _truth(root: Path) -> dict:
    return json.loads((root / SCENE_TRUTH).read_text())


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _plan(kind: str, demo: DemoConfig = SMALL) -> dict[str, Scenario]:
    return {c.video_id: c.scenario for c in plan_demo(kind, demo)}


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_frames(tmp_path: Path) -> None:
    for kind in ("nexar", "dada2000", "dota"):
        a = make_demo_source(kind, tmp_path / "a" / kind, TINY)
        b = make_demo_source(kind, tmp_path / "b" / kind, TINY)
        assert a == b
        for rel in a["files"]:
            assert (tmp_path / "a" / kind / rel).read_bytes() == (tmp_path / "b" / kind / rel).read_bytes(), (
                rel
            )
    vid = next(v for v in a["clips"])  # dota: a frame folder
    fa = np.asarray(Image.open(tmp_path / "a" / "dota" / "frames" / vid / "000005.jpg"))
    fb = np.asarray(Image.open(tmp_path / "b" / "dota" / "frames" / vid / "000005.jpg"))
    assert np.array_equal(fa, fb)
    mp4 = next(r for r in make_demo_source("nexar", tmp_path / "c", TINY)["files"] if r.endswith(".mp4"))
    ra = decord.VideoReader(str(tmp_path / "a" / "nexar" / mp4))
    rc = decord.VideoReader(str(tmp_path / "c" / mp4))
    assert np.array_equal(ra[10].asnumpy(), rc[10].asnumpy())


def test_different_seed_gives_different_corpus(tmp_path: Path) -> None:
    a = make_demo_source("nexar", tmp_path / "a", TINY)
    b = make_demo_source("nexar", tmp_path / "b", TINY.model_copy(update={"seed": 8}))
    assert set(a["clips"]) != set(b["clips"])
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "b" / "train.csv").read_bytes()


def test_mp4_bytes_do_not_depend_on_uninitialised_memory(tmp_path: Path) -> None:
    # glibc fills fresh allocations with this byte: an encoder that reads memory it never wrote
    # (x264's macroblock tree did) gives different bytes in the other process.
    code = (
        "import sys; from vlalert.config import DemoConfig; "
        "from vlalert.sources.synthetic import make_demo_source; "
        "make_demo_source('nexar', sys.argv[1], "
        "DemoConfig(clips_per_source=4, max_duration_s=6.0))"
    )
    env = {**os.environ, "MALLOC_PERTURB_": "165"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "p")], env=env, check=True)
    manifest = make_demo_source("nexar", tmp_path / "q", DemoConfig(clips_per_source=4, max_duration_s=6.0))
    for rel in manifest["files"]:
        assert (tmp_path / "p" / rel).read_bytes() == (tmp_path / "q" / rel).read_bytes(), rel


def test_plan_does_not_depend_on_python_hash() -> None:
    # Python salts str hashes per process: two processes with different salts must plan the same corpus.
    code = (
        "from vlalert.config import DemoConfig; from vlalert.sources.synthetic import plan_demo; "
        "print([(c.video_id, c.scenario.look_seed) for k in ('nexar', 'dota') "
        "for c in plan_demo(k, DemoConfig())])"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for salt in ("1", "2")
    ]
    assert outs[0] == outs[1] and outs[0].count("SYN07_demo_") == 8


# ---------------------------------------------------------------- native layouts


def test_nexar_layout(demo: dict) -> None:
    root, manifest = demo["nexar"]
    seen = {}
    for split in ("train", "test-public"):
        cols, rows = _csv(root / f"{split}.csv")
        assert cols == ["id", "time_of_event", "time_of_alert", "target"]
        for r in rows:
            assert len(r["id"]) == 5 and r["id"].isdigit()
            label = "positive" if r["target"] == "1" else "negative"
            assert (root / split / label / f"{r['id']}.mp4").is_file()
            if r["target"] == "0":
                assert r["time_of_event"] == "" and r["time_of_alert"] == ""
            seen[r["id"]] = r
    assert set(manifest["clips"]) | set(manifest["faults"]) == set(seen)
    truth = _truth(root)["clips"]
    for vid, entry in truth.items():
        if entry["t_event_s"] is not None:
            assert float(seen[vid]["time_of_event"]) == entry["t_event_s"]
            assert float(seen[vid]["time_of_alert"]) == entry["t_risky_s"]


def test_dada2000_layout(demo: dict) -> None:
    root, manifest = demo["dada2000"]
    wb = load_workbook(root / DADA_SHEET, read_only=True)
    rows = list(wb.worksheets[1].iter_rows(values_only=True))
    assert list(rows[0]) == list(dada2000.COLUMNS)
    table = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert all(v is not None for r in table for v in r.values())
    truth = _truth(root)["clips"]
    for r in table:
        vid = f"{r['type']}_{r['video']:03d}"
        if vid in manifest["faults"]:
            continue
        scenario = manifest["clips"][vid]
        assert (r["type"] <= 18) == (scenario in EGO_SCENARIOS)
        assert r["whether an accident occurred (1/0)"] == int(scenario in POSITIVE_SCENARIOS)
        frames = sorted((root / str(r["type"]) / f"{r['video']:03d}" / "images").iterdir())
        assert len(frames) == r["total frames"]
        assert frames[0].name == "0001.jpg"
        if r["accident frame"] != -1:
            assert r["accident frame"] / 30 == truth[vid]["t_event_s"]
            assert r["abnormal start frame"] / 30 == truth[vid]["t_risky_s"]
            assert r["[0,tai]"] + r["[tai,tae]"] + r["[tae,end]"] == r["total frames"]


def test_dota_layout_matches_real_metadata_keys(demo: dict, real_data: Path) -> None:
    root, manifest = demo["dota"]
    real = json.loads((real_data / "dota_metadata_val.json").read_text())
    real_keys = set(next(iter(real.values())))
    subsets = {}
    for subset in ("train", "val"):
        meta = json.loads((root / f"metadata_{subset}.json").read_text())
        assert meta, subset
        for name, entry in meta.items():
            assert set(entry) == real_keys
            assert entry["subset"] == subset
            assert entry["video_end"] - entry["video_start"] + 1 == entry["num_frames"]
            assert entry["anomaly_class"].split(":")[0] in ("ego", "other")
            folder = root / "frames" / name
            if name not in manifest["faults"]:
                files = sorted(folder.iterdir())
                assert len(files) == entry["num_frames"]
                assert files[0].name == "000000.jpg"
                assert Image.open(files[-1]).size == (160, 96)
            subsets[name] = subset
    _, rows = _csv(root / DEMOS["dota"].consensus_file)
    assert rows and all(subsets[r["id"].removesuffix(".mp4")] == "val" for r in rows)


def test_mp4s_decode_with_right_fps_and_frame_count(demo: dict) -> None:
    for kind in ("nexar", "dad"):
        root, manifest = demo[kind]
        truth = _truth(root)["clips"]
        mp4s = [r for r in manifest["files"] if r.endswith(".mp4")]
        assert len(mp4s) == len(manifest["clips"]) + len(manifest["faults"])
        for rel in mp4s:
            vid = Path(rel).stem if kind == "nexar" else "-".join(Path(rel).parts[-3:-1] + (Path(rel).stem,))
            if vid in manifest["faults"]:
                continue
            vr = decord.VideoReader(str(root / rel))
            assert vr.get_avg_fps() == pytest.approx(KIND_FPS[kind])
            assert len(vr) == round(truth[vid]["duration_s"] * KIND_FPS[kind])
            assert vr[0].shape == (96, 160, 3)
            if kind == "dad":
                assert len(vr) == 100


def test_consensus_rows_are_second_annotations(demo: dict) -> None:
    for kind in ("dada2000", "dota", "dad"):
        root, manifest = demo[kind]
        cols, rows = _csv(root / DEMOS[kind].consensus_file)
        assert cols == list(consensus.COLUMNS)
        truth = _truth(root)["clips"]
        positives = [v for v, s in manifest["clips"].items() if s in POSITIVE_SCENARIOS]
        assert 1 <= len(rows) < len(positives)
        for r in rows:
            stem = r["id"].removesuffix(".mp4")
            vid = f"testing-positive-{stem}" if kind == "dad" else stem
            e = truth[vid]
            # written on the consensus file's clock: DAD's is 30 fps for clips that play at 20 fps
            clock = {"dada2000": 30.0, "dota": 10.0, "dad": 30.0}[kind]
            to_clip_s = clock / {"dada2000": 30.0, "dota": 10.0, "dad": 20.0}[kind]
            assert abs(float(r["Time-of-alert"]) * to_clip_s - e["t_risky_s"]) <= 0.3 + 0.01
            assert float(r["Time-of-collision"]) * to_clip_s == pytest.approx(e["t_event_s"], abs=0.01)
            assert float(r["Diff"]) == pytest.approx(
                float(r["Time-of-collision"]) - float(r["Time-of-alert"])
            )
            assert r["Nexar-vehicle-involved"] == ("yes" if e["ego_involved"] else "no")
            assert r["article_category"] == ("pos-ego" if e["ego_involved"] else "pos-not-ego")
            assert 5 <= int(r["min_support"]) <= 7 and r["batch"] == "" and r["Event-type"] == "Collision"


def test_manifest_lists_every_file_it_wrote(demo: dict) -> None:
    for kind in KINDS:
        root, manifest = demo[kind]
        assert json.loads((root / MANIFEST).read_text()) == manifest
        assert manifest["kind"] == kind and manifest["seed"] == SMALL.seed
        on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert on_disk - {MANIFEST} == set(manifest["files"])
        assert len(manifest["clips"]) == SMALL.clips_per_source


# ---------------------------------------------------------------- pixels and truth


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 40


def test_positive_agents_visibly_approach(demo: dict) -> None:
    """The agent's pixels grow toward the event, and the written file shows them (not the empty road)."""
    cam = Camera.for_size(SMALL.width, SMALL.height)
    checked = 0
    for kind in ("nexar", "dota"):
        root, manifest = demo[kind]
        plan = _plan(kind)
        for vid, name in manifest["clips"].items():
            if name not in EGO_SCENARIOS:
                continue
            s = plan[vid]
            idx = [int(round((s.t_risky_s - 1.0) * s.fps)), int(round((s.t_event_s - 0.2) * s.fps))]
            if kind == "nexar":
                rel = next(r for r in manifest["files"] if r.endswith(f"/{vid}.mp4"))
                decoded = list(decord.VideoReader(str(root / rel)).get_batch(idx).asnumpy())
            else:
                decoded = [np.asarray(Image.open(root / "frames" / vid / f"{i:06d}.jpg")) for i in idx]
            areas = []
            for f, i in zip(decoded, idx, strict=True):
                full = render_clip_frame(s, cam, i)
                empty = render_clip_frame(s, cam, i, with_agents=False)
                agent = _changed(full, empty)
                areas.append(float(agent.mean()))
                if agent.sum() >= 20:
                    err_full = np.abs(f.astype(int) - full)[agent].mean()
                    err_empty = np.abs(f.astype(int) - empty)[agent].mean()
                    assert err_full < 0.5 * err_empty, (kind, vid, i)
            near = 0.02 if name == "pedestrian-crossing" else 0.1  # a pedestrian is narrow
            assert areas[1] > 5 * areas[0] and areas[1] > near, (kind, vid, name, areas)
            checked += 1
    assert checked >= 4


def test_negative_scene_has_no_collision() -> None:
    cam = Camera.for_size(160, 96)
    for c in plan_demo("nexar", DemoConfig(clips_per_source=5)):
        if c.scenario.name == "negative-following":
            s = c.scenario
            last = render_clip_frame(s, cam, s.n_frames - 1)
            area = _changed(last, render_clip_frame(s, cam, s.n_frames - 1, with_agents=False)).mean()
            assert 0 < area < 0.05  # the lead car stays small: it keeps its distance


def test_ttc_reaches_zero_at_the_event_and_matches_gap(demo: dict) -> None:
    for kind in KINDS:
        root, manifest = demo[kind]
        plan = _plan(kind)
        for vid, e in _truth(root)["clips"].items():
            tl = e["timeline"]
            n = len(tl["t_s"])
            assert all(len(tl[k]) == n for k in ("ttc_s", "gap_m", "where", "motion"))
            assert n == round(e["duration_s"] * 10) and tl["t_s"][:3] == [0.0, 0.1, 0.2]
            if not e["ego_involved"]:
                assert all(v is None for v in tl["ttc_s"]), vid
                continue
            i_e = tl["t_s"].index(e["t_event_s"])
            assert tl["ttc_s"][i_e] == 0.0 and tl["gap_m"][i_e] == 0.0
            v_ego = plan[vid].ego_speed_mps
            for i in range(i_e - 5, i_e):  # the last half second: on a collision course
                ttc, gap = tl["ttc_s"][i], tl["gap_m"][i]
                assert ttc is not None and 0 < ttc < 3.0
                # constant-velocity ttc never undercuts the real time left, nor gap / ego speed
                assert ttc >= (e["t_event_s"] - tl["t_s"][i]) - 1e-3
                assert ttc >= gap / v_ego - 1e-2
            assert tl["ttc_s"][i_e - 1] < tl["ttc_s"][i_e - 5]


def test_course_ttc_hand_cases() -> None:
    args = dict(half_band=1.8, overlap_len=9.0)
    # straight ahead: 20 m at 10 m/s closing
    assert course_ttc(np.array([20.0]), np.array([10.0]), np.array([0.0]), np.array([0.0]), **args)[0] == 2.0
    # adjacent lane, no drift: never
    assert math.isnan(
        course_ttc(np.array([20.0]), np.array([10.0]), np.array([3.5]), np.array([0.0]), **args)[0]
    )
    # drifting in at 1 m/s: enters the path after 1.7 s, before the boxes meet at 2.0 s -> 2.0
    assert course_ttc(np.array([20.0]), np.array([10.0]), np.array([3.5]), np.array([-1.0]), **args)[0] == 2.0
    # drifting in at 0.5 m/s: enters after 3.4 s, but the ego has passed it by (20 + 9) / 10 = 2.9 s
    assert math.isnan(
        course_ttc(np.array([20.0]), np.array([10.0]), np.array([3.5]), np.array([-0.5]), **args)[0]
    )
    # drifting away: never
    assert math.isnan(
        course_ttc(np.array([20.0]), np.array([10.0]), np.array([3.5]), np.array([1.0]), **args)[0]
    )
    # touching
    assert course_ttc(np.array([0.0]), np.array([0.0]), np.array([0.2]), np.array([0.0]), **args)[0] == 0.0


def test_lead_braking_kinematics_by_hand() -> None:
    # v = 14 m/s, decel 7 m/s^2, brake at 2.5 s, contact at 4.5 s: the lead stops after exactly 2 s,
    # so the initial gap is 0.5 * 7 * 2^2 = 14 m; one second into braking 3.5 m are closed at 7 m/s.
    s = Scenario("lead-braking", 20.0, 100, 2.5, 4.5, 14.0, 1, (("color", 0.0), ("decel", 7.0)), 0)
    (lead,) = agent_tracks(s, np.array([0.0, 3.5, 4.5, 4.9]))
    assert lead.z == pytest.approx([14.0, 10.5, 0.0, 0.0])
    assert lead.closing == pytest.approx([0.0, 7.0, 0.0, 0.0])
    tl = timeline(s)
    assert tl["ttc_s"][35] == pytest.approx(1.5)  # 10.5 m / 7 m/s
    assert tl["ttc_s"][20] is None and tl["motion"][20] == "none" and tl["motion"][30] == "braking"
    assert tl["ttc_s"][45] == 0.0 and tl["motion"][45] == "stopped"


# ---------------------------------------------------------------- faults


def test_fault_clips_are_unreadable_or_contradictory(demo: dict) -> None:
    for kind in KINDS:
        root, manifest = demo[kind]
        assert len(manifest["faults"]) == 2
        assert not set(manifest["faults"]) & set(_truth(root)["clips"])
    n_root, n_man = demo["nexar"]
    bad = [r for r in n_man["files"] if Path(r).stem in n_man["faults"] and r.endswith(".mp4")]
    unreadable = 0
    for rel in bad:
        try:
            decord.VideoReader(str(n_root / rel))
        except RuntimeError:
            unreadable += 1
    assert unreadable == 1
    rows = {r["id"]: r for split in ("train", "test-public") for r in _csv(n_root / f"{split}.csv")[1]}
    contradicting = [
        v for v in n_man["faults"] if float(rows[v]["time_of_alert"]) > float(rows[v]["time_of_event"])
    ]
    assert len(contradicting) == 1

    d_root, d_man = demo["dada2000"]
    table = load_workbook(d_root / DADA_SHEET, read_only=True).worksheets[1]
    rows = list(table.iter_rows(values_only=True))
    faults = [dict(zip(rows[0], r, strict=True)) for r in rows[1:] if f"{r[5]}_{r[0]:03d}" in d_man["faults"]]
    assert sum(r["abnormal start frame"] > r["accident frame"] for r in faults) == 1
    empty = [r for r in faults if r["abnormal start frame"] <= r["accident frame"]][0]
    assert list((d_root / str(empty["type"]) / f"{empty['video']:03d}" / "images").iterdir()) == []

    t_root, t_man = demo["dota"]
    meta = {**json.loads((t_root / "metadata_train.json").read_text())}
    meta.update(json.loads((t_root / "metadata_val.json").read_text()))
    past_end = [v for v in t_man["faults"] if meta[v]["anomaly_start"] >= meta[v]["num_frames"]]
    assert len(past_end) == 1
    (corrupt,) = set(t_man["faults"]) - set(past_end)
    with pytest.raises(UnidentifiedImageError):
        Image.open(t_root / "frames" / corrupt / "000000.jpg").load()

    a_root, a_man = demo["dad"]
    sizes = []
    for rel in a_man["files"]:
        vid = "-".join(Path(rel).parts[-3:-1] + (Path(rel).stem,))
        if vid in a_man["faults"]:
            sizes.append((a_root / rel).stat().st_size)
            with pytest.raises(RuntimeError):
                decord.VideoReader(str(a_root / rel))
    assert sorted(sizes)[0] == 0 and len(sizes) == 2


def test_no_faults_when_disabled() -> None:
    for kind in KINDS:
        assert all(c.fault is None for c in plan_demo(kind, SMALL.model_copy(update={"faults": False})))


# ---------------------------------------------------------------- scenario plan


def test_scenario_coverage_and_times() -> None:
    cfg = DemoConfig()  # 6 clips per source
    for kind in KINDS:
        clips = [c for c in plan_demo(kind, cfg) if c.fault is None]
        names = [c.scenario.name for c in clips]
        assert len(clips) == 6
        assert len({n for n in names if n in EGO_SCENARIOS}) >= 3
        negatives = [n for n in names if n not in POSITIVE_SCENARIOS]
        assert (len(negatives) >= 1) == (kind != "dota")
        if kind in ("dota", "dada2000"):
            assert "other-collision" in names
            assert max(c.scenario.t_risky_s or 0 for c in clips) >= 8.5  # room for a prefix negative
        for c in clips:
            s = c.scenario
            assert s.fps == KIND_FPS[kind]
            if kind == "dad":
                assert s.n_frames == 100 and s.duration_s == 5.0
                expected = (2.5, 4.5) if s.is_positive else (None, None)
                assert (s.t_risky_s, s.t_event_s) == expected
                continue
            assert 8.0 <= s.duration_s <= cfg.max_duration_s
            if s.is_positive:
                assert 5.0 <= s.t_event_s <= s.duration_s - 1.45
                assert 1.5 - 1e-9 <= s.t_event_s - s.t_risky_s <= 3.0 + 1e-9


def test_large_corpus_plans_unique_ids() -> None:
    cfg = DemoConfig(clips_per_source=500)
    for kind in KINDS:
        ids = [c.video_id for c in plan_demo(kind, cfg)]
        assert len(ids) == len(set(ids)) == 502


def test_odd_sizes_are_rounded_down_to_even_for_h264() -> None:
    cam = Camera.for_size(161, 97)
    assert (cam.width, cam.height) == (160, 96)
    s = plan_demo("dad", DemoConfig(clips_per_source=4))[0].scenario
    assert render_clip_frame(s, cam, 0).shape == (96, 160, 3)


def test_refuses_to_wipe_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(FileExistsError):
        make_demo_source("dad", tmp_path, TINY)
    assert (tmp_path / "mine.txt").exists()


def test_rebuild_replaces_stale_files(tmp_path: Path) -> None:
    make_demo_source("dad", tmp_path, TINY)
    assert (tmp_path / MARKER).exists()
    stale = tmp_path / "videos" / "training" / "positive" / "999999.mp4"
    stale.write_bytes(b"old")
    manifest = make_demo_source("dad", tmp_path, TINY)
    assert not stale.exists()
    assert (tmp_path / MANIFEST).exists() and len(manifest["clips"]) == 4
