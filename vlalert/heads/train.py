"""Training of one head for one seed: the unit of work of a Snakemake heads job.

Results are reported as mean +- std over seeds, which only means something if a seed fully
determines a run: `train_head` seeds torch's global generator (initialisation, dropout) and two
private generators (clip order, scheduled-sampling coins), and turns on
`torch.use_deterministic_algorithms`, so on CPU the same seed and data give bit-identical
weights. Early stopping keeps the weights of the best validation epoch.

Validation loss: the DangerHead's is its training loss in eval mode. The PolicyHead's is the
cross-entropy *free-running*, with a_{t-1} taken from the FSM decoder exactly as at inference
(`fsm.rollout`), because that is the condition the head is deployed in; the teacher-forced loss
is logged beside it (`val_loss_tf`). Both use the train-set class weights when balance =
class_weights, so the stopping criterion values the rare ALERT as training does.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vlalert.actions import ACTIONS, Action
from vlalert.atomic import atomic_path, write_json_atomic
from vlalert.devices import to_device
from vlalert.heads import fsm
from vlalert.heads.config import DangerHeadConfig, FSMConfig, HeadsTrainConfig, PolicyHeadConfig
from vlalert.heads.danger import DangerHead, danger_loss
from vlalert.heads.data import ClipBatch, ClipSet, iter_batches, load_clips
from vlalert.heads.policy import PolicyHead, policy_loss, scheduled_forward, teacher_prev_actions
from vlalert.layout import HeadFiles
from vlalert.schemas import HEADS_TRAIN_LOG, write_table

logger = logging.getLogger("vlalert.heads")

HeadKind = Literal["danger", "policy"]
HEADS: tuple[str, ...] = ("danger", "policy")
# The job's four files, named by the layout (vlalert.layout.HeadFiles).
OUTPUT_FILES: tuple[str, ...] = tuple(
    Path(getattr(HeadFiles("."), name)).name for name in ("model", "config", "metrics", "train_log")
)


def vectors_for(kind: str) -> tuple[str, ...]:
    """The cache column a head reads: z for the DangerHead, r for the PolicyHead."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; expected one of {list(HEADS)}")
    return ("z",) if kind == "danger" else ("r",)


def build_head(kind: str, cfg: HeadsTrainConfig, in_dim: int) -> nn.Module:
    vectors_for(kind)
    return DangerHead(cfg.danger, in_dim) if kind == "danger" else PolicyHead(cfg.policy, in_dim)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- rare-class handling


