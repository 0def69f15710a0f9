"""The finite-state decoder that turns per-tick action probabilities into the action the driver sees.

A raw argmax flickers: one noisy tick would flash an ALERT, and a driver who sees false alarms
stops trusting the system. The decoder therefore climbs SILENT -> OBSERVE -> ALERT only on
evidence that persists, holds a raised state for a minimum time, and needs the probabilities to
fall clearly below the entry level before it descends. Its output a_t is also the PolicyHead's
input a_{t-1} at the next tick (`rollout`), so the head learns to act given what it has shown.

States and codes: SILENT = 0, OBSERVE = 1, ALERT = 2 (START = 3 is the PolicyHead's token for
"no previous action" and never an output). Input per tick: probs = (p_silent, p_observe, p_alert).

Rules, evaluated once per tick t, with the state as it was after tick t-1 (cfg = FSMConfig):

1. Run counters (updated first, every tick, whatever the state):
   obs_run   = obs_run + 1   if p_observe + p_alert >= observe_enter, else 0;
   alert_run = alert_run + 1 if p_alert >= alert_enter, else 0.
   So a counter equals the number of consecutive ticks, ending at t, above its enter threshold.
2. ALERT is *blocked* at t when the cooldown counter (before this tick) is > 0.
3. From SILENT:
   a. direct: p_alert >= alert_direct and not blocked -> ALERT (one tick suffices: the
      threshold is high). Below alert_direct, SILENT never goes straight to ALERT.
   b. else obs_run >= k_enter -> OBSERVE (k consecutive ticks above observe_enter).
   c. else SILENT.
4. From OBSERVE:
   a. alert_run >= k_enter and not blocked -> ALERT (escalation is never delayed by the dwell:
      a late warning costs more than a flicker).
   b. else dwell >= min_dwell and p_observe + p_alert < observe_exit -> SILENT (hysteresis:
      observe_exit <= observe_enter).
   c. else OBSERVE.
5. From ALERT:
   a. dwell >= min_dwell and p_alert < alert_exit -> OBSERVE (hysteresis: alert_exit <=
      alert_enter). ALERT always descends through OBSERVE, never straight to SILENT, and
      leaving ALERT sets the cooldown counter to cfg.cooldown.
   b. else ALERT.
6. dwell = number of consecutive ticks, ending at t, with the current output (1 on the tick a
   state is entered). "dwell >= min_dwell" above uses the value before tick t, so a state entered
   at tick s is output at least at s .. s + min_dwell - 1 before it may fall.
7. cooldown: decremented by one each tick (floored at 0) after rule 2 has read it; set to
   cfg.cooldown on the tick ALERT is left. Leaving ALERT at tick s blocks ALERT at
   s+1 .. s+cooldown; it may be entered again at s+cooldown+1 at the earliest.

The initial state is SILENT with all counters 0. Every function works elementwise on a batch:
state fields are integer arrays of one shape (() for a single clip, (B,) for B clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vlalert.actions import Action
from vlalert.heads.config import FSMConfig

if TYPE_CHECKING:
    import torch

START = len(Action)  # the PolicyHead's a_{t-1} before a clip's first tick: an input, never an output


@dataclass(frozen=True)
class FSMState:
    """Decoder state after a tick; every field is an int64 array of the batch shape."""

    action: np.ndarray
    dwell: np.ndarray
    obs_run: np.ndarray
    alert_run: np.ndarray
    cooldown: np.ndarray


def init_state(batch_shape: tuple[int, ...] = ()) -> FSMState:
    """The state before the first tick: SILENT, no runs, no dwell, no cooldown."""
    zeros = np.zeros(batch_shape, dtype=np.int64)
    return FSMState(
        action=np.full(batch_shape, Action.SILENT, dtype=np.int64),
        dwell=zeros.copy(),
        obs_run=zeros.copy(),
        alert_run=zeros.copy(),
        cooldown=zeros.copy(),
    )


def step(state: FSMState, probs: np.ndarray, cfg: FSMConfig) -> tuple[FSMState, np.ndarray]:
    """Advance by one tick. `probs` has shape batch_shape + (3,); returns (new state, actions)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != state.action.shape + (3,):
        raise ValueError(f"probs shape {probs.shape} does not match state batch {state.action.shape} + (3,)")
    p_up = probs[..., 1] + probs[..., 2]
    p_alert = probs[..., 2]

    obs_run = np.where(p_up >= cfg.observe_enter, state.obs_run + 1, 0)
    alert_run = np.where(p_alert >= cfg.alert_enter, state.alert_run + 1, 0)
    can_alert = state.cooldown == 0
    dwell_ok = state.dwell >= cfg.min_dwell
    prev = state.action

    at_s, at_o, at_a = prev == Action.SILENT, prev == Action.OBSERVE, prev == Action.ALERT
    s_to_a = at_s & can_alert & (p_alert >= cfg.alert_direct)
    s_to_o = at_s & ~s_to_a & (obs_run >= cfg.k_enter)
    o_to_a = at_o & can_alert & (alert_run >= cfg.k_enter)
    o_to_s = at_o & ~o_to_a & dwell_ok & (p_up < cfg.observe_exit)
    a_to_o = at_a & dwell_ok & (p_alert < cfg.alert_exit)

    action = prev.copy()
    action = np.where(s_to_a | o_to_a, Action.ALERT, action)
    action = np.where(s_to_o | a_to_o, Action.OBSERVE, action)
    action = np.where(o_to_s, Action.SILENT, action)

    dwell = np.where(action == prev, state.dwell + 1, 1)
    cooldown = np.where(a_to_o, cfg.cooldown, np.maximum(state.cooldown - 1, 0))
    new = FSMState(
        action=action.astype(np.int64),
        dwell=dwell.astype(np.int64),
        obs_run=obs_run.astype(np.int64),
        alert_run=alert_run.astype(np.int64),
        cooldown=cooldown.astype(np.int64),
    )
    return new, new.action


