"""Each stage's config slice (vlalert.stage_config): what its rule passes, what reruns it, and the check
a script makes of the slice it was given."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

from vlalert.config import ConfigError, validate_config
from vlalert.stage_config import SLICES, BeliefsSlice, GateSlice, RelabelSlice, slice_of
from vlalert.workflow import Untracked, job_slice, stage_params, stage_untracked

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("config.yaml", "full.yaml")


def raw_config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def jobs(cfg) -> dict[str, dict]:
    """Every job's `stage` param: {"relabel/dota": {...}, "benchmark": {...}, ...}."""
    keys = {"source": cfg.enabled_sources(), "download": list(cfg.download), None: [None]}
    return {
        stage + (f"/{key}" if key else ""): stage_params(cfg, stage, key)
        for stage, model in SLICES.items()
        for key in keys[model.KEY]
    }


def fake_job(cfg, of: str, key: str | None = None, rule: str = "relabel", **override):
    """What a script sees of its job: the rule's name and its params (those of stage `of`, or `override`)."""
    params = {"stage": stage_params(cfg, of, key), "untracked": stage_untracked(cfg, of, key)}
    return SimpleNamespace(rule=rule, params=SimpleNamespace(**(params | override)))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_slice_comes_back_from_its_two_params(name):
    cfg = validate_config(raw_config(name))
    for stage, model in SLICES.items():
        keys = {"source": cfg.enabled_sources(), "download": list(cfg.download), None: [None]}[model.KEY]
        for key in keys:
            job = slice_of(cfg, stage, key)
            tracked, untracked = job.tracked(), job.untracked()
            assert model.from_params(tracked, untracked) == job, (stage, key)
            # `stage` is plain data (Snakemake records it); the pickled `untracked` arrives whole
            assert tracked == yaml.safe_load(yaml.safe_dump(tracked)), (stage, key)
            assert pickle.loads(pickle.dumps(Untracked(untracked))).values == untracked


def test_a_slice_is_for_its_stages_key():
    cfg = validate_config(raw_config("config.yaml"))
    with pytest.raises(ValueError, match="stage relabel takes source, got 'nowhere'"):
        slice_of(cfg, "relabel", "nowhere")
    with pytest.raises(ValueError, match="stage heads takes no key"):
        slice_of(cfg, "heads", "dota")
    with pytest.raises(ValueError, match="unknown stage 'relabels'"):
        slice_of(cfg, "relabels", "dota")


# One config key changed -> the jobs whose `stage` param changes (`stage/*`: every enabled source).
# Speed keys, and keys that reach a stage through its files, rerun nothing by params.
RERUNS = [
    ("config.yaml", "run", "other", set()),
    ("config.yaml", "strict", True, {"ingest/*", "benchmark"}),
    ("config.yaml", "demo.seed", 8, {"demo/*"}),
    ("config.yaml", "labels.alert_s", 3.0, {"relabel/*", "beliefs/*"}),
    ("config.yaml", "gate.alert_min", 0.6, {"relabel/*"}),
    ("config.yaml", "gate.consensus_ramp_s", 5.0, set()),  # no demo source's chain has consensus
    ("config.yaml", "ticks.hz", 2.0, {"gate/*", "relabel/*", "summary"}),
    ("config.yaml", "window.frames", 4, {"gate/*", "relabel/*", "beliefs/*", "tiny_model"}),
    ("config.yaml", "splits.salt", "x", {"benchmark"}),
    ("config.yaml", "sources.dota.split_map", {"train": "trainval"}, {"benchmark"}),
    ("config.yaml", "sources.dota.prefix_negatives", False, {"relabel/dota"}),
    ("config.yaml", "sources.nexar.scene_truth", "results/t.json", {"gate/nexar", "beliefs/nexar"}),
    ("config.yaml", "sources.dota.consensus", "results/c.csv", {"check_source/dota", "ingest/dota"}),
    ("config.yaml", "sources.dota.consensus_clock_fps", 20.0, {"ingest/dota"}),
    ("config.yaml", "sources.dota.gate_provider", ["consensus", "scene"], {"gate/dota"}),
    ("config.yaml", "beliefs.progress", False, {"beliefs/*"}),
    ("config.yaml", "beliefs.phrasing", "varied", {"beliefs/*", "tiny_model"}),
    ("config.yaml", "model.max_new_tokens", 100, {"sft", "cache"}),
    ("config.yaml", "model.system_prompt", "hi", {"tiny_model", "sft", "cache"}),
    ("config.yaml", "model.tiny.pretrain.steps", 50, {"tiny_model", "sft", "cache"}),
    ("config.yaml", "sft.lr", 1e-3, {"sft"}),
    ("config.yaml", "sft.num_workers", 2, set()),
    ("config.yaml", "cache.batch_size", 4, set()),
    ("config.yaml", "cache.device", "cpu", set()),
    ("config.yaml", "cache.shards", 3, {"cache"}),
    ("config.yaml", "heads.seeds", [0, 1], {"heads", "score"}),
    ("full.yaml", "gate.badas.batch_size", 3, set()),
    ("full.yaml", "gate.badas.device", "cpu", set()),
    ("full.yaml", "gate.consensus_ramp_s", 5.0, {"gate/dada2000", "gate/dota", "gate/dad"}),
    ("full.yaml", "download.nexar.max_workers", 3, set()),
    ("full.yaml", "download.nexar.revision", "a" * 40, {"download/nexar"}),
    ("full.yaml", "beliefs.llm.max_concurrency", 2, {"beliefs/*"}),
    ("full.yaml", "sft.nproc", 2, set()),
]