def class_weights(counts: np.ndarray, max_weight: float) -> np.ndarray:
    """Inverse-frequency ("balanced") weights N / (3 n_c), capped at max_weight; an absent class gets the cap.

    The cap keeps a handful of ALERT ticks in a small split from dominating every gradient step.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, total / (len(counts) * counts), max_weight)
    return np.minimum(w, max_weight).astype(np.float32)


def clip_sampling_weights(clips: ClipSet, tick_class_weight: np.ndarray) -> np.ndarray:
    """Per clip: the weight of the rarest action it holds, so clips with ALERT ticks are drawn more often."""
    per_tick = tick_class_weight[clips.action]
    return np.maximum.reduceat(per_tick, clips.offsets[:-1]).astype(np.float64)


@dataclass(frozen=True)
class LossWeights:
    class_weight: torch.Tensor | None  # [3], applied per tick (policy CE; danger per-tick loss)
    clip_pos_weight: torch.Tensor | None  # DangerHead clip BCE: n_negative / n_positive clips, capped
    clip_sample_weight: np.ndarray | None  # [C] for balance = sampler


def loss_weights(clips: ClipSet, cfg: HeadsTrainConfig) -> LossWeights:
    """Weights derived from the *train* set, reused unchanged for validation."""
    cw = class_weights(clips.class_counts(), cfg.max_class_weight)
    if cfg.balance == "class_weights":
        n_pos = int(clips.is_positive.sum())
        n_neg = clips.n_clips - n_pos
        pos_w = min(n_neg / n_pos, cfg.max_class_weight) if n_pos else 1.0
        return LossWeights(torch.from_numpy(cw), torch.tensor(pos_w, dtype=torch.float32), None)
    if cfg.balance == "sampler":
        return LossWeights(None, None, clip_sampling_weights(clips, cw))
    return LossWeights(None, None, None)


# ----------------------------------------------------------------------------- epochs


def _danger_batch_loss(
    tick_logits: torch.Tensor,
    clip_logits: torch.Tensor,
    batch: ClipBatch,
    cfg: HeadsTrainConfig,
    weights: LossWeights,
) -> torch.Tensor:
    device = batch.mask.device
    tick_w = None if weights.class_weight is None else weights.class_weight.to(device)[batch.action]
    pos_w = None if weights.clip_pos_weight is None else weights.clip_pos_weight.to(device)
    return danger_loss(
        tick_logits, clip_logits, batch.danger, batch.is_positive, batch.mask, cfg.danger, tick_w, pos_w
    )


def batch_loss(
    kind: str,
    model: nn.Module,
    batch: ClipBatch,
    cfg: HeadsTrainConfig,
    weights: LossWeights,
    ss_prob: float,
    coin_gen: torch.Generator,
) -> torch.Tensor:
    if kind == "danger":
        return _danger_batch_loss(*model(batch.z, batch.mask), batch, cfg, weights)
    cw = None if weights.class_weight is None else weights.class_weight.to(batch.mask.device)
    logits = scheduled_forward(model, batch.r, batch.action, ss_prob, cfg.fsm, coin_gen, batch.prev0)
    return policy_loss(logits, batch.action, batch.mask, cw)


def epoch_order(clips: ClipSet, weights: LossWeights, gen: torch.Generator) -> np.ndarray:
    """A permutation of the clips, or (sampler) as many clips drawn with replacement by weight."""
    if weights.clip_sample_weight is not None:
        w = torch.from_numpy(weights.clip_sample_weight)
        return torch.multinomial(w, clips.n_clips, replacement=True, generator=gen).numpy()
    return torch.randperm(clips.n_clips, generator=gen).numpy()


def random_starts(clips: ClipSet, order: np.ndarray, prob: float, gen: torch.Generator) -> np.ndarray | None:
    """Leading ticks each drawn clip drops: with probability `prob`, uniform over the clip's ticks."""
    if prob <= 0.0:
        return None
    length = torch.from_numpy(clips.offsets[order + 1] - clips.offsets[order])
    coin = torch.rand(len(order), generator=gen) < prob
    draw = (torch.rand(len(order), generator=gen) * length).long()
    return torch.where(coin, draw, torch.zeros_like(draw)).numpy()


