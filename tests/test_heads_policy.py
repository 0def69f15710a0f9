"""PolicyHead: reference parameter count, causality, a_{t-1} feedback, scheduled sampling, rollout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlalert.heads import fsm
from vlalert.heads.config import FSMConfig, PolicyHeadConfig
from vlalert.heads.policy import PolicyHead, policy_loss, scheduled_forward, teacher_prev_actions

SMALL = PolicyHeadConfig(proj=16, action_embed=4, gru_hidden=12, dropout=0.0)
# A permissive decoder so that a random head's probabilities actually move it between states.
FSM = FSMConfig(observe_enter=0.4, observe_exit=0.3, alert_enter=0.35, alert_exit=0.3, alert_direct=0.4,
                k_enter=1, min_dwell=1, cooldown=1)  # fmt: skip


def test_reference_parameter_count():
    head = PolicyHead(PolicyHeadConfig(), r_dim=2560)
    n = sum(p.numel() for p in head.parameters())
    # LN(2560) 5,120 + Linear(2560,640) 1,639,040 + Embedding(4,64) 256
    # + GRU(704 -> 1024) 3*(704*1024 + 1024*1024 + 2*1024) = 5,314,560 + Linear(1024,3) 3,075
    assert n == 6_962_051
    assert abs(n / 7.0e6 - 1) < 0.10


def _head(seed: int = 0) -> PolicyHead:
    torch.manual_seed(seed)
    return PolicyHead(SMALL, r_dim=10).eval()


def test_teacher_prev_actions_shift_in_start():
    actions = torch.tensor([[0, 1, 2, 2], [1, 1, 0, 0]])
    assert teacher_prev_actions(actions).tolist() == [[3, 0, 1, 2], [3, 1, 1, 0]]


def test_teacher_prev_actions_of_a_sequence_started_mid_clip():
    actions = torch.tensor([[0, 1], [2, 2]])
    prev0 = torch.tensor([fsm.START, 1])
    assert teacher_prev_actions(actions, prev0).tolist() == [[3, 0], [1, 2]]


def test_the_tick_skip_path_reads_r_t_beside_the_gru():
    torch.manual_seed(0)
    head = PolicyHead(SMALL.model_copy(update={"tick_skip": True}), r_dim=10).eval()
    assert head.out.in_features == SMALL.gru_hidden + SMALL.proj
    r = torch.randn(1, 5, 10)
    prev = torch.zeros(1, 5, dtype=torch.long)
    base, _ = head(r, prev)
    with torch.no_grad():  # silence the GRU's contribution: r_t still reaches the logits of its tick
        head.out.weight[:, : SMALL.gru_hidden] = 0.0
    r2 = r.clone()
    r2[:, 3] += 2.0
    a, _ = head(r, prev)
    b, _ = head(r2, prev)
    assert torch.equal(a[:, [0, 1, 2, 4]], b[:, [0, 1, 2, 4]]) and not torch.equal(a[:, 3], b[:, 3])
    assert base.shape == (1, 5, 3)


def test_shapes_causality_and_previous_action_matters():
    head = _head()
    r = torch.randn(2, 7, 10)
    prev = torch.randint(0, 4, (2, 7))
    logits, h = head(r, prev)
    assert logits.shape == (2, 7, 3) and h.shape == (1, 2, 12)
    r2 = r.clone()
    r2[:, 4] += 3.0
    logits2, _ = head(r2, prev)
    assert torch.equal(logits2[:, :4], logits[:, :4])
    assert not torch.equal(logits2[:, 4:], logits[:, 4:])
    prev2 = prev.clone()
    prev2[:, 2] = (prev2[:, 2] + 1) % 4
    logits3, _ = head(r, prev2)
    assert torch.equal(logits3[:, :2], logits[:, :2]) and not torch.equal(logits3[:, 2], logits[:, 2])


def test_policy_loss_weighted_and_masked():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]]))
    actions = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[True, True, False]])
    assert policy_loss(logits, actions, mask).item() == pytest.approx(
        (math.log(2) - math.log(0.8)) / 2, rel=1e-6
    )
    w = torch.tensor([1.0, 1.0, 3.0])
    expected = (math.log(2) - 3 * math.log(0.8)) / 4
    assert policy_loss(logits, actions, mask, w).item() == pytest.approx(expected, rel=1e-6)


def test_rollout_feeds_the_decoded_action_back():
    head = _head(2)
    r = torch.randn(12, 10) * 3
    probs, actions = fsm.rollout(head, r, FSM)
    assert probs.shape == (12, 3) and actions.shape == (12,)
    assert actions.tolist() == fsm.decode(probs, FSM).tolist()
    assert len(set(actions.tolist())) > 1  # the random head does move the decoder
    # Re-running the head with a_{t-1} = [START, decoded...] reproduces the rollout's probabilities.
    prev = torch.tensor([fsm.START] + actions[:-1].tolist()).unsqueeze(0)
    ref = torch.softmax(head(r.unsqueeze(0), prev)[0][0], dim=-1).detach().numpy()
    np.testing.assert_allclose(probs, ref, rtol=1e-5, atol=1e-6)


def test_batched_rollout_matches_single_clips_despite_padding():
    head = _head(3)
    r = torch.randn(3, 9, 10) * 3
    probs, actions = fsm.rollout(head, r, FSM)
    for b, length in enumerate([9, 5, 2]):
        p1, a1 = fsm.rollout(head, r[b, :length], FSM)
        np.testing.assert_allclose(probs[b, :length], p1, rtol=1e-5, atol=1e-6)
        assert actions[b, :length].tolist() == a1.tolist()


def test_scheduled_sampling_endpoints():
    head = _head(4)
    r = torch.randn(2, 8, 10) * 3
    actions = torch.randint(0, 3, (2, 8))
    gen = torch.Generator().manual_seed(0)
    tf = scheduled_forward(head, r, actions, 0.0, FSM, gen)
    assert torch.equal(tf, head(r, teacher_prev_actions(actions))[0])
    free = scheduled_forward(head, r, actions, 1.0, FSM, gen)
    ref_probs, _ = fsm.rollout(head, r, FSM)
    np.testing.assert_allclose(torch.softmax(free, -1).detach().numpy(), ref_probs, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(free, tf)


def test_scheduled_sampling_is_seeded_and_mixes():
    head = _head(5)
    r = torch.randn(4, 10, 10) * 3
    actions = torch.randint(0, 3, (4, 10))
    a = scheduled_forward(head, r, actions, 0.5, FSM, torch.Generator().manual_seed(7))
    b = scheduled_forward(head, r, actions, 0.5, FSM, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    tf = scheduled_forward(head, r, actions, 0.0, FSM, torch.Generator())
    free = scheduled_forward(head, r, actions, 1.0, FSM, torch.Generator())
    # tick 0 always sees START: identical in every mode
    assert torch.allclose(a[:, 0], tf[:, 0]) and torch.allclose(a[:, 0], free[:, 0])
    assert not torch.allclose(a, tf) and not torch.allclose(a, free)
