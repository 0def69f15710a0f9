"""`vlalert.run_package`: export a trained run into one folder, and refuse a folder that was changed.

The run is the session's tiny run (tests/predict_helpers.py) copied with the heads of both seeds;
what prediction on the exported folder gives is tests/test_alerter.py's concern.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from predict_helpers import RUN, raw_config, two_seed_run

from vlalert.atomic import sha256_file
from vlalert.config import load_config
from vlalert.run_package import (
    FORMAT,
    MANIFEST,
    MODEL_REF,
    PackagedRun,
    RunPackageError,
    export_run,
    is_packaged_run,
    load_run,
)


@pytest.fixture(scope="module")
def source(tiny_run, tmp_path_factory):
    """The results tree (seeds 3 and 4) and its config; read-only for the tests."""
    return two_seed_run(tiny_run, tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "pkg"
    return export_run(source["results"], None, out, load_config(source["config"]))


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def copy_of(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "copy"))


# ----------------------------------------------------------------------------- export


def test_export_writes_a_self_contained_folder(source, exported):
    m = manifest_of(exported)
    assert (m["format"], m["format_version"], m["run"]) == (FORMAT, 1, RUN)
    assert m["model"]["source"] == "directory" and m["model"]["path"] == MODEL_REF == "./model"
    assert m["seeds"] == [3, 4]
    assert m["heads"]["4"] == {"danger": "heads/danger/seed4", "policy": "heads/policy/seed4"}
    assert m["adapter"] == "adapter"
    cfg = load_config(source["config"])
    assert m["fsm"] == cfg.heads.fsm.model_dump(mode="json")
    assert m["window"] == cfg.window.model_dump(mode="json") and m["ticks"]["hz"] == 1.0
    assert m["image_size"] == [64, 96] and m["cache"] == {"belief_layers": [1, 2, 3, 4], "policy_layer": 3}
    assert m["config"]["heads"]["seeds"] == [3, 4] and m["config"]["run"] == RUN
    for needed in (
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "adapter/adapter_model.safetensors",
        "heads/danger/seed3/model.safetensors",
        "heads/policy/seed4/config.json",
        "README.md",
    ):
        assert needed in m["files"], needed
    for rel, entry in m["files"].items():
        assert sha256_file(exported / rel) == entry["sha256"], rel
    # every copied file keeps its bytes but the adapter config, which now names the copied model
    for rel, entry in m["files"].items():
        if "source" in entry:
            assert Path(entry["source"]).is_file()
            same = entry["source_sha256"] == entry["sha256"]
            assert same == (rel != "adapter/adapter_config.json"), rel
    conf = json.loads((exported / "adapter" / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == "./model" and conf["revision"] is None
    assert (exported / conf["base_model_name_or_path"] / "config.json").is_file()
    card = (exported / "README.md").read_text()
    assert f"# VLAlert run `{RUN}`" in card and "Alerter.from_run" in card and "Demo run" in card
    assert is_packaged_run(exported) and not is_packaged_run(source["results"])


def test_loaded_run_resolves_every_file_inside_the_folder(exported):
    run = load_run(exported)
    assert isinstance(run, PackagedRun) and run.seeds == (3, 4)
    assert Path(run.model) == exported / "model" and Path(run.adapter) == exported / "adapter"
    paths = run.run_paths(4)
    assert paths.danger == exported / "heads" / "danger" / "seed4" and paths.model == run.model
    with pytest.raises(RunPackageError, match=r"run\.json: no heads of seed 7 \(exported seeds: 3, 4\)"):
        run.run_paths(7)


def test_export_of_a_missing_seed_names_it(tiny_run, tmp_path):
    """The session's run trains seed 3 only; its config also lists seed 4."""
    cfg = load_config(tiny_run["config"])
    with pytest.raises(RunPackageError) as err:
        export_run(tiny_run["results"], RUN, tmp_path / "pkg", cfg)
    msg = str(err.value)
    assert "heads/t/danger/seed4: directory missing" in msg and "--seeds" in msg and "\n" not in msg
    assert not (tmp_path / "pkg").exists()
    out = export_run(tiny_run["results"], RUN, tmp_path / "pkg", cfg, seeds=[3])
    assert manifest_of(out)["seeds"] == [3]


def test_export_refuses_a_used_folder_and_a_missing_tree(source, tmp_path):
    cfg = load_config(source["config"])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine\n")
    with pytest.raises(RunPackageError, match="used: already exists and is not an empty folder"):
        export_run(source["results"], None, tmp_path / "used", cfg)
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine\n"
    with pytest.raises(RunPackageError, match="nope: results directory missing"):
        export_run(tmp_path / "nope", None, tmp_path / "pkg", cfg)
    with pytest.raises(RunPackageError, match="--run 'bad name'"):
        export_run(source["results"], "bad name", tmp_path / "pkg", cfg)


def hub_config(folder: Path) -> Path:
    raw = raw_config()
    raw["model"]["name_or_path"] = "SomeOrg/Some-VL"
    path = folder / "hub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


REV = "0123456789abcdef0123456789abcdef01234567"