def train_epoch(
    kind: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    clips: ClipSet,
    cfg: HeadsTrainConfig,
    weights: LossWeights,
    epoch: int,
    order_gen: torch.Generator,
    coin_gen: torch.Generator,
) -> float:
    """One pass over the train clips; returns the tick-weighted mean batch loss."""
    device = torch.device(cfg.device)
    model.train()
    ss_prob = cfg.ss_prob(epoch) if kind == "policy" else 0.0
    total, n_ticks = 0.0, 0
    order = epoch_order(clips, weights, order_gen)
    skip = random_starts(clips, order, cfg.random_start, order_gen) if kind == "policy" else None
    for batch in iter_batches(clips, order, cfg.batch_clips, skip):
        batch = to_device(batch, device, non_blocking=True)
        loss = batch_loss(kind, model, batch, cfg, weights, ss_prob, coin_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        n = int(batch.mask.sum())
        total += float(loss.detach()) * n
        n_ticks += n
    return total / max(n_ticks, 1)


@torch.no_grad()
def evaluate(
    kind: str, model: nn.Module, clips: ClipSet, cfg: HeadsTrainConfig, weights: LossWeights
) -> dict[str, float | None]:
    """Validation loss and a few readable metrics (the scoring stage computes the real ones)."""
    device = torch.device(cfg.device)
    model.eval()
    order = np.arange(clips.n_clips)
    gen = torch.Generator().manual_seed(0)  # unused at ss_prob 1 (every coin is heads), kept for the API
    sums: dict[str, float] = {
        "loss": 0.0,
        "loss_tf": 0.0,
        "abs_err": 0.0,
        "correct": 0.0,
        "clip_correct": 0.0,
    }
    n_ticks = 0
    recall_hits = np.zeros(3)
    for batch in iter_batches(clips, order, cfg.batch_clips):
        batch = to_device(batch, device, non_blocking=True)
        n = int(batch.mask.sum())
        n_ticks += n
        mask = batch.mask
        if kind == "danger":
            tick_logits, clip_logits = model(batch.z, mask)
            sums["loss"] += float(_danger_batch_loss(tick_logits, clip_logits, batch, cfg, weights)) * n
            sums["abs_err"] += float(((torch.sigmoid(tick_logits) - batch.danger).abs() * mask).sum())
            clip_pred = torch.sigmoid(clip_logits) >= 0.5
            sums["clip_correct"] += float((clip_pred == batch.is_positive).sum())
        else:
            cw = None if weights.class_weight is None else weights.class_weight.to(device)
            free = scheduled_forward(model, batch.r, batch.action, 1.0, cfg.fsm, gen)
            sums["loss"] += float(policy_loss(free, batch.action, mask, cw)) * n
            tf = model(batch.r, teacher_prev_actions(batch.action))[0]
            sums["loss_tf"] += float(policy_loss(tf, batch.action, mask, cw)) * n
            probs = torch.softmax(free.float(), dim=-1).cpu().numpy()
            decoded = torch.from_numpy(fsm.decode(probs, cfg.fsm)).to(device)
            hit = (decoded == batch.action) & mask
            sums["correct"] += float(hit.sum())
            for c in range(3):
                recall_hits[c] += float((hit & (batch.action == c)).sum())
    n_ticks = max(n_ticks, 1)
    if kind == "danger":
        return {
            "val_loss": sums["loss"] / n_ticks,
            "val_tick_mae": sums["abs_err"] / n_ticks,
            "val_clip_accuracy": sums["clip_correct"] / max(clips.n_clips, 1),
        }
    counts = clips.class_counts()
    out = {
        "val_loss": sums["loss"] / n_ticks,
        "val_loss_tf": sums["loss_tf"] / n_ticks,
        "val_accuracy": sums["correct"] / n_ticks,
    }
    for c, name in enumerate(ACTIONS):
        # None (JSON null) when val holds no tick of the class: NaN is not valid JSON
        out[f"val_recall_{name.lower()}"] = float(recall_hits[c] / counts[c]) if counts[c] else None
    return out


# ----------------------------------------------------------------------------- DangerHead calibration


def _platt(x: np.ndarray, y: np.ndarray) -> tuple[list[float] | None, str | None]:
    """Weighted (balanced) 1-D logistic fit p = sigmoid(a x + b): ([a, b], None) or (None, why not)."""
    from sklearn.linear_model import LogisticRegression

    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return None, f"val holds {'no' if n_pos == 0 else 'only'} positive ticks"
    w = np.where(y, y.size / (2 * n_pos), y.size / (2 * (y.size - n_pos)))
    fit = LogisticRegression(C=1.0, max_iter=1000).fit(x[:, None], y.astype(np.int64), sample_weight=w)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not a > 0:
        return None, f"the head's danger does not rise with these ticks on val (slope {a:.3g})"
    return [a, b], None


@torch.no_grad()
def danger_calibration(model: nn.Module, val: ClipSet, cfg: HeadsTrainConfig) -> dict[str, Any]:
    """Two maps from the DangerHead's tick logit to the decoder's two signals, fitted on val.

    The head regresses the danger *target* (0 before t_r - observe_s, 0.5 at t_r, 1 at t_r +
    alert_s); thresholded as one score p (p_observe + p_alert = p_alert = p), it would climb to
    OBSERVE only where the target is already at the ALERT level, and then need k_enter more ticks
    to ALERT: the ALERT window (alert_s long, cut at the event) is over by then. Calibrated, each
    signal crosses the decoder's thresholds where that action becomes the likelier one, as the
    PolicyHead's do: `alert` = p(ALERT), `observe` = p(OBSERVE or ALERT), each sigmoid(a logit + b)
    fitted on the val ticks with balanced class weights (the heads' losses weight classes the same
    way). A map that cannot be fitted (val lacks the class, or danger does not rise with it) is
    null, with the reason in `notes`; the score stage then thresholds the raw danger for that signal.
    """
    device = torch.device(cfg.device)
    model.eval()
    logits, actions = [], []
    for batch in iter_batches(val, np.arange(val.n_clips), cfg.batch_clips):
        batch = to_device(batch, device, non_blocking=True)
        tick_logits, _ = model(batch.z, batch.mask)
        logits.append(tick_logits[batch.mask].double().cpu().numpy())
        actions.append(batch.action[batch.mask].cpu().numpy())
    x = np.concatenate(logits)
    a = np.concatenate(actions)
    out: dict[str, Any] = {"fitted_on": "val", "n_ticks": int(x.size), "notes": {}}
    for name, y in (("alert", a == Action.ALERT), ("observe", a >= Action.OBSERVE)):
        out[name], why = _platt(x, y)
        if why:
            out["notes"][name] = why
    return out


def lr_at(epoch: int, cfg: HeadsTrainConfig) -> float:
    if cfg.lr_schedule == "constant" or cfg.epochs == 1:
        return cfg.lr
    frac = epoch / (cfg.epochs - 1)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


# ----------------------------------------------------------------------------- the job


def fit(
    kind: str, seed: int, train: ClipSet, val: ClipSet, cfg: HeadsTrainConfig
) -> tuple[nn.Module, dict[str, Any], list[dict[str, float]]]:
    """Train on in-memory clips; returns (best model, metrics, per-epoch log). Seeds, not global settings.

    The caller (train_head) owns the process-wide determinism switch; fit only draws randomness
    from generators seeded by `seed`.
    """
    in_dim = train.z_dim if kind == "danger" else train.r_dim
    val_dim = val.z_dim if kind == "danger" else val.r_dim
    if in_dim != val_dim:
        raise ValueError(f"train and val caches differ in width: {in_dim} vs {val_dim}")
    torch.manual_seed(seed)
    device = torch.device(cfg.device)
    model = build_head(kind, cfg, in_dim)
    if cfg.standardize:
        model.input_scale.fit_(train.z if kind == "danger" else train.r, train.rows)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = loss_weights(train, cfg)
    order_gen = torch.Generator().manual_seed(seed)
    coin_gen = torch.Generator().manual_seed(seed + 1_000_003)

    log: list[dict[str, float]] = []
    best_loss, best_epoch, best_state, best_eval, wait = math.inf, -1, None, {}, 0
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        lr = lr_at(epoch, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loss = train_epoch(kind, model, optimizer, train, cfg, weights, epoch, order_gen, coin_gen)
        ev = evaluate(kind, model, val, cfg, weights)
        log.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": ev["val_loss"],
                "lr": lr,
                "seconds": time.perf_counter() - t0,
                "ss_prob": cfg.ss_prob(epoch) if kind == "policy" else 0.0,
            }
        )
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"{kind} head, seed {seed}: train loss is {train_loss} at epoch {epoch}")
        improved = ev["val_loss"] < best_loss - cfg.min_delta
        logger.info(
            "%s head, seed %d: epoch %d/%d, train loss %.4f, val loss %.4f%s, lr %.2e, %.2f s",
            kind,
            seed,
            epoch + 1,
            cfg.epochs,
            train_loss,
            ev["val_loss"],
            " (best)" if improved else "",
            lr,
            log[-1]["seconds"],
        )
        if improved:
            best_loss, best_epoch, best_eval, wait = ev["val_loss"], epoch, ev, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= cfg.patience:
                logger.info("%s head, seed %d: stopped early, best epoch %d", kind, seed, best_epoch + 1)
                break
    assert best_state is not None  # epoch 0 always improves on +inf unless val_loss is nan
    if cfg.keep == "best":
        model.load_state_dict(best_state)
    else:  # the last epoch's weights, and its val metrics beside the best epoch's number
        best_eval = ev
    metrics: dict[str, Any] = {
        "head": kind,
        "seed": seed,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "kept_epoch": best_epoch if cfg.keep == "best" else len(log) - 1,
        "epochs_run": len(log),
        "stopped_early": len(log) < cfg.epochs,
        "train_seconds": time.perf_counter() - started,
        "n_params": n_params(model),
        "n_train_ticks": train.n_ticks,
        "n_train_clips": train.n_clips,
        "n_val_ticks": val.n_ticks,
        "n_val_clips": val.n_clips,
        "train_class_counts": dict(zip(ACTIONS, train.class_counts().tolist(), strict=True)),
        **{k: v for k, v in best_eval.items() if k != "val_loss"},
    }
    return model, metrics, log


