"""DangerHead: how dangerous is the scene now (per tick) and is this clip heading for an event (per clip).

The per-tick score must be causal and cheap (it runs every tick on z_t alone), so it is an MLP.
The clip score pools the clip's tick embeddings with PMA, pooling by multi-head attention with k
learned queries (Lee et al., Set Transformer, 2019): each query learns to look for a different kind
of evidence (a sudden rise, a sustained hazard) and a padding mask lets clips of any length share
a batch. Training the clip score jointly gives the tick embeddings a clip-level signal beyond the
hand-made danger ramp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlalert.heads.config import DangerHeadConfig
from vlalert.heads.standardize import Standardize


class PMA(nn.Module):
    """PMA_k(S) = MAB(Q, S) with MAB(X, Y) = LN(H + rFF(H)), H = LN(X + MHA(X, Y, Y))."""

    def __init__(self, dim: int, n_queries: int, n_heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ln1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.ln2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], mask [B, T] (True = a real tick) -> pooled [B, k, D]."""
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        att, _ = self.attn(q, x, x, key_padding_mask=~mask, need_weights=False)
        h = self.ln1(q + att)
        return self.ln2(h + self.ffn(h))


class DangerHead(nn.Module):
    """z [B, T, z_dim] + mask [B, T] -> (tick logits [B, T], clip logits [B]); sigmoid gives danger."""

    def __init__(self, cfg: DangerHeadConfig, z_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = z_dim
        # Per-feature scale of the train split (heads/standardize.py), then LayerNorm: z concatenates
        # four layers whose activation scales differ by orders of magnitude.
        self.encoder = nn.Sequential(
            Standardize(z_dim),
            nn.LayerNorm(z_dim),
            nn.Linear(z_dim, cfg.mlp_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, cfg.embed),
            nn.GELU(),
        )
        self.tick_out = nn.Linear(cfg.embed, 1)
        self.pma = PMA(cfg.embed, cfg.pma_queries, cfg.pma_heads, cfg.pma_ffn, cfg.dropout)
        self.clip_out = nn.Linear(cfg.pma_queries * cfg.embed, 1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(z)
        tick_logits = self.tick_out(emb).squeeze(-1)
        pooled = self.pma(emb, mask)
        clip_logits = self.clip_out(pooled.flatten(1)).squeeze(-1)
        return tick_logits, clip_logits

    @property
    def input_scale(self) -> Standardize:
        return self.encoder[0]


def danger_loss(
    tick_logits: torch.Tensor,
    clip_logits: torch.Tensor,
    danger: torch.Tensor,
    is_positive: torch.Tensor,
    mask: torch.Tensor,
    cfg: DangerHeadConfig,
    tick_weight: torch.Tensor | None = None,
    clip_pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean per-tick loss over real ticks + clip_loss_weight * clip BCE on is_positive.

    tick_weight [B, T] (e.g. the inverse frequency of each tick's action) lets the few ALERT ticks,
    where danger is highest, count as much as the many quiet ones; padded ticks get weight 0.
    """
    w = mask.float() if tick_weight is None else tick_weight * mask.float()
    if cfg.loss == "bce":
        per_tick = F.binary_cross_entropy_with_logits(tick_logits, danger, reduction="none")
    else:
        per_tick = (torch.sigmoid(tick_logits) - danger) ** 2
    tick_loss = (per_tick * w).sum() / w.sum().clamp_min(1e-12)
    clip_loss = F.binary_cross_entropy_with_logits(
        clip_logits, is_positive.float(), pos_weight=clip_pos_weight
    )
    return tick_loss + cfg.clip_loss_weight * clip_loss