def test_a_hub_model_is_exported_by_id_and_revision(source, tmp_path, monkeypatch):
    cfg = load_config(hub_config(tmp_path))
    with pytest.raises(RunPackageError) as err:
        export_run(source["results"], None, tmp_path / "a", cfg, seeds=[3])
    assert "'SomeOrg/Some-VL' is a hub id without a pinned revision" in str(err.value)
    assert "--revision" in str(err.value) and "--allow-unpinned" in str(err.value)

    pinned = export_run(source["results"], None, tmp_path / "pinned", cfg, seeds=[3], revision=REV)
    m = manifest_of(pinned)
    assert m["model"] == {
        "source": "hub",
        "name_or_path": "SomeOrg/Some-VL",
        "revision": REV,
        "pinned": True,
    }
    assert not (pinned / "model").exists()
    conf = json.loads((pinned / "adapter" / "adapter_config.json").read_text())
    assert (conf["base_model_name_or_path"], conf["revision"]) == ("SomeOrg/Some-VL", REV)
    assert "base_model: SomeOrg/Some-VL" in (pinned / "README.md").read_text()

    # loading fetches exactly that revision (here: the hub's answer is the session's tiny model)
    import huggingface_hub

    asked = {}

    def fake_snapshot(repo_id, revision, allow_patterns):
        asked.update(repo_id=repo_id, revision=revision)
        return str(source["results"] / "models" / "tiny-qwen3vl")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    run = load_run(pinned)
    assert asked == {"repo_id": "SomeOrg/Some-VL", "revision": REV}
    assert run.model.endswith("tiny-qwen3vl")

    with pytest.raises(RunPackageError, match="at 'main', which is not a commit"):
        export_run(source["results"], None, tmp_path / "branch", cfg, seeds=[3], revision="main")
    branch = export_run(
        source["results"], None, tmp_path / "branch", cfg, seeds=[3], revision="main", allow_unpinned=True
    )
    assert manifest_of(branch)["model"]["pinned"] is False  # a branch moves: not pinned

    loose = export_run(source["results"], None, tmp_path / "loose", cfg, seeds=[3], allow_unpinned=True)
    assert manifest_of(loose)["model"]["pinned"] is False
    assert "**unpinned**" in (loose / "README.md").read_text()
    assert load_run(loose).model == "SomeOrg/Some-VL"  # the bare id: whatever the hub holds


def test_a_hub_revision_that_cannot_be_fetched_names_it(source, tmp_path, monkeypatch):
    import huggingface_hub

    cfg = load_config(hub_config(tmp_path))
    pinned = export_run(source["results"], None, tmp_path / "pinned", cfg, seeds=[3], revision=REV)

    def offline(**_):
        raise OSError("offline\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        RunPackageError,
        match=rf"cannot get model SomeOrg/Some-VL at revision {REV}: offline; more$",
    ):
        load_run(pinned)


# ----------------------------------------------------------------------------- a changed folder


def test_a_changed_weight_file_is_named(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    weights = folder / "heads" / "policy" / "seed4" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(RunPackageError, match=rf"^{weights}: contents differ from run.json"):
        load_run(folder)
    load_run(folder, verify=False)  # sizes only: the same size passes


def test_a_missing_file_is_named(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "model" / "tokenizer.json").unlink()
    with pytest.raises(RunPackageError, match=rf"^{folder / 'model' / 'tokenizer.json'}: file missing"):
        load_run(folder)


def test_an_extra_file_where_weights_load_is_named(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    extra = folder / "adapter" / "adapter_model.bin"
    extra.write_bytes(b"pickle")
    with pytest.raises(RunPackageError, match=rf"^{extra}: not part of the exported run"):
        load_run(folder)


def test_a_missing_or_foreign_manifest(exported, tmp_path):
    with pytest.raises(RunPackageError, match=rf"^{tmp_path / MANIFEST}: file missing: not an exported run"):
        load_run(tmp_path)
    folder = copy_of(exported, tmp_path)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(RunPackageError, match=rf"^{folder / MANIFEST}: unreadable manifest"):
        load_run(folder)
    m = manifest_of(exported)
    (folder / MANIFEST).write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(RunPackageError, match="format_version 99: this vlalert reads up to 1"):
        load_run(folder)


def test_an_edited_manifest_is_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    m = manifest_of(exported)
    fsm = {**m["fsm"], "k_enter": 9}
    (folder / MANIFEST).write_text(json.dumps({**m, "fsm": fsm}))
    with pytest.raises(RunPackageError, match=r"run\.json: 'fsm' differs from the config it lists"):
        load_run(folder)
    files = {**m["files"], "../outside.txt": {"sha256": "0", "size": 0}}
    (folder / MANIFEST).write_text(json.dumps({**m, "files": files}))
    with pytest.raises(
        RunPackageError, match=r"file '\.\./outside\.txt' is not a path inside the run folder"
    ):
        load_run(folder)
    config = {**m["config"], "window": {"span_s": -1}}
    (folder / MANIFEST).write_text(json.dumps({**m, "config": config}))
    with pytest.raises(RunPackageError, match=r"run\.json: config: invalid config: .*window\.span_s"):
        load_run(folder)


def test_an_adapter_that_names_another_model_is_refused(exported, tmp_path):
    """Even with run.json's hashes brought up to date, the adapter must name the run's model."""
    folder = copy_of(exported, tmp_path)
    conf_path = folder / "adapter" / "adapter_config.json"
    conf = json.loads(conf_path.read_text())
    conf["base_model_name_or_path"] = "/somewhere/else"
    conf_path.write_text(json.dumps(conf))
    m = manifest_of(exported)
    m["files"]["adapter/adapter_config.json"] |= {
        "sha256": sha256_file(conf_path),
        "size": conf_path.stat().st_size,
    }
    (folder / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(RunPackageError, match=rf"^{conf_path}: base_model_name_or_path '/somewhere/else'"):
        load_run(folder)
