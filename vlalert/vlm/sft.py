"""LoRA SFT of the VLM on the benchmark's train ticks: the sft stage.

What trains: LoRA on the language model and the belief/action rows of the embedding
(vlalert.vlm.lora); the vision tower stays frozen.

Loss: cross-entropy on the target tokens only, summed over the global batch and divided by its
number of target tokens, so the step is the same whether the batch runs as one forward, as
accumulated micro-batches, or split over data-parallel ranks. Only the logits of the target
window are computed (`logits_to_keep`; left padding puts every target at the end of its row), which
spares a (batch x prompt length x 151,936) logits tensor on a real model.

Numerics: bf16 autocast on CUDA over bf16 base weights, fp32 on CPU; trainable parameters and
the optimiser state are fp32 everywhere. AdamW, linear warmup then cosine decay to 0
(`transformers.get_cosine_schedule_with_warmup`), gradient clipping, optional gradient
checkpointing.

Resume: every `save_every` steps a checkpoint (trainable weights, optimiser, scheduler, each
rank's RNG state, step, the log so far) is written atomically (vlalert.vlm.checkpoint). A run
restarted after a kill continues from the newest complete checkpoint with its own fingerprint;
the data order is a pure function of the seed and the step (vlalert.vlm.data), so it finishes at
the same step with the same weights as an uninterrupted run.

Several processes: `launch` starts `torchrun --standalone` (one node, one process per GPU; gloo
on CPU) when `sft.nproc > 1`; each rank trains on its contiguous share of every global batch and
DDP averages the gradients. Outputs are written by rank 0.

Outputs under the run directory: `adapter/` (peft `save_pretrained`, with the tokenizer),
`train_log.parquet` (TRAIN_LOG_SCHEMA), `metrics.json`; `checkpoints/` beside them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from vlalert.atomic import publish_tree, write_json_atomic
from vlalert.beliefs.text import parse_generation
from vlalert.schemas import read_table
from vlalert.vlm import checkpoint as ckpt
from vlalert.vlm.config import SFTConfig, VLMConfig
from vlalert.vlm.data import (
    Collator,
    StepSampler,
    TickDataset,
    evenly_spaced,
    rows_sha256,
    trainable_rows,
)
from vlalert.vlm.inputs import IGNORE_INDEX, collate
from vlalert.vlm.loading import load_model, load_tokenizer
from vlalert.vlm.lora import (
    apply_lora,
    enable_activation_checkpointing,
    lora_module_names,
    trainable_parameters,
)
from vlalert.vlm.tokenizer import ENDOFTEXT, IM_END

log = logging.getLogger("vlalert.vlm.sft")  # not __main__ under `python -m`

ADAPTER_DIR = "adapter"
TRAIN_LOG = "train_log.parquet"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
JOB_FILE = "job.json"

TRAIN_LOG_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int32(), nullable=False),  # optimiser steps done; 0: before training
        pa.field("epoch", pa.float64(), nullable=False),  # train ticks seen / number of train ticks
        pa.field("lr", pa.float64(), nullable=False),  # learning rate of this step
        pa.field("train_loss", pa.float64(), nullable=True),  # token-mean loss of the step's global batch
        pa.field("val_loss", pa.float64(), nullable=True),  # where evaluated (every eval_every, and last)
        pa.field(
            "seconds", pa.float64(), nullable=False
        ),  # wall seconds since the run began (resumes add up)
    ]
)


class SFTJob(BaseModel):
    """Everything one SFT run reads: written to `job.json` for torchrun-launched ranks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str  # a model directory or hub id (vlalert.vlm.config.model_location)
    train: str  # results/benchmark/train.parquet
    val: str  # results/benchmark/val.parquet
    run_dir: str  # results/sft/{run}
    sft: SFTConfig
    model: VLMConfig

    @property
    def paths(self) -> SFTPaths:
        return SFTPaths(Path(self.run_dir))


