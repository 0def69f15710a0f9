"""The config model: every mistake is caught before any job runs, and the message names the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from vlalert.config import ConfigError, load_config, validate_config
from vlalert.workflow import stage_params


@pytest.fixture()
def raw(repo):
    with open(repo / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_demo_config_is_valid(repo):
    cfg = load_config(repo / "config" / "config.yaml")
    assert cfg.enabled_sources() == ["nexar", "dada2000", "dota", "dad"]
    assert cfg.window.frames == 8 and cfg.window.span_s == 2.0
    assert cfg.labels.alert_s == 2.0 and cfg.labels.observe_s == 4.0


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c["labels"].__setitem__("alert_sec", 2.0), "labels.alert_sec"),
        (lambda c: c.__setitem__("windows", {}), "windows"),
        (lambda c: c["window"].__setitem__("span_s", -2.0), "window.span_s"),
        (lambda c: c["window"].__setitem__("frames", "eight"), "window.frames"),
        (lambda c: c["labels"].__setitem__("alert_s", 0.0), "labels.alert_s"),
        (lambda c: c["ticks"].__setitem__("hz", 0), "ticks.hz"),
        (lambda c: c["splits"]["fractions"].__setitem__("train", 0.8), "splits.fractions"),
        (lambda c: c["gate"].__setitem__("alert_min", 1.5), "gate.alert_min"),
        (lambda c: c["gate"].__setitem__("provider", "oracle"), "gate.provider"),
        (lambda c: c["sources"]["dota"].__setitem__("kind", "dotaa"), "sources.dota.kind"),
        (lambda c: c["sources"]["dota"].__setitem__("split_map", {"train": "dev"}), "sources.dota.split_map"),
        (lambda c: c["sources"]["nexar"].__setitem__("root", "elsewhere"), "sources.nexar.root"),
        (lambda c: c["sources"]["dad"].pop("scene_truth"), "sources.dad.scene_truth"),
        (lambda c: c["labels"].__setitem__("gated_sources", ["dotta"]), "labels.gated_sources"),
        (lambda c: c["gate"].update(alert_min=0.2, observe_min=0.4), "gate.observe_min"),
    ],
)
def test_bad_values_name_the_key(raw, edit, key):
    bad = copy.deepcopy(raw)
    edit(bad)
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert key in str(err.value)


def test_an_unknown_key_suggests_the_nearest_valid_one(raw):
    bad = copy.deepcopy(raw)
    bad["window"]["nframes"] = 8  # top-level section
    bad["sources"]["nexar"]["scene_truht"] = "x"  # inside a dict of models
    bad["heads"] = {"fsm": {"alert_entr": 0.5}}  # two models deep
    bad["zzz"] = 1  # nothing near: no guess
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    msg = str(err.value)
    assert "window.nframes: unknown key (did you mean 'frames'?)" in msg
    assert "sources.nexar.scene_truht: unknown key (did you mean 'scene_truth'?)" in msg
    assert "heads.fsm.alert_entr: unknown key (did you mean 'alert_enter'?)" in msg
    assert "  zzz: unknown key\n" in msg + "\n"


def test_load_config_names_the_file(tmp_path, raw):
    raw["labels"]["observe_s"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*labels\.observe_s"):
        load_config(path)


def test_stage_params_isolate_stages(raw):
    """The params of ingest and gate do not move when a labels key changes; relabel's do."""
    before = validate_config(raw)
    changed = copy.deepcopy(raw)
    changed["labels"]["alert_s"] = 3.0
    after = validate_config(changed)
    for stage in ("ingest", "gate", "demo"):
        assert stage_params(before, stage, "dota") == stage_params(after, stage, "dota")
    assert stage_params(before, "relabel", "dota") != stage_params(after, "relabel", "dota")