@pytest.mark.parametrize(("name", "key", "value", "reruns"), RERUNS)
def test_a_config_key_reruns_the_stages_whose_slice_holds_it(name, key, value, reruns):
    raw = raw_config(name)
    before = validate_config(raw)
    changed = copy.deepcopy(raw)
    *path, last = key.split(".")
    node = changed
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    after = validate_config(changed)
    old, new = jobs(before), jobs(after)
    expected = set()
    for job in reruns:
        stage, _, source = job.partition("/")
        expected |= {f"{stage}/{s}" for s in before.enabled_sources()} if source == "*" else {job}
    assert {j for j in old if old[j] != new[j]} == expected


def test_snakemake_records_the_stage_param_but_not_the_untracked_one():
    """What `untracked` relies on: Snakemake's params trigger serialises builtin values only."""
    cfg = validate_config(raw_config("config.yaml"))
    serialize = PersistenceBase._serialize_param_builtin
    assert serialize(None, stage_params(cfg, "cache")) is not UNREPRESENTABLE
    assert serialize(None, stage_untracked(cfg, "cache")) is UNREPRESENTABLE


def test_every_rule_passes_its_slice_and_its_script_reads_that_slice_alone():
    scripts = REPO / "workflow" / "scripts"
    seen = set()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^\s*rule (?=\w+:)", smk.read_text())[1:]:
            script = re.search(r'script:\s+"\.\./workflow/scripts/(\w+)\.py"', block)
            if script is None:
                continue
            stage = re.search(r'stage=.*stage_params\(CFG, "(\w+)"', block)
            untracked = re.search(r'untracked=.*stage_untracked\(CFG, "(\w+)"', block)
            assert stage and untracked and stage.group(1) == untracked.group(1), block.splitlines()[0]
            text = (scripts / f"{script.group(1)}.py").read_text()
            assert f"job_slice(snakemake, {SLICES[stage.group(1)].__name__})" in text, script.group(1)
            assert "snakemake.config" not in text and "validate_config" not in text, script.group(1)
            seen.add(script.group(1))
    assert seen == {p.stem for p in scripts.glob("*.py")}


def test_a_script_gets_its_slice_with_what_it_reads_of_other_sections():
    cfg = validate_config(raw_config("config.yaml"))
    job = job_slice(fake_job(cfg, "beliefs", "dota", rule="beliefs"), BeliefsSlice)
    assert job == slice_of(cfg, "beliefs", "dota")
    assert job.source.kind == "dota" and job.source.scene_truth == cfg.sources["dota"].scene_truth
    # the kind reaches beliefs through ingest's table: no rerun trigger of its own
    assert "kind" not in job.tracked()["source"] and job.untracked()["source"]["kind"] == "dota"


def test_params_that_are_not_a_valid_slice_stop_the_job_naming_rule_field_and_problem():
    cfg = validate_config(raw_config("config.yaml"))
    bad = stage_params(cfg, "relabel", "dota")
    bad["labels"] = bad["labels"] | {"alert_s": -1.0}
    with pytest.raises(ConfigError) as err:
        job_slice(fake_job(cfg, "relabel", "dota", stage=bad), RelabelSlice)
    msg = str(err.value)
    assert msg.startswith("rule relabel: params of the relabel slice (RelabelSlice) are not valid")
    assert "labels.alert_s: Input should be greater than 0 (given -1.0)" in msg

    # another stage's slice: every field it lacks and every one it should not have is named
    with pytest.raises(ConfigError) as err:
        job_slice(fake_job(cfg, "gate", "dota", rule="relabel"), RelabelSlice)
    msg = str(err.value)
    assert "  labels: Field required" in msg and "  provider: Extra inputs are not permitted" in msg

    # a field missing from both params
    short = {k: v for k, v in stage_params(cfg, "relabel", "dota").items() if k != "ticks"}
    with pytest.raises(ConfigError, match="  ticks: Field required"):
        job_slice(fake_job(cfg, "relabel", "dota", stage=short), RelabelSlice)


def test_untracked_fields_must_not_be_rerun_triggers_nor_tracked_ones_hidden():
    cfg = validate_config(raw_config("config.yaml"))
    whole = slice_of(cfg, "gate", "dota").model_dump(mode="json")
    # the whole slice as the tracked param: the speed and upstream fields would rerun the gate
    with pytest.raises(ConfigError, match=r"\['source.kind'\] passed in the wrong param"):
        job_slice(fake_job(cfg, "gate", "dota", rule="gate", stage=whole), GateSlice)
    # a plain mapping as `untracked`: Snakemake would record it
    plain = stage_untracked(cfg, "gate", "dota").values
    with pytest.raises(ConfigError, match="`untracked` must be vlalert.workflow.Untracked"):
        job_slice(fake_job(cfg, "gate", "dota", rule="gate", untracked=plain), GateSlice)
    # a tracked field moved into `untracked`: a change of it would rerun nothing
    moved = stage_params(cfg, "gate", "dota")
    ticks = moved.pop("ticks")
    hidden = Untracked(stage_untracked(cfg, "gate", "dota").values | {"ticks": ticks})
    with pytest.raises(ConfigError, match=r"\['ticks'\] passed in the wrong param"):
        job_slice(fake_job(cfg, "gate", "dota", rule="gate", stage=moved, untracked=hidden), GateSlice)
    assert job_slice(fake_job(cfg, "gate", "dota", rule="gate"), GateSlice) == slice_of(cfg, "gate", "dota")
