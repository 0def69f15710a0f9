"""The tiny model's perception pretraining: captions from the renderer's truth, its own seed, falling loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from tiny_helpers import TINY_CORPUS, TINY_SEED

from vlalert.beliefs.rules import analysis_text
from vlalert.beliefs.schema import agreement_errors
from vlalert.beliefs.text import parse_belief_text
from vlalert.config import WindowConfig
from vlalert.vlm.config import PretrainConfig, VLMConfig
from vlalert.vlm.pretrain import caption_texts, perception_caption, render_corpus
from vlalert.vlm.tiny import BUILD_INFO, build_tiny_model

WINDOW = WindowConfig(frames=8, span_s=2.0)


def test_captions_say_what_is_visible_and_how_soon_it_would_hit():
    analysis, belief, action = perception_caption("none", "none", None, "vehicle")
    assert (belief.hazard, belief.where, belief.danger, action) == ("none", "none", 0.0, "SILENT")
    assert "clear" in analysis
    _, belief, action = perception_caption("ahead", "braking", 1.0, "vehicle")
    assert (belief.hazard, belief.where, belief.motion, action) == ("vehicle", "ahead", "braking", "ALERT")
    assert belief.ttc_s == pytest.approx(1.0) and belief.danger == pytest.approx(0.8) and belief.ego_involved
    _, belief, action = perception_caption("right", "crossing", 4.0, "pedestrian")
    assert (belief.hazard, action) == ("pedestrian", "OBSERVE") and belief.danger == pytest.approx(0.2)
    _, belief, action = perception_caption("ahead-left", "oncoming", None, "vehicle")  # in view, no course
    assert (belief.hazard, belief.where, belief.motion, action) == (
        "none",
        "ahead-left",
        "oncoming",
        "SILENT",
    )
    assert not belief.ego_involved and belief.ttc_s is None


def test_captions_are_worded_as_the_rules_provider_words_its_targets():
    analysis, belief, action = perception_caption("ahead", "braking", 1.0, "vehicle")
    assert analysis == analysis_text(belief, action, None)  # plain: each slot's first wording
    keyed, _, _ = perception_caption("ahead", "braking", 1.0, "vehicle", key="pretrain3|1")
    assert keyed == analysis_text(belief, action, "pretrain3|1")
    clear, _, _ = perception_caption("none", "none", None, "vehicle", scenario="negative-oncoming")
    assert clear.startswith("Oncoming traffic")
    cfg = PretrainConfig(scenes=6, windows_per_scene=2, width=96, height=64)
    plain = [w.analysis for w in render_corpus(cfg, WINDOW, "plain")]
    varied = [w.analysis for w in render_corpus(cfg, WINDOW, "varied")]
    assert len(set(plain)) < len(set(varied))


def test_the_corpus_is_a_function_of_its_seed_and_its_captions_are_valid_targets():
    cfg = PretrainConfig(scenes=6, windows_per_scene=2, width=96, height=64)
    a, b = list(render_corpus(cfg, WINDOW)), list(render_corpus(cfg, WINDOW))
    other = list(render_corpus(cfg.model_copy(update={"seed": cfg.seed + 1}), WINDOW))
    assert len(a) == 12
    assert all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.frames, y.frames) for x, y in zip(a, other, strict=True))
    for w in a:
        assert 0.0 <= w.proximity <= 1.0 and (w.proximity == 0.0) == (w.belief.where == "none")
        assert w.frames.shape == (8, 64, 96, 3) and w.frames.dtype == np.uint8
        assert len(w.frame_idx) == 8 and w.frame_idx == sorted(w.frame_idx)
        assert not agreement_errors(w.belief, w.action)
    for text, w in zip(caption_texts(a), a, strict=True):
        span = text[text.index("<|BELIEF|>") : text.index("<|/BELIEF|>") + len("<|/BELIEF|>")]
        assert parse_belief_text(span) == w.belief


def test_pretraining_lowers_the_caption_loss_and_is_recorded(tmp_path):
    pre = {"scenes": 4, "windows_per_scene": 4, "steps": 12, "warmup_steps": 2, "lr": 3e-3, "log_every": 11}
    pre |= {"vision_steps": 4, "vision_batch_size": 4}
    cfg = VLMConfig.model_validate({"tiny": {"pretrain": pre}})
    messages: list[str] = []
    out = build_tiny_model(tmp_path / "m", TINY_CORPUS, cfg, seed=TINY_SEED, on_log=messages.append)
    info = json.loads((out / BUILD_INFO).read_text())["pretrain"]
    assert info["windows"] == 16 and info["steps"] == 12 and info["seed"] == cfg.tiny.pretrain.seed
    first, last = info["log"][0], info["log"][-1]
    assert [first["step"], last["step"]] == [1, 12]
    assert last["train_loss"] < first["train_loss"] - 1.0
    assert any("pretraining (captions) step 12/12" in m for m in messages)
    assert any("pretraining (vision) step 4/4" in m for m in messages)
    assert info["vision_steps"] == 4 and [r["step"] for r in info["vision_log"]] == [1, 4]
    plain = json.loads(
        (build_tiny_model(tmp_path / "p", TINY_CORPUS, VLMConfig(), TINY_SEED) / BUILD_INFO).read_text()
    )
    assert plain["pretrain"] == {
        "windows": 0,
        "steps": 0,
        "seed": 12345,
        "log": [],
        "vision_steps": 0,
        "vision_log": [],
    }


def test_pretraining_config_is_checked():
    with pytest.raises(ValidationError, match="warmup_steps"):
        PretrainConfig(steps=10, warmup_steps=10)
    assert PretrainConfig().steps == 0  # off unless a config asks for it (the demo config does)