@dataclass(frozen=True)
class SFTPaths:
    run_dir: Path

    @property
    def adapter(self) -> Path:
        return self.run_dir / ADAPTER_DIR

    @property
    def train_log(self) -> Path:
        return self.run_dir / TRAIN_LOG

    @property
    def metrics(self) -> Path:
        return self.run_dir / METRICS

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINTS

    @property
    def job(self) -> Path:
        return self.run_dir / JOB_FILE


# --------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Dist:
    """This process's place among the data-parallel ranks (world 1: no torch.distributed at all)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def resolve_device(device: str, local_rank: int = 0) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("sft.device is cuda but no CUDA device is available")
        return f"cuda:{local_rank}"
    return "cpu"


def init_distributed(device_pref: str) -> Dist:
    """Read torchrun's environment; join the process group (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random stream (LoRA dropout); distinct per rank, fixed per (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank, 0x5F7]).generate_state(1)[0])


# -------------------------------------------------------------------------------------------- loss


def count_targets(labels: torch.Tensor) -> int:
    """Target tokens that contribute to the loss (the first column predicts nothing)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def target_window(labels: torch.Tensor) -> int:
    """Number of last positions whose logits cover every target token of the batch."""
    valid = labels != IGNORE_INDEX
    rows = valid.any(dim=1)
    if not bool(rows.any()):
        raise ValueError("a batch without any target token")
    first = int(valid.int().argmax(dim=1)[rows].min())
    return min(labels.shape[1], labels.shape[1] - first + 1)


def loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed target-token cross-entropy of a batch (fp32) and its number of target tokens."""
    labels = batch["labels"]
    keep = target_window(labels)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = labels[:, labels.shape[1] - keep + 1 :]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total, int((targets != IGNORE_INDEX).sum())


def _to(batch: Mapping[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(model: Any, loader: Any, dist: Dist) -> float | None:
    """Token-mean target loss over the loader's batches, summed over ranks; None without targets."""
    was_training = model.training
    model.eval()
    total = count = 0.0
    try:
        for batch in loader:
            with _autocast(dist.device):
                s, c = loss_sum(model, _to(batch, dist.device))
            total += float(s)
            count += c
    finally:
        model.train(was_training)
    total, count = dist.sum([total, count])
    return total / count if count else None


# -------------------------------------------------------------------------------------- generation


def decode_generation(tokenizer: Any, ids: Sequence[int]) -> str:
    """Generated ids -> text up to the end of the turn, special belief/action tokens kept."""
    text = tokenizer.decode(list(ids), skip_special_tokens=False)
    return text.split(IM_END, 1)[0].replace(ENDOFTEXT, "").strip()


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    dataset: TickDataset,
    indices: Sequence[int],
    *,
    max_new_tokens: int,
    batch_size: int,
    device: str,
) -> list[str]:
    """Greedy generations of the dataset's ticks at `indices` (the dataset built without targets)."""
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(indices), batch_size):
            examples = [dataset[i] for i in indices[start : start + batch_size]]
            batch = _to(collate(examples, tokenizer.pad_token_id), device)
            with _autocast(device):
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,
                )
            width = batch["input_ids"].shape[1]
            texts += [decode_generation(tokenizer, row[width:].tolist()) for row in out]
    finally:
        model.train(was_training)
    return texts