def save_outputs(
    out_dir: str | Path,
    kind: str,
    seed: int,
    model: nn.Module,
    cfg: HeadsTrainConfig,
    metrics: dict[str, Any],
    log: list[dict[str, float]],
) -> Path:
    """Write the four job outputs; config.json holds everything `load_head` needs to rebuild the head
    (and, for the DangerHead, the calibration in metrics["calibration"] that the score stage applies)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = HeadFiles(str(out))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(files.model) as tmp:
        save_file(state, str(tmp), metadata={"head": kind})
    head_cfg = cfg.danger if kind == "danger" else cfg.policy
    in_dim = model.z_dim if kind == "danger" else model.r_dim
    config = {
        "head": kind,
        "seed": seed,
        "dims": {"z_dim": in_dim} if kind == "danger" else {"r_dim": in_dim},
        "head_config": head_cfg.model_dump(),
        "fsm": cfg.fsm.model_dump(),
        "train": cfg.model_dump(exclude={"danger", "policy", "fsm"}),
        "n_params": n_params(model),
    }
    if "calibration" in metrics:
        config["calibration"] = metrics["calibration"]
    write_json_atomic(config, files.config)
    write_table("heads_train_log", pa.Table.from_pylist(log, schema=HEADS_TRAIN_LOG), files.train_log)
    write_json_atomic(metrics, files.metrics)  # last: its presence means the job finished
    return out


def load_head(out_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained head from its directory (for scoring); returns (model in eval mode, config.json)."""
    files = HeadFiles(str(out_dir))
    config = json.loads(Path(files.config).read_text())
    kind = config["head"]
    if kind == "danger":
        model: nn.Module = DangerHead(DangerHeadConfig(**config["head_config"]), config["dims"]["z_dim"])
    elif kind == "policy":
        model = PolicyHead(PolicyHeadConfig(**config["head_config"]), config["dims"]["r_dim"])
    else:
        raise ValueError(f"{out_dir}: unknown head {kind!r}")
    model.load_state_dict(load_file(files.model))
    model.eval()
    config["fsm_config"] = FSMConfig(**config["fsm"])
    return model, config


def train_head(
    head: HeadKind,
    seed: int,
    train_cache: str | Path,
    val_cache: str | Path,
    train_labels: str | Path,
    val_labels: str | Path,
    cfg: HeadsTrainConfig,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Train `head` with `seed` on the train split, stop early on val, save the best epoch to out_dir.

    Sets torch.use_deterministic_algorithms(True) (and cfg.threads) for the run and restores the
    previous settings afterwards. Returns the metrics also written to metrics.json.
    """
    vectors = vectors_for(head)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=torch.device(cfg.device).type != "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        t0 = time.perf_counter()
        train = load_clips(train_cache, train_labels, vectors=vectors, training=True)
        val = load_clips(val_cache, val_labels, vectors=vectors, training=True)
        load_seconds = time.perf_counter() - t0
        model, metrics, log = fit(head, seed, train, val, cfg)
        if head == "danger":
            metrics["calibration"] = danger_calibration(model, val, cfg)
        metrics["load_seconds"] = load_seconds
        save_outputs(out_dir, head, seed, model, cfg, metrics, log)
        return metrics
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)
