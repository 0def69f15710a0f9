"""Configuration of the heads stage: the two heads, the action decoder and the training loop.

The defaults are the reference widths: at z = 4 x 2560 = 10,240 and r = 2,560 they give a
DangerHead of 14,848,002 and a PolicyHead of 6,962,051 parameters (the published ~14.8 M and
~7.0 M), pinned by tests/test_heads_danger.py and tests/test_heads_policy.py. Input widths are not
configured: they are read from the cache, so the same config trains on the tiny demo model and on
Qwen3-VL-4B. The workflow config nests these models; every key is validated before any job runs.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from vlalert.strict import StrictModel


class DangerHeadConfig(StrictModel):
    """Per-tick MLP on z_t plus a multi-query PMA (Set Transformer) over the clip's tick embeddings."""

    mlp_hidden: int = Field(1024, ge=1)  # z -> mlp_hidden -> embed
    embed: int = Field(768, ge=1)  # width of the tick embedding that the PMA pools
    pma_queries: int = Field(4, ge=1)  # k learned seed vectors
    pma_heads: int = Field(8, ge=1)
    pma_ffn: int = Field(768, ge=1)  # hidden width of the PMA's row-wise feed-forward
    dropout: float = Field(0.1, ge=0, lt=1)
    loss: Literal["bce", "mse"] = "bce"  # per-tick loss on the soft danger target
    clip_loss_weight: float = Field(0.5, ge=0)  # weight of the clip-level BCE on is_positive

    @model_validator(mode="after")
    def _heads_divide(self) -> DangerHeadConfig:
        if self.embed % self.pma_heads:
            raise ValueError(f"embed ({self.embed}) must be divisible by pma_heads ({self.pma_heads})")
        return self


class PolicyHeadConfig(StrictModel):
    """Projection of r_t + embedding of a_{t-1}, a GRU over the clip, 3-way logits."""

    proj: int = Field(640, ge=1)  # width of the projected r_t
    action_embed: int = Field(64, ge=1)  # width of the a_{t-1} embedding (SILENT/OBSERVE/ALERT/START)
    gru_hidden: int = Field(1024, ge=1)
    gru_layers: int = Field(1, ge=1, le=4)
    dropout: float = Field(0.1, ge=0, lt=1)
    # The output layer also reads the tick's projected r_t beside the GRU state: a direct per-tick path,
    # so what the VLM says about this tick need not pass through the recurrence to reach the action.
    tick_skip: bool = False


class FSMConfig(StrictModel):
    """Thresholds and tick counts of the SILENT -> OBSERVE -> ALERT decoder (rules in vlalert.heads.fsm)."""

    observe_enter: float = Field(0.5, ge=0, le=1)  # p_observe + p_alert to climb to OBSERVE
    observe_exit: float = Field(0.35, ge=0, le=1)  # below this (p_observe + p_alert) OBSERVE falls to SILENT
    alert_enter: float = Field(0.5, ge=0, le=1)  # p_alert to climb OBSERVE -> ALERT
    alert_exit: float = Field(0.35, ge=0, le=1)  # below this p_alert, ALERT falls to OBSERVE
    alert_direct: float = Field(0.85, ge=0, le=1)  # p_alert that may jump SILENT -> ALERT in one tick
    k_enter: int = Field(2, ge=1)  # consecutive ticks above an enter threshold before climbing
    min_dwell: int = Field(2, ge=1)  # ticks a raised state (OBSERVE, ALERT) is held before it may fall
    cooldown: int = Field(3, ge=0)  # ticks after leaving ALERT during which ALERT cannot be entered

    @model_validator(mode="after")
    def _hysteresis(self) -> FSMConfig:
        if self.observe_exit > self.observe_enter:
            raise ValueError("fsm.observe_exit must not exceed fsm.observe_enter (hysteresis)")
        if self.alert_exit > self.alert_enter:
            raise ValueError("fsm.alert_exit must not exceed fsm.alert_enter (hysteresis)")
        if self.alert_direct < self.alert_enter:
            raise ValueError("fsm.alert_direct must be at least fsm.alert_enter")
        return self


