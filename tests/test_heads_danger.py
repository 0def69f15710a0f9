"""DangerHead: reference parameter count, per-tick independence, PMA padding, the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from vlalert.heads.config import DangerHeadConfig
from vlalert.heads.danger import DangerHead, danger_loss

SMALL = DangerHeadConfig(mlp_hidden=32, embed=16, pma_queries=3, pma_heads=4, pma_ffn=24, dropout=0.0)


def test_reference_parameter_count():
    head = DangerHead(DangerHeadConfig(), z_dim=4 * 2560)
    n = sum(p.numel() for p in head.parameters())
    # LN(10240) 20,480 + Linear(10240,1024) 10,486,784 + Linear(1024,768) 787,200 + tick out 769
    # + PMA [queries 3,072 + MHA(768) 2,362,368 + 2 LN 3,072 + FFN 768->768->768 1,181,184] + clip out 3,073
    assert n == 14_848_002
    assert abs(n / 14.8e6 - 1) < 0.10


def _head(seed: int = 0) -> DangerHead:
    torch.manual_seed(seed)
    return DangerHead(SMALL, z_dim=12).eval()


def test_shapes_and_per_tick_outputs_depend_only_on_their_tick():
    head = _head()
    z = torch.randn(2, 5, 12)
    mask = torch.ones(2, 5, dtype=torch.bool)
    tick, clip = head(z, mask)
    assert tick.shape == (2, 5) and clip.shape == (2,)
    z2 = z.clone()
    # a new vector, not a shift: the encoder starts with LayerNorm, so `z[0, 3] + 5` is the same input
    # and changed the outputs only by rounding noise (which is why exact `!=` passed here and not elsewhere)
    z2[0, 3] = 3.0 * torch.randn(12, generator=torch.Generator().manual_seed(1))
    tick2, clip2 = head(z2, mask)
    # tolerances, not exact floats: other CPUs (SIMD widths, thread splits) round differently; a leak
    # between ticks or clips moves an output by far more than 1e-5, the changed tick by more than 1e-3
    diff = (tick2 - tick).abs().detach()
    assert (diff > 1e-3).nonzero().tolist() == [[0, 3]]
    diff[0, 3] = 0.0
    assert diff.max().item() <= 1e-5
    assert abs(clip2[0].item() - clip[0].item()) > 1e-3
    assert clip2[1].item() == pytest.approx(clip[1].item(), abs=1e-5)


def test_pma_ignores_padded_ticks():
    head = _head(1)
    clip_a = torch.randn(1, 3, 12)
    clip_b = torch.randn(1, 6, 12)
    alone, clip_alone = head(clip_a, torch.ones(1, 3, dtype=torch.bool))
    padded = torch.cat([clip_a, 100 * torch.randn(1, 3, 12)], dim=1)
    z = torch.cat([padded, clip_b], dim=0)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=torch.bool)
    tick, clip = head(z, mask)
    torch.testing.assert_close(clip[0], clip_alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tick[0, :3], alone[0], rtol=1e-5, atol=1e-6)


def test_mse_loss_hand_computed():
    cfg = SMALL.model_copy(update={"loss": "mse", "clip_loss_weight": 0.0})
    tick_logits = torch.tensor([[0.0, 0.0, 9.0]])  # sigmoid: 0.5, 0.5, (padded)
    danger = torch.tensor([[0.5, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    loss = danger_loss(tick_logits, torch.zeros(1), danger, torch.tensor([True]), mask, cfg)
    # ((0.5-0.5)^2 + (0.5-1)^2) / 2 = 0.125; the padded tick does not count
    assert loss.item() == pytest.approx(0.125)
    weights = torch.tensor([[1.0, 3.0, 1.0]])
    loss_w = danger_loss(tick_logits, torch.zeros(1), danger, torch.tensor([True]), mask, cfg, weights)
    assert loss_w.item() == pytest.approx((0 + 3 * 0.25) / 4)


def test_bce_loss_adds_weighted_clip_term():
    cfg = SMALL.model_copy(update={"loss": "bce", "clip_loss_weight": 0.5})
    tick_logits = torch.tensor([[0.3, -1.2], [2.0, 0.0]])
    danger = torch.tensor([[0.25, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    clip_logits = torch.tensor([0.0, 1.0])
    pos = torch.tensor([True, False])
    loss = danger_loss(tick_logits, clip_logits, danger, pos, mask, cfg)
    ticks = [(0.3, 0.25), (-1.2, 0.0), (2.0, 1.0)]
    bce = [
        -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
        for x, y in ticks
    ]
    clip = (math.log(2) + math.log(1 + math.e)) / 2
    assert loss.item() == pytest.approx(sum(bce) / 3 + 0.5 * clip, rel=1e-6)
    pos_w = torch.tensor(4.0)
    loss_pw = danger_loss(tick_logits, clip_logits, danger, pos, mask, cfg, clip_pos_weight=pos_w)
    expected_clip = F.binary_cross_entropy_with_logits(clip_logits, pos.float(), pos_weight=pos_w).item()
    assert loss_pw.item() == pytest.approx(sum(bce) / 3 + 0.5 * expected_clip, rel=1e-6)
    assert expected_clip == pytest.approx((4 * math.log(2) + math.log(1 + math.e)) / 2)


def test_embed_must_split_into_heads():
    with pytest.raises(ValidationError, match="divisible"):
        DangerHeadConfig(embed=100, pma_heads=8)
