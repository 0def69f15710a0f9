"""PolicyHead: which action (SILENT / OBSERVE / ALERT) to show at this tick.

It reads r_t (the hidden state at the VLM's `<|/BELIEF|>` close tag) and the action shown at the
previous tick, a_{t-1}, through a GRU over the clip. Feeding a_{t-1} back makes the head aware of
what the driver already sees, so it can learn to hold or release an alert instead of re-deciding
from scratch every tick. At inference a_{t-1} is the FSM decoder's output (`fsm.rollout`); in
training it is the label (teacher forcing) or, with scheduled sampling, the decoder's output on
the head's own probabilities (`scheduled_forward`), which closes the gap between the two.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlalert.heads import fsm
from vlalert.heads.config import FSMConfig, PolicyHeadConfig
from vlalert.heads.standardize import Standardize


class PolicyHead(nn.Module):
    """(r [B, T, r_dim], prev_actions [B, T] in {0,1,2,3=START}, h0) -> (logits [B, T, 3], h_n)."""

    def __init__(self, cfg: PolicyHeadConfig, r_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.r_dim = r_dim
        self.proj = nn.Sequential(  # per-feature train scale (heads/standardize.py), then LayerNorm
            Standardize(r_dim),
            nn.LayerNorm(r_dim),
            nn.Linear(r_dim, cfg.proj),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
        )
        self.action_embed = nn.Embedding(4, cfg.action_embed)
        self.gru = nn.GRU(
            cfg.proj + cfg.action_embed,
            cfg.gru_hidden,
            num_layers=cfg.gru_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.gru_hidden + (cfg.proj if cfg.tick_skip else 0), 3)

    def forward(
        self, r: torch.Tensor, prev_actions: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recur(self.proj(r), prev_actions, h0)

    def recur(
        self, r_proj: torch.Tensor, prev_actions: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrent part on already projected r: lets tick-by-tick loops project all ticks at once."""
        x = torch.cat([r_proj, self.action_embed(prev_actions)], dim=-1)
        y, h_n = self.gru(x, h0)
        if self.cfg.tick_skip:
            y = torch.cat([y, r_proj], dim=-1)
        return self.out(self.drop(y)), h_n

    @property
    def input_scale(self) -> Standardize:
        return self.proj[0]


def teacher_prev_actions(actions: torch.Tensor, prev0: torch.Tensor | None = None) -> torch.Tensor:
    """Labels [B, T] -> a_{t-1} [B, T]: `prev0` [B] (default START) at t = 0, the label of tick t-1 after."""
    start = torch.full_like(actions[:, :1], fsm.START) if prev0 is None else prev0.view(-1, 1).to(actions)
    return torch.cat([start, actions[:, :-1]], dim=1)


def scheduled_forward(
    head: PolicyHead,
    r: torch.Tensor,
    actions: torch.Tensor,
    ss_prob: float,
    fsm_cfg: FSMConfig,
    generator: torch.Generator,
    prev0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [B, T, 3] with a_{t-1} drawn per (clip, tick): the decoded action w.p. ss_prob, else the label.

    Decision: the sampled a_{t-1} is the FSM decoder's output on the head's own (detached)
    probabilities, not their argmax, because at inference a_{t-1} is always the decoder's output
    and the decoder never produces some sequences an argmax would (e.g. SILENT -> ALERT below
    alert_direct); training on argmax feedback would teach the head inputs it never meets. The
    decoder state runs on the model's probabilities at every tick, whichever input was fed, so
    it tracks the trajectory the deployed system would have shown. ss_prob = 0 is exact teacher
    forcing and runs the GRU over the whole sequence at once; otherwise it steps tick by tick.
    Coins come from `generator` so a seed fixes them. `prev0` [B]: a_{-1} of sequences that start
    mid-clip (START otherwise).
    """
    teacher = teacher_prev_actions(actions, prev0)
    if ss_prob <= 0.0:
        return head(r, teacher)[0]
    n_clips, n_ticks = actions.shape
    r_proj = head.proj(r)  # r_t does not depend on a_{t-1}: project every tick in one matmul
    coins = torch.rand((n_clips, n_ticks), generator=generator) < ss_prob
    coins[:, 0] = False  # a_{-1} is START (or prev0) for both teacher and model
    state = fsm.init_state((n_clips,))
    prev = teacher[:, :1]
    hidden = None
    logits_t = []
    for t in range(n_ticks):
        logits, hidden = head.recur(r_proj[:, t : t + 1], prev, hidden)
        logits_t.append(logits)
        probs = torch.softmax(logits[:, 0].detach().float(), dim=-1).cpu().numpy().astype(np.float64)
        state, decoded = fsm.step(state, probs, fsm_cfg)
        if t + 1 < n_ticks:
            decoded_t = torch.from_numpy(decoded).to(actions.device).view(n_clips, 1)
            use = coins[:, t + 1 : t + 2].to(actions.device)
            prev = torch.where(use, decoded_t, teacher[:, t + 1 : t + 2])
    return torch.cat(logits_t, dim=1)


def policy_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over real ticks; class_weight [3] up-weights the rare ALERT (weighted mean)."""
    target = torch.where(mask, actions, torch.full_like(actions, -100))
    return F.cross_entropy(logits.reshape(-1, 3), target.reshape(-1), weight=class_weight, ignore_index=-100)
