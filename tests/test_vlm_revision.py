"""model.revision: the hub commit of `model.name_or_path`, validated like a download's revision, handed
to every `from_pretrained` of the model, its config and its tokenizer, and part of the params of the
stages that load the model (so changing it reruns sft and cache, not the tiny model's build)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError

from vlalert.config import validate_config
from vlalert.stage_config import slice_of
from vlalert.vlm import loading
from vlalert.vlm.config import VLMConfig

REPO = Path(__file__).resolve().parents[1]
HUB = "SomeOrg/Some-VL"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Loaded(Exception):
    """Raised by a fake from_pretrained once it has recorded its call: nothing real is loaded."""


def recorder(calls: list[tuple[str, dict]]):
    def fake(name_or_path, *args, **kwargs):
        calls.append((str(name_or_path), kwargs))
        raise Loaded

    return fake


# ------------------------------------------------------------------------------------- validation


def test_revision_must_be_a_commit_unless_unpinned_is_allowed():
    assert VLMConfig().revision is None  # the tiny demo model has no hub revision
    assert VLMConfig(name_or_path=HUB, revision=COMMIT).revision == COMMIT
    with pytest.raises(ValidationError, match=r"model.revision 'main' is not a commit.*allow_unpinned"):
        VLMConfig(name_or_path=HUB, revision="main")
    with pytest.raises(ValidationError, match="is not a commit"):
        VLMConfig(name_or_path=HUB, revision=COMMIT[:12])  # a short sha is not a pin either
    assert VLMConfig(name_or_path=HUB, revision="v1.0", allow_unpinned=True).revision == "v1.0"


def test_full_config_pins_the_model():
    raw = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    model = validate_config(raw).model
    assert model.name_or_path == "Qwen/Qwen3-VL-4B-Instruct"
    assert model.revision is not None and len(model.revision) == 40 and not model.allow_unpinned


def test_revision_reruns_the_stages_that_load_the_model_only():
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    pinned = {**raw, "model": {**raw.get("model", {}), "revision": COMMIT}}
    before, after = validate_config(raw), validate_config(pinned)
    for stage in ("sft", "cache"):
        assert slice_of(before, stage).tracked() != slice_of(after, stage).tracked(), stage
        assert slice_of(after, stage).tracked()["model"]["revision"] == COMMIT
    # the tiny model is built locally: no hub revision enters its params
    assert slice_of(before, "tiny_model").tracked() == slice_of(after, "tiny_model").tracked()


# ---------------------------------------------------------------------------------------- loading


def test_source_kwargs_hub_and_local(tmp_path):
    assert loading.source_kwargs(HUB, COMMIT) == {"local_files_only": False, "revision": COMMIT}
    assert loading.source_kwargs(HUB) == {"local_files_only": False}
    # a local directory is read as it is: a revision means nothing there and the hub is never asked
    assert loading.source_kwargs(tmp_path, COMMIT) == {"local_files_only": True}


def test_revision_reaches_the_model_and_tokenizer_from_pretrained(monkeypatch):
    import transformers

    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", recorder(calls))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder(calls))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", recorder(calls))
    with pytest.raises(Loaded):
        loading.load_model(HUB, device="cpu", revision=COMMIT)
    with pytest.raises(Loaded):
        loading.load_tokenizer(HUB, COMMIT)
    from vlalert.cache.stage import read_model_spec

    with pytest.raises(Loaded):
        read_model_spec(HUB, COMMIT)
    seen = [(name, kw["revision"], kw["local_files_only"]) for name, kw in calls]
    assert seen == [(HUB, COMMIT, False)] * 3


def test_the_cache_and_sft_loaders_pass_the_configured_revision(monkeypatch):
    """The stage code reads model.revision from its slice: what SFT's and the cache's jobs load."""
    from vlalert.cache import stage as cache_stage
    from vlalert.vlm import lora

    seen: dict[str, str | None] = {}

    def fake_load_model(name_or_path, **kwargs):
        seen[str(name_or_path)] = kwargs.get("revision")
        raise Loaded

    monkeypatch.setattr(loading, "load_model", fake_load_model)
    monkeypatch.setattr(lora, "load_model", fake_load_model)
    cfg = SimpleNamespace(model=VLMConfig(name_or_path=HUB, revision=COMMIT), cache=SimpleNamespace())
    cfg.cache.patch_embed = "none"
    with pytest.raises(Loaded):
        cache_stage.load_extractor(HUB, None, cfg, "cpu")
    assert seen == {HUB: COMMIT}
    seen.clear()
    with pytest.raises(Loaded):
        lora.load_base_model("Other/VL", dtype="float32", device="cpu", qlora=False, revision=COMMIT)
    assert seen == {"Other/VL": COMMIT}


def test_an_unpinned_hub_load_logs_the_commit_it_resolved(caplog, tmp_path):
    config = SimpleNamespace(_commit_hash=COMMIT)
    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        loading.log_resolved_commit(HUB, None, config)
        loading.log_resolved_commit(HUB, "main", config)
        loading.log_resolved_commit(HUB, COMMIT, config)  # pinned: nothing to say
        loading.log_resolved_commit(tmp_path, None, config)  # a local directory: no hub commit
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all(f"at commit {COMMIT}; set model.revision: {COMMIT}" in line for line in lines)
    assert "(revision default branch)" in lines[0] and "(revision main)" in lines[1]