def decode(probs: np.ndarray, cfg: FSMConfig) -> np.ndarray:
    """Decode a whole sequence: probs [T, 3] (or [B, T, 3]) -> actions [T] (or [B, T]) as int64."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim not in (2, 3) or probs.shape[-1] != 3:
        raise ValueError(f"probs must be [T, 3] or [B, T, 3], got {probs.shape}")
    batch_shape = probs.shape[:-2]
    n_ticks = probs.shape[-2]
    state = init_state(batch_shape)
    out = np.empty(batch_shape + (n_ticks,), dtype=np.int64)
    for t in range(n_ticks):
        state, out[..., t] = step(state, probs[..., t, :], cfg)
    return out


def rollout(
    policy_head: torch.nn.Module, r_seq: torch.Tensor, fsm_cfg: FSMConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Run the PolicyHead autoregressively with the decoder's own output as a_{t-1}.

    This is how the policy runs at inference and scoring: a_{-1} = START, then at each tick the
    head's probabilities go through `step` and the decoded action is the next tick's input.
    r_seq is [T, R] (one clip) or [B, T, R] (clips padded at the end; the recurrence is causal,
    so the padded tail never changes the valid ticks). Returns (probs [..., T, 3] float32,
    actions [..., T] int64) as numpy arrays. `policy_head` is a vlalert.heads.policy.PolicyHead
    (it needs `.proj` and `.recur`); torch is imported lazily: the decoder itself is numpy.
    """
    import torch

    single = r_seq.dim() == 2
    r = r_seq.unsqueeze(0) if single else r_seq
    n_clips, n_ticks = r.shape[0], r.shape[1]
    state = init_state((n_clips,))
    prev = torch.full((n_clips, 1), START, dtype=torch.long, device=r.device)
    hidden = None
    probs_out = np.empty((n_clips, n_ticks, 3), dtype=np.float32)
    acts_out = np.empty((n_clips, n_ticks), dtype=np.int64)
    was_training = policy_head.training
    policy_head.eval()
    try:
        with torch.no_grad():
            r_proj = policy_head.proj(r)  # the projection does not depend on a_{t-1}
            for t in range(n_ticks):
                logits, hidden = policy_head.recur(r_proj[:, t : t + 1], prev, hidden)
                p = torch.softmax(logits[:, 0].float(), dim=-1).cpu().numpy()
                state, act = step(state, p, fsm_cfg)
                probs_out[:, t] = p
                acts_out[:, t] = act
                prev = torch.from_numpy(act).to(r.device).view(n_clips, 1)
    finally:
        policy_head.train(was_training)
    if single:
        return probs_out[0], acts_out[0]
    return probs_out, acts_out
