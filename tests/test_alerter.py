"""`vlalert.Alerter`: an exported run, moved away from the results tree it came from (which is then
deleted), predicts what `vlalert predict` predicts on that tree, for one seed and as the mean of all.

The run is the session's tiny run (tests/predict_helpers.py) copied with the heads of both seeds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from predict_helpers import two_seed_run, write_mp4

from vlalert.actions import ACTIONS
from vlalert.config import load_config
from vlalert.heads import fsm
from vlalert.predict import PREDICTIONS, PredictError, library_output, predict_video
from vlalert.run_package import RunPackageError, export_run

PROBS = ("p_danger", "p_silent", "p_observe", "p_alert")


@pytest.fixture(scope="module")
def moved(tiny_run, tmp_path_factory):
    """The reference predictions of each seed on the results tree, then the run exported, moved to
    another folder and the results tree deleted."""
    root = tmp_path_factory.mktemp("alerter")
    source = two_seed_run(tiny_run, root / "source")
    cfg = load_config(source["config"])
    reference = {
        seed: predict_video(
            source["video"], source["results"], cfg, seed=seed, out_prefix=root / f"ref{seed}"
        )
        for seed in (3, 4)
    }
    exported = export_run(source["results"], None, root / "a" / "pkg", cfg)
    target = Path(shutil.move(exported, root / "b" / "moved"))
    shutil.rmtree(source["root"])
    assert not (root / "source").exists() and not (root / "a" / "pkg").exists()
    return {"run": target, "video": tiny_run["video"], "reference": reference, "root": root}


def test_an_exported_run_predicts_like_the_results_tree(moved, tmp_path, monkeypatch):
    from vlalert import Alerter

    monkeypatch.chdir(tmp_path)  # another working directory than the export's
    alerter = Alerter.from_run(moved["run"], seeds=[4])
    assert alerter.seeds == (4,) and alerter.run == "t" and alerter.device == "cpu"
    table = alerter.predict(moved["video"])
    ref = moved["reference"][4].table
    assert table.column_names == ["video", *PREDICTIONS.names]
    assert table.column("video").to_pylist() == [str(moved["video"])] * 3
    assert table.column("t_s").to_pylist() == ref.column("t_s").to_pylist() == [2.0, 3.0, 4.0]
    for col in PROBS:
        np.testing.assert_allclose(table.column(col).to_numpy(), ref.column(col).to_numpy(), atol=1e-6)
    for col in ("action", "generated_text", "vlm_action", "frame_idx"):
        assert table.column(col).to_pylist() == ref.column(col).to_pylist(), col


def test_every_seed_is_averaged_and_the_mean_decoded(moved):
    from vlalert import Alerter

    alerter = Alerter.from_run(moved["run"])
    assert alerter.seeds == (3, 4)
    table = alerter.predict(str(moved["video"]))
    refs = [moved["reference"][s].table for s in (3, 4)]
    for col in PROBS:
        mean = np.mean([r.column(col).to_numpy() for r in refs], axis=0)
        np.testing.assert_allclose(table.column(col).to_numpy(), mean, atol=1e-6)
    probs = np.stack([table.column(c).to_numpy() for c in ("p_silent", "p_observe", "p_alert")], axis=1)
    assert table.column("action").to_pylist() == [
        ACTIONS[a] for a in fsm.decode(probs, alerter.config.heads.fsm)
    ]
    # the two seeds' heads differ, so the mean is not one of them
    assert not np.allclose(refs[0].column("p_alert").to_numpy(), refs[1].column("p_alert").to_numpy())


def test_several_videos_a_glob_and_one_model_load(moved, tmp_path):
    from vlalert import Alerter

    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(moved["video"], clips / "a.mp4")
    write_mp4(clips / "b.mp4", seconds=4.0)
    alerter = Alerter.from_run(moved["run"], seeds=[3])
    table = alerter.predict(str(clips / "*.mp4"))
    assert table.column("video").to_pylist() == [str(clips / "a.mp4")] * 3 + [str(clips / "b.mp4")] * 2
    extractor = alerter.predictor.extractor()
    listed = alerter.predict([clips / "b.mp4", clips / "a.mp4"])
    assert alerter.predictor.extractor() is extractor  # loaded once, kept for the next clips
    assert listed.column("video").to_pylist()[0] == str(clips / "b.mp4") and listed.num_rows == 5
    a_rows = listed.filter(pa.compute.equal(listed.column("video"), str(clips / "a.mp4")))
    np.testing.assert_allclose(
        a_rows.column("p_alert").to_numpy(),
        moved["reference"][3].table.column("p_alert").to_numpy(),
        atol=1e-6,
    )


def test_from_results_is_the_same_path(tiny_run):
    from vlalert import Alerter

    alerter = Alerter.from_results(tiny_run["results"], tiny_run["config"], seeds=[3])
    assert alerter.seeds == (3,) and alerter.package is None
    with pytest.raises(PredictError, match="heads/t/danger/seed4: directory missing"):
        Alerter.from_results(tiny_run["results"], tiny_run["config"])  # seed 4 is configured, never trained


def test_bad_inputs_are_one_line_errors(moved, tiny_run, tmp_path):
    from vlalert import Alerter

    with pytest.raises(RunPackageError, match=r"run\.json: file missing: not an exported run"):
        Alerter.from_run(tiny_run["results"])
    with pytest.raises(RunPackageError, match=r"no heads of seed 9 \(exported seeds: 3, 4\)"):
        Alerter.from_run(moved["run"], seeds=[9])
    alerter = Alerter.from_run(moved["run"], seeds=[3])
    short = write_mp4(tmp_path / "short.mp4", seconds=1.0)
    with pytest.raises(PredictError, match=r"short\.mp4: video too short"):
        alerter.predict([moved["video"], short])  # every clip is checked before the first runs
    assert alerter.predictor._extractor is None
    with pytest.raises(PredictError, match=r"nothing-\*\.mp4: no file matches this pattern"):
        alerter.predict(str(tmp_path / "nothing-*.mp4"))


def test_library_output_is_quiet_unless_verbose():
    import logging

    before = logging.getLogger("transformers").level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with library_output(verbose=False):
            warnings.warn("hidden", FutureWarning, stacklevel=1)
            assert logging.getLogger("transformers").level == logging.ERROR
        with library_output(verbose=True):
            warnings.warn("shown", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["shown"]
    assert logging.getLogger("transformers").level == before  # restored


def test_import_vlalert_stays_light():
    """`import vlalert` and the CLI's parser load neither the Alerter nor torch; the Alerter loads on use."""
    code = (
        "import sys, vlalert, vlalert.cli\n"
        "vlalert.cli.build_parser()\n"
        "names = ('torch', 'transformers', 'vlalert.alerter', 'vlalert.predict')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from vlalert import Alerter\n"
        "assert Alerter.__module__ == 'vlalert.alerter' and 'Alerter' in dir(vlalert)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
