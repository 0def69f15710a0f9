"""train_head: outputs, bit-identical reruns per seed, early stopping, rare-class handling, schedules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from vlalert.cache.store import write_cache
from vlalert.heads.config import DangerHeadConfig, HeadsTrainConfig, PolicyHeadConfig
from vlalert.heads.data import load_clips
from vlalert.heads.fsm import rollout
from vlalert.heads.synthetic import synthetic_split
from vlalert.heads.train import (
    OUTPUT_FILES,
    class_weights,
    clip_sampling_weights,
    epoch_order,
    fit,
    load_head,
    loss_weights,
    lr_at,
    random_starts,
    train_head,
)
from vlalert.schemas import write_table

HIDDEN = 8
CFG = HeadsTrainConfig(
    epochs=4,
    patience=2,
    batch_clips=8,
    lr=3e-3,
    ss_start_epoch=1,
    ss_ramp_epochs=2,
    danger=DangerHeadConfig(mlp_hidden=24, embed=16, pma_queries=2, pma_heads=2, pma_ffn=16),
    policy=PolicyHeadConfig(proj=16, action_embed=4, gru_hidden=16),
)


def _write_split(
    root: Path, split: str, n_clips: int, seed: int, direction_seed: int = 0
) -> tuple[Path, Path]:
    cache, labels = synthetic_split(n_clips, HIDDEN, seed, split=split, direction_seed=direction_seed)
    write_cache(cache, root / "cache" / split, part_rows=200)
    write_table("benchmark", labels, root / f"{split}.parquet")
    return root / "cache" / split, root / f"{split}.parquet"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("heads")
    tc, tl = _write_split(root, "train", 40, seed=1)
    vc, vl = _write_split(root, "val", 16, seed=2)
    oc, ol = _write_split(
        root, "test", 16, seed=3, direction_seed=99
    )  # unrelated signal: val loss won't improve
    return {
        "train_cache": tc,
        "train_labels": tl,
        "val_cache": vc,
        "val_labels": vl,
        "odd_cache": oc,
        "odd_labels": ol,
    }


def _train(data, head, seed, out, cfg=CFG, val=("val_cache", "val_labels")):
    return train_head(
        head, seed, data["train_cache"], data[val[0]], data["train_labels"], data[val[1]], cfg, out
    )


@pytest.mark.parametrize("head", ["danger", "policy"])
def test_same_seed_gives_bit_identical_weights(data, tmp_path, head):
    m1 = _train(data, head, 3, tmp_path / "a")
    m2 = _train(data, head, 3, tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert m1["best_val_loss"] == m2["best_val_loss"]
    _train(data, head, 4, tmp_path / "c")
    w1, w3 = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "c" / "model.safetensors")
    assert w1.keys() == w3.keys()
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)
    # the process-wide switch is restored after the job
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("head", ["danger", "policy"])
def test_outputs_and_learning(data, tmp_path, head):
    metrics = _train(data, head, 1, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUT_FILES)
    log = pq.read_table(tmp_path / "train_log.parquet").to_pydict()
    assert list(log) == ["epoch", "train_loss", "val_loss", "lr", "seconds", "ss_prob"]
    assert log["epoch"] == list(range(metrics["epochs_run"]))
    assert metrics["best_epoch"] == int(np.argmin(log["val_loss"]))
    assert metrics["best_val_loss"] == min(log["val_loss"])
    assert min(log["val_loss"]) < log["val_loss"][0]  # the planted signal is learned
    assert log["lr"][0] == CFG.lr and log["lr"][-1] < CFG.lr
    if head == "policy":
        assert log["ss_prob"] == [0.0, 0.25, 0.5, 0.5][: metrics["epochs_run"]]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["best_epoch"] == metrics["best_epoch"] and on_disk["n_train_clips"] == 40
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["head"] == head and config["seed"] == 1
    assert config["dims"] == ({"z_dim": 4 * HIDDEN} if head == "danger" else {"r_dim": HIDDEN})
    model, cfg = load_head(tmp_path)
    assert sum(p.numel() for p in model.parameters()) == metrics["n_params"] == config["n_params"]
    if head == "policy":
        clips = load_clips(data["val_cache"], data["val_labels"], vectors=("r",))
        probs, actions = rollout(model, torch.from_numpy(clips.r[clips.rows[:10]]).float(), cfg["fsm_config"])
        assert probs.shape == (10, 3) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_early_stopping_keeps_best_epoch(data, tmp_path):
    cfg = CFG.model_copy(update={"epochs": 12, "patience": 2})
    metrics = _train(data, "danger", 1, tmp_path, cfg, val=("odd_cache", "odd_labels"))
    log = pq.read_table(tmp_path / "train_log.parquet").to_pydict()
    assert metrics["stopped_early"]
    assert metrics["epochs_run"] == metrics["best_epoch"] + cfg.patience + 1 < cfg.epochs
    assert all(v >= metrics["best_val_loss"] for v in log["val_loss"][metrics["best_epoch"] + 1 :])


def test_class_weights_hand_computed():
    # N = 10: SILENT 10/(3*8), OBSERVE 10/3 capped at 2, ALERT absent -> the cap
    np.testing.assert_allclose(class_weights(np.array([8, 2, 0]), 2.0), [10 / 24, 1.6666666, 2.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights(np.array([5, 5, 5]), 20.0), [1.0, 1.0, 1.0])


def test_sampler_draws_clips_with_alerts_more_often(data):
    clips = load_clips(data["train_cache"], data["train_labels"], vectors=("r",))
    cw = class_weights(clips.class_counts(), 20.0)
    per_clip = clip_sampling_weights(clips, cw)
    has_alert = np.array(
        [(clips.action[a:b] == 2).any() for a, b in zip(clips.offsets[:-1], clips.offsets[1:], strict=True)]
    )
    assert np.all(per_clip[has_alert] == cw[2]) and np.all(per_clip[~has_alert] == cw[0])
    weights = loss_weights(clips, CFG.model_copy(update={"balance": "sampler"}))
    assert weights.class_weight is None
    gen = torch.Generator().manual_seed(0)
    drawn = np.concatenate([epoch_order(clips, weights, gen) for _ in range(50)])
    assert has_alert[drawn].mean() > has_alert.mean() + 0.2
    plain = loss_weights(clips, CFG.model_copy(update={"balance": "none"}))
    assert sorted(epoch_order(clips, plain, gen).tolist()) == list(range(clips.n_clips))


def test_sampler_training_runs(data, tmp_path):
    cfg = CFG.model_copy(update={"balance": "sampler", "epochs": 2})
    metrics = _train(data, "policy", 2, tmp_path, cfg)
    assert metrics["epochs_run"] == 2 and np.isfinite(metrics["best_val_loss"])


def test_schedules_hand_computed():
    cfg = HeadsTrainConfig(ss_schedule="linear", ss_max=0.5, ss_start_epoch=1, ss_ramp_epochs=4)
    assert [cfg.ss_prob(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.125, 0.25, 0.5, 0.5]
    const = cfg.model_copy(update={"ss_schedule": "constant"})
    assert [const.ss_prob(e) for e in (0, 1, 7)] == [0.0, 0.5, 0.5]
    lr = HeadsTrainConfig(lr=1e-3, epochs=5, lr_min_ratio=0.1)
    assert lr_at(0, lr) == pytest.approx(1e-3)
    assert lr_at(2, lr) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(4, lr) == pytest.approx(1e-4)
    assert lr_at(3, lr.model_copy(update={"lr_schedule": "constant"})) == 1e-3


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="distinct"):
        HeadsTrainConfig(seeds=[1, 1])
    with pytest.raises(ValueError, match="extra"):
        HeadsTrainConfig(epoch=3)
    with pytest.raises(ValueError, match="unknown head"):
        train_head("value", 1, "x", "x", "x", "x", CFG, "x")


def test_random_starts_fall_inside_each_clip_and_follow_the_seed(data):
    clips = load_clips(data["train_cache"], data["train_labels"], vectors=("r",))
    order = np.arange(clips.n_clips)
    assert random_starts(clips, order, 0.0, torch.Generator().manual_seed(1)) is None
    a = random_starts(clips, order, 0.5, torch.Generator().manual_seed(1))
    b = random_starts(clips, order, 0.5, torch.Generator().manual_seed(1))
    length = clips.offsets[1:] - clips.offsets[:-1]
    assert np.array_equal(a, b) and (a >= 0).all() and (a < length).all()
    assert 0 < int((a > 0).sum()) < clips.n_clips  # about half the clips start mid-clip


def test_policy_with_random_starts_and_the_tick_skip_trains_reproducibly(data, tmp_path):
    cfg = CFG.model_copy(
        update={"random_start": 0.5, "policy": CFG.policy.model_copy(update={"tick_skip": True})}
    )
    m1 = _train(data, "policy", 2, tmp_path / "a", cfg)
    m2 = _train(data, "policy", 2, tmp_path / "b", cfg)
    w1, w2 = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert m1["best_val_loss"] == pytest.approx(m2["best_val_loss"])
    model, _ = load_head(tmp_path / "a")
    assert model.out.in_features == cfg.policy.gru_hidden + cfg.policy.proj


def test_keep_last_saves_the_last_epoch_not_the_best(data, tmp_path):
    cfg = CFG.model_copy(update={"epochs": 12, "patience": 12, "keep": "last"})
    metrics = _train(data, "danger", 1, tmp_path / "last", cfg, val=("odd_cache", "odd_labels"))
    best = _train(
        data,
        "danger",
        1,
        tmp_path / "best",
        cfg.model_copy(update={"keep": "best"}),
        val=("odd_cache", "odd_labels"),
    )
    assert metrics["kept_epoch"] == metrics["epochs_run"] - 1 == 11 and not metrics["stopped_early"]
    assert best["kept_epoch"] == best["best_epoch"] < 11  # the odd val split stops improving early
    w_last = load_file(tmp_path / "last" / "model.safetensors")
    w_best = load_file(tmp_path / "best" / "model.safetensors")
    assert any(not torch.equal(w_last[k], w_best[k]) for k in w_last)


@pytest.mark.parametrize("head", ["danger", "policy"])
def test_input_scale_is_the_train_splits_and_is_saved_with_the_head(data, tmp_path, head):
    _train(data, head, 1, tmp_path)
    model, _ = load_head(tmp_path)
    clips = load_clips(data["train_cache"], data["train_labels"], vectors=("z" if head == "danger" else "r",))
    x = np.asarray((clips.z if head == "danger" else clips.r)[clips.rows], dtype=np.float64)
    scale = model.input_scale
    np.testing.assert_allclose(scale.mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale.std.numpy(), x.std(0), rtol=1e-4, atol=1e-5)
    off = HeadsTrainConfig(**{**CFG.model_dump(), "standardize": False})
    _train(data, head, 1, tmp_path / "off", off)
    plain, _ = load_head(tmp_path / "off")
    assert torch.equal(plain.input_scale.mean, torch.zeros_like(plain.input_scale.mean))
    assert torch.equal(plain.input_scale.std, torch.ones_like(plain.input_scale.std))


def test_a_feature_on_a_huge_scale_does_not_change_what_the_head_learns():
    """Standardised inputs: rescaling and shifting every feature (one by 1000x, as an LLM's massive
    activations are) gives the same head, up to float rounding."""
    from vlalert.heads.data import build_clips

    cache, labels = synthetic_split(24, HIDDEN, 5)
    clips = build_clips(cache, labels)
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, 4 * HIDDEN).astype(np.float32)
    a[3] = 1000.0
    b = rng.normal(0, 3, 4 * HIDDEN).astype(np.float32)
    scaled = clips.__class__(**{**clips.__dict__, "z": (np.asarray(clips.z, np.float32) * a + b)})
    plain = clips.__class__(**{**clips.__dict__, "z": np.asarray(clips.z, np.float32)})
    cfg = CFG.model_copy(update={"epochs": 3, "patience": 3})
    m1, *_ = fit("danger", 1, plain, plain, cfg)
    m2, *_ = fit("danger", 1, scaled, scaled, cfg)
    zt = torch.from_numpy(np.asarray(plain.z[plain.rows[:30]], np.float32)).unsqueeze(0)
    zs = torch.from_numpy(np.asarray(scaled.z[scaled.rows[:30]], np.float32)).unsqueeze(0)
    mask = torch.ones(zt.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        np.testing.assert_allclose(m1(zt, mask)[0].numpy(), m2(zs, mask)[0].numpy(), rtol=1e-3, atol=1e-3)