# Measured (benchmarks/heads_epoch.py, one CPU thread, reference widths): the slowest head, the
# PolicyHead with scheduled sampling, costs ~1.7 ms per train tick and epoch; 30 epochs of the
# published 97,649 train ticks took up to 84 min.
EPOCH_S_PER_TICK = 84 * 60 / (30 * 97_649)
RUNTIME_FIXED_MIN = 10  # loading the cache, the val passes, writing the model


class HeadsTrainConfig(StrictModel):
    """The training loop shared by both heads, and the head/decoder configs it trains."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    epochs: int = Field(30, ge=1)  # maximum; early stopping usually ends sooner
    patience: int = Field(5, ge=1)  # epochs without a val-loss improvement of min_delta before stopping
    min_delta: float = Field(0.0, ge=0)
    # The weights saved: "best", those of the epoch with the lowest val loss; "last", those of the last
    # epoch run (a val split too small to rank epochs by its loss: the demo's has 35 ticks).
    keep: Literal["best", "last"] = "best"
    # Scale each input feature by the train split's mean and std before the heads (heads/standardize.py).
    standardize: bool = True
    batch_clips: int = Field(32, ge=1)  # clips per optimiser step (a clip is a padded tick sequence)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # cosine: decays to lr_min_ratio * lr at `epochs`
    lr_min_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    # Rare-class handling. class_weights: inverse-frequency weights of the train actions in the loss;
    # sampler: clips drawn with replacement, weighted by the rarest action they hold; none: plain.
    balance: Literal["class_weights", "sampler", "none"] = "class_weights"
    max_class_weight: float = Field(20.0, ge=1)
    # Scheduled sampling of a_{t-1} for the PolicyHead: probability of feeding the decoded action
    # instead of the label, 0 before ss_start_epoch, then linear over ss_ramp_epochs to ss_max
    # (constant: ss_max from ss_start_epoch on).
    ss_schedule: Literal["linear", "constant"] = "linear"
    ss_max: float = Field(0.5, ge=0, le=1)
    ss_start_epoch: int = Field(1, ge=0)
    ss_ramp_epochs: int = Field(10, ge=1)
    # Probability that a train clip of the PolicyHead starts at a uniformly drawn tick of its own (its
    # a_{t-1} there is the label before): the GRU then cannot tell the time in the clip by counting
    # ticks, which on short benchmarks with events at similar times is a shortcut past r_t.
    random_start: float = Field(0.0, ge=0, le=1)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None keeps torch's default
    device: str = "cpu"  # bit-identical reruns are guaranteed on CPU only
    danger: DangerHeadConfig = Field(default_factory=DangerHeadConfig)
    policy: PolicyHeadConfig = Field(default_factory=PolicyHeadConfig)
    fsm: FSMConfig = Field(default_factory=FSMConfig)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("heads.seeds must name at least one seed")
        if len(set(v)) != len(v):
            raise ValueError(f"heads.seeds must be distinct, got {v}")
        return v

    def runtime_minutes(self, train_ticks: int) -> int:
        """A job's time limit for `train_ticks`: every epoch at the measured cost, twice over, plus the
        fixed part (the rule multiplies it by the attempt: a retry after a timeout gets more)."""
        return RUNTIME_FIXED_MIN + math.ceil(2 * self.epochs * train_ticks * EPOCH_S_PER_TICK / 60)

    def ss_prob(self, epoch: int) -> float:
        """Probability of feeding the decoded a_{t-1} at 0-based `epoch` (the schedule above)."""
        if epoch < self.ss_start_epoch:
            return 0.0
        if self.ss_schedule == "constant":
            return self.ss_max
        done = epoch - self.ss_start_epoch + 1
        return self.ss_max * min(1.0, done / self.ss_ramp_epochs)