def parse_counts(texts: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(parsable generations, generations whose parsed action equals the row's label)."""
    ok = correct = 0
    for text, row in zip(texts, rows, strict=True):
        parsed = parse_generation(text)
        ok += int(parsed.ok)
        correct += int(parsed.action == row["action"])
    return ok, correct


# ------------------------------------------------------------------------------------- checkpoints


def _rng_state(device: str) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: str) -> None:
    torch.set_rng_state(state["torch"])
    if device.startswith("cuda") and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    params: Sequence[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: Mapping[str, Any],
    dist: Dist,
    keep: int,
) -> None:
    """All ranks call this: each stores its RNG state, rank 0 the rest, then seals and commits."""
    from safetensors.torch import save_file

    if dist.is_main:
        ckpt.staging_dir(root, step)
    dist.barrier()
    staging = root / f"{ckpt.STAGING_PREFIX}{ckpt.checkpoint_name(step)}"
    torch.save(_rng_state(dist.device), staging / f"rng_rank{dist.rank}.pt")
    dist.barrier()
    if dist.is_main:
        save_file(
            {n: p.detach().cpu().contiguous() for n, p in params}, str(staging / "trainable.safetensors")
        )
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        ckpt.write_state(staging, state)
        ckpt.commit(staging, keep)
    dist.barrier()


def load_checkpoint(
    path: Path,
    *,
    params: Sequence[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: Dist,
) -> dict[str, Any]:
    """Restore weights, optimiser, scheduler and this rank's RNG; return the checkpoint's state."""
    from safetensors.torch import load_file

    state = ckpt.read_state(path)
    if state is None:
        raise RuntimeError(f"{path}: incomplete checkpoint")
    saved = load_file(str(path / "trainable.safetensors"))
    names = [n for n, _ in params]
    if sorted(saved) != sorted(names):
        raise RuntimeError(f"{path}: trainable parameters differ from the model's")
    with torch.no_grad():
        for name, p in params:
            p.copy_(saved[name].to(p.device, p.dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=dist.device, weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = path / f"rng_rank{dist.rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=True), dist.device)
    else:  # resumed with more ranks than were saved: a fresh stream for this rank
        torch.manual_seed(rank_seed(int(state["seed"]), dist.rank) + int(state["step"]))
    return state


# ------------------------------------------------------------------------------------------ outputs


def write_train_log(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=TRAIN_LOG_SCHEMA)
    tmp = path.with_name(f".{path.name}.part")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_json(obj: Any, path: Path) -> None:
    write_json_atomic(obj, path)


def save_adapter(model: Any, tokenizer: Any, out: Path) -> None:
    """peft `save_pretrained` plus the tokenizer in the same directory, moved into place at the end."""
    tmp = out.with_name(f".{out.name}.part")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    publish_tree(tmp)  # save_pretrained writes the weights 0600
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def model_identity(model_path: str) -> dict[str, Any]:
    """What identifies the base model for the checkpoint fingerprint: its config (and build info)."""
    path = Path(model_path)
    out: dict[str, Any] = {"model_path": model_path}
    for name in ("config.json", "vlalert_build.json"):
        if (path / name).is_file():
            out[name] = (path / name).read_text()
    return out


# ---------------------------------------------------------------------------------------- training


def _loader(dataset: TickDataset, batches: Any, pad_id: int, num_workers: int, device: str) -> Any:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=Collator(pad_id),
        num_workers=num_workers,
        pin_memory=device.startswith("cuda"),
        persistent_workers=num_workers > 0,
        # a private generator: creating a loader iterator must not draw from torch's global
        # generator, whose state the checkpoints restore for dropout
        generator=torch.Generator().manual_seed(0),
    )


def _shard(indices: Sequence[int], dist: Dist) -> list[int]:
    return list(indices[dist.rank :: dist.world])


def _batches(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def train_step(
    net: Any,
    params: Sequence[torch.nn.Parameter],
    micro_batches: Sequence[Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dist: Dist,
    max_grad_norm: float,
) -> float:
    """One optimiser step over this rank's micro-batches of a global batch; returns its token-mean loss.

    Every micro-batch's summed loss is divided by the number of target tokens in the *global*
    batch (counted over all ranks first), so accumulation and data parallelism add up to exactly
    the gradient of one forward over the whole batch. DDP averages gradients over ranks, hence the
    factor `world`; only the last micro-batch synchronises.
    """
    global_count = dist.sum([sum(count_targets(b["labels"]) for b in micro_batches)])[0]
    local_loss = 0.0
    last = len(micro_batches) - 1
    for j, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if dist.world == 1 or j == last else net.no_sync()
        with sync:
            with _autocast(dist.device):
                total, _ = loss_sum(net, _to(batch, dist.device))
            (total * (dist.world / global_count)).backward()
        local_loss += float(total.detach())
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return dist.sum([local_loss])[0] / global_count


@dataclass
class _Run:
    """The state of one SFT run between setup, the step loop and the outputs."""

    job: SFTJob
    dist: Dist
    train_rows: list[dict[str, Any]]
    val_rows: list[dict[str, Any]]
    tokenizer: Any
    model: Any  # the peft model (what is saved, evaluated and generated with)
    net: Any  # what the steps run: the peft model, or DDP around it
    params: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    fingerprint: str
    started: float
    step: int = 0
    log_rows: list[dict[str, Any]] | None = None
    elapsed0: float = 0.0
    resumed_from: int | None = None

    def seconds(self) -> float:
        return self.elapsed0 + time.monotonic() - self.started

    @property
    def accum(self) -> int:
        return self.job.sft.batch_size // (self.job.sft.micro_batch * self.dist.world)


def _setup(job: SFTJob, dist: Dist) -> _Run:
    cfg, vlm = job.sft, job.model
    started = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_rows = trainable_rows(read_table("benchmark", job.train))
    val_rows = trainable_rows(read_table("benchmark", job.val))
    if not train_rows or not val_rows:
        raise ValueError(
            f"SFT needs trainable ticks in train and val, got {len(train_rows)} and {len(val_rows)}"
        )
    if cfg.batch_size % (cfg.micro_batch * dist.world):
        raise ValueError(
            f"sft.batch_size {cfg.batch_size} does not split into {dist.world} x {cfg.micro_batch}"
        )
    tokenizer = load_tokenizer(job.model_path)
    base = load_model(job.model_path, dtype=vlm.dtype, device=dist.device)
    base.config.use_cache = False
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(base)
    torch.manual_seed(cfg.seed)  # LoRA init: the same on every rank and in a single process
    model = apply_lora(base, tokenizer, cfg, vlm.is_tiny)
    model.train()
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if dist.device.startswith("cuda") else None
        )
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW([p for _, p in params], lr=cfg.lr, weight_decay=cfg.weight_decay)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps)
    fp = ckpt.fingerprint(
        {
            "sft": cfg.result_keys(),
            "model": vlm.model_dump(mode="json"),
            "base": model_identity(job.model_path),
            "train": rows_sha256(train_rows),
            "val": rows_sha256(val_rows),
        }
    )
    return _Run(
        job, dist, train_rows, val_rows, tokenizer, model, net, params, optimizer, scheduler, fp, started
    )


def _resume(run: _Run) -> None:
    """Continue from the newest checkpoint of this run, if any; otherwise seed this rank's dropout."""
    root, dist = run.job.paths.checkpoints, run.dist
    if dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        ckpt.clean_staging(root)
        for stale in ckpt.remove_stale(root, run.fingerprint):
            log.warning("removed checkpoint %s: incomplete, or of another config or data set", stale)
    dist.barrier()
    run.log_rows = []
    latest = ckpt.latest_checkpoint(root, run.fingerprint)
    if latest is None:
        torch.manual_seed(rank_seed(run.job.sft.seed, dist.rank))
        return
    state = load_checkpoint(
        latest, params=run.params, optimizer=run.optimizer, scheduler=run.scheduler, dist=dist
    )
    run.step = run.resumed_from = int(state["step"])
    run.log_rows, run.elapsed0 = list(state["log"]), float(state["elapsed_s"])
    log.info("resumed from %s (step %d of %d)", latest, run.step, run.job.sft.max_steps)


def _save(run: _Run) -> None:
    cfg = run.job.sft
    state = {
        "step": run.step,
        "position": run.step * cfg.batch_size,  # train ticks consumed: the data order resumes here
        "world_size": run.dist.world,
        "seed": cfg.seed,
        "fingerprint": run.fingerprint,
        "log": run.log_rows,
        "elapsed_s": run.seconds(),
    }
    save_checkpoint(
        run.job.paths.checkpoints,
        run.step,
        params=run.params,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        state=state,
        dist=run.dist,
        keep=cfg.keep_checkpoints,
    )


def _train(run: _Run) -> None:
    """The step loop: train, evaluate every eval_every steps and at the end, checkpoint every save_every."""
    cfg, vlm, dist, tok = run.job.sft, run.job.model, run.dist, run.tokenizer
    n_train = len(run.train_rows)
    train_set = TickDataset(run.train_rows, tok, vlm, with_target=True, cache_examples=cfg.cache_examples)
    val_set = TickDataset(run.val_rows, tok, vlm, with_target=True, cache_examples=cfg.cache_examples)
    val_idx = _shard(evenly_spaced(len(run.val_rows), cfg.val_max_ticks), dist)
    val_loader = _loader(val_set, _batches(val_idx, cfg.eval_batch), tok.pad_token_id, 0, dist.device)
    sampler = StepSampler(
        n_train, cfg.seed, cfg.batch_size, cfg.micro_batch, run.step, cfg.max_steps, dist.rank, dist.world
    )
    batches: Iterator[dict[str, torch.Tensor]] = iter(
        _loader(train_set, sampler, tok.pad_token_id, cfg.num_workers, dist.device)
    )
    log.info(
        "SFT: %d train / %d val ticks, %d steps of %d (%d ranks x %d micro x %d accum) on %s, "
        "%d trainable parameters",
        n_train,
        len(run.val_rows),
        cfg.max_steps,
        cfg.batch_size,
        dist.world,
        cfg.micro_batch,
        run.accum,
        dist.device,
        sum(p.numel() for _, p in run.params),
    )
    assert run.log_rows is not None
    if run.step == 0:
        initial = evaluate_loss(run.model, val_loader, dist)
        lr0 = run.scheduler.get_last_lr()[0]
        run.log_rows.append(
            {
                "step": 0,
                "epoch": 0.0,
                "lr": lr0,
                "train_loss": None,
                "val_loss": initial,
                "seconds": run.seconds(),
            }
        )
        log.info("step 0: val loss %.4f", initial)
    trainables = [p for _, p in run.params]
    while run.step < cfg.max_steps:
        lr = run.scheduler.get_last_lr()[0]
        micro = [next(batches) for _ in range(run.accum)]
        loss = train_step(run.net, trainables, micro, run.optimizer, run.scheduler, dist, cfg.max_grad_norm)
        run.step += 1
        if not math.isfinite(loss):
            raise FloatingPointError(f"SFT loss is {loss} at step {run.step}")
        row = {"step": run.step, "epoch": run.step * cfg.batch_size / n_train, "lr": lr, "train_loss": loss}
        evaluate = run.step % cfg.eval_every == 0 or run.step == cfg.max_steps
        row["val_loss"] = evaluate_loss(run.model, val_loader, dist) if evaluate else None
        row["seconds"] = run.seconds()
        run.log_rows.append(row)
        if evaluate or run.step % 10 == 0 or run.step == 1:
            val = "" if row["val_loss"] is None else f", val {row['val_loss']:.4f}"
            log.info(
                "step %d/%d: train %.4f%s, lr %.2e, %.1f s",
                run.step,
                cfg.max_steps,
                loss,
                val,
                lr,
                row["seconds"],
            )
        if run.step % cfg.save_every == 0 and run.step < cfg.max_steps:
            _save(run)


def _metrics(run: _Run) -> dict[str, Any]:
    """Losses, and the parse rate of greedy generations on val ticks (each rank generates its share)."""
    cfg, vlm, dist = run.job.sft, run.job.model, run.dist
    assert run.log_rows is not None
    gen_all = evenly_spaced(len(run.val_rows), cfg.gen_max_ticks)
    gen_idx = _shard(gen_all, dist)
    texts = generate_texts(
        run.model,
        run.tokenizer,
        TickDataset(run.val_rows, run.tokenizer, vlm, with_target=False),
        gen_idx,
        max_new_tokens=vlm.max_new_tokens,
        batch_size=cfg.gen_batch,
        device=dist.device,
    )
    ok, correct = dist.sum(parse_counts(texts, [run.val_rows[i] for i in gen_idx]))
    initial, final = run.log_rows[0]["val_loss"], run.log_rows[-1]["val_loss"]
    examples = [
        {
            "video_id": run.val_rows[i]["video_id"],
            "tick": run.val_rows[i]["tick"],
            "label": run.val_rows[i]["action"],
        }
        | {"text": text}
        for i, text in list(zip(gen_idx, texts, strict=True))[:3]
    ]
    trainables = [p for _, p in run.params]
    return {
        "initial_val_loss": initial,
        "final_val_loss": final,
        "val_loss_ratio": final / initial if initial else None,
        "final_train_loss": run.log_rows[-1]["train_loss"],
        "val_parse_rate": ok / len(gen_all) if gen_all else None,
        "val_action_accuracy": correct / len(gen_all) if gen_all else None,
        "n_generated": len(gen_all),
        "examples": examples,
        "steps": run.step,
        "epochs": run.step * cfg.batch_size / len(run.train_rows),
        "n_train_ticks": len(run.train_rows),
        "n_val_ticks": len(run.val_rows),
        "n_val_evaluated": len(evenly_spaced(len(run.val_rows), cfg.val_max_ticks)),
        "batch_size": cfg.batch_size,
        "grad_accum": run.accum,
        "world_size": dist.world,
        "device": dist.device,
        "dtype": str(trainables[0].dtype).removeprefix("torch."),
        "base_dtype": str(run.model.get_input_embeddings().weight.dtype).removeprefix("torch."),
        "train_embeddings": cfg.embeddings_mode(vlm.is_tiny),
        "lora_modules": len(lora_module_names(run.model)),
        "trainable_parameters": sum(p.numel() for p in trainables),
        "total_parameters": sum(p.numel() for p in run.model.parameters()),
        "resumed_from_step": run.resumed_from,
        "wall_s": run.seconds(),
        "fingerprint": run.fingerprint,
    }


def _write_outputs(run: _Run, metrics: Mapping[str, Any]) -> None:
    paths = run.job.paths
    save_adapter(run.model, run.tokenizer, paths.adapter)
    write_train_log(run.log_rows or [], paths.train_log)
    _write_json(dict(metrics), paths.metrics)
    if run.job.sft.clean_checkpoints:
        shutil.rmtree(paths.checkpoints, ignore_errors=True)
    log.info(
        "SFT done: val loss %.4f -> %.4f, parse rate %s, %.1f s",
        metrics["initial_val_loss"],
        metrics["final_val_loss"],
        metrics["val_parse_rate"],
        metrics["wall_s"],
    )


def run_sft(job: SFTJob) -> dict[str, Any]:
    """Train (or resume) one SFT run and write its outputs; returns the metrics (on every rank)."""
    dist = init_distributed(job.sft.device)
    try:
        run = _setup(job, dist)
        _resume(run)
        _train(run)
        metrics = _metrics(run)
        if dist.is_main:
            _write_outputs(run, metrics)
        dist.barrier()
        return metrics
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------- launch


def write_job(job: SFTJob) -> Path:
    path = job.paths.job
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(job.model_dump(mode="json"), path)
    return path


def torchrun_command(job_path: str | os.PathLike[str], nproc: int) -> list[str]:
    """One node, `nproc` ranks, a free rendezvous port (`--standalone`)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "vlalert.vlm.sft",
        str(job_path),
    ]


def launch(job: SFTJob, stream: IO[str] | None = None) -> dict[str, Any]:
    """Run SFT here (nproc 1) or as `sft.nproc` torchrun ranks (their output to `stream`)."""
    if job.sft.nproc == 1:
        return run_sft(job)
    cmd = torchrun_command(write_job(job), job.sft.nproc)
    # The job's threads are shared by its ranks (Snakemake's OMP_NUM_THREADS is the whole job's)
    threads = job.sft.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, threads // job.sft.nproc)))
    log.info("launching (%s threads per rank): %s", env["OMP_NUM_THREADS"], " ".join(cmd))
    res = subprocess.run(
        cmd, stdout=stream, stderr=subprocess.STDOUT if stream else None, check=False, env=env
    )
    if res.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {res.returncode}: {' '.join(cmd)}")
    return json.loads(job.paths.metrics.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vlalert.vlm.sft JOB.json`: the entry point of every rank (and of tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m vlalert.vlm.sft JOB.json", file=sys.stderr)
        return 2
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    job = SFTJob.model_validate_json(Path(args[0]).read_text())
    run_sft(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
