"""LoRA SFT of the VLM on the benchmark's train ticks: the sft stage, on `transformers.Trainer`.

What trains: LoRA on the language model and the belief/action rows of the embedding
(vlalert.vlm.lora); the vision tower stays frozen. QLoRA (`sft.qlora`) loads the base 4-bit first.

The Trainer (with accelerate underneath) runs the optimisation: AdamW, linear warmup then cosine
decay to 0, gradient clipping, gradient accumulation, bf16 autocast (`sft.bf16`; default on CUDA
only), activation checkpointing, DDP or FSDP (`sft.fsdp`) over torchrun ranks, DataLoader workers
with prefetch (`sft.num_workers`, `sft.prefetch_factor`), checkpoints and their resumption.
`SFTTrainer` adds only what the library does not do:

- Loss: cross-entropy on the target tokens only, summed over the global batch and divided by its
  number of target tokens (counted over every micro-batch of the step and all ranks, the
  Trainer's `num_items_in_batch`), so the step is the same whether the batch runs as one forward,
  as accumulated micro-batches, or split over data-parallel ranks. Only the logits of the target
  window are computed (`logits_to_keep`; left padding puts every target at the end of its row),
  which spares a (batch x prompt length x 151,936) logits tensor on a real model.
- Data order: a pure function of the seed and the step (vlalert.vlm.data.StepSampler), each rank
  taking its contiguous share of every global batch; the Trainer's resume skips the batches done.
- Validation loss: the token mean over a fixed val subset (each rank its share), at step 0, every
  `eval_every` steps and at the end; the train/val log in Parquet.
- Checkpoints: sealed after every rank saved, fingerprinted, pruned (vlalert.vlm.checkpoint), so a
  run restarted after a kill continues from the newest complete checkpoint of its own config and
  ends with the same adapter (bit-identical on CPU: tests/test_sft.py).

Outputs under the run directory (vlalert.layout.SFTFiles): `adapter/` (peft `save_pretrained`, with
the tokenizer), `train_log.parquet` (vlalert.schemas.SFT_TRAIN_LOG), `metrics.json`; `checkpoints/`
beside them.

Why one module of ~750 lines: it is the SFT stage on transformers.Trainer end to end (processes, the
loss, generation for the val parse rate, outputs, the Trainer subclass and its launch), sectioned in
that order; the parts that stand alone already live beside it (vlm.checkpoint, vlm.data, vlm.lora).
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from vlalert.atomic import atomic_dir, write_json_atomic
from vlalert.beliefs.text import parse_generation
from vlalert.devices import resolve_device, to_device
from vlalert.frames.store import FrameStores
from vlalert.layout import SFTFiles
from vlalert.schemas import SFT_TRAIN_LOG, read_table, write_table
from vlalert.strict import StrictModel
from vlalert.vlm import checkpoint as ckpt
from vlalert.vlm.config import SFTConfig, VLMConfig
from vlalert.vlm.data import Collator, StepSampler, TickDataset, evenly_spaced, rows_sha256, trainable_rows
from vlalert.vlm.inputs import collate
from vlalert.vlm.loading import load_tokenizer
from vlalert.vlm.lora import apply_lora, load_base_model, lora_module_names, trainable_parameters
from vlalert.vlm.loss import count_targets, loss_sum
from vlalert.vlm.tokenizer import ENDOFTEXT, IM_END

log = logging.getLogger("vlalert.vlm.sft")  # not __main__ under `python -m`

# FSDP units: one per decoder layer of the language model and per block of the vision tower
FSDP_UNITS = ("Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock")


class SFTJob(StrictModel):
    """Everything one SFT run reads: written to `job.json` for torchrun-launched ranks."""

    model_path: str  # a model directory or hub id (vlalert.vlm.config.model_location)
    train: str  # results/benchmark/train.parquet
    val: str  # results/benchmark/val.parquet
    run_dir: str  # results/sft/{run}: vlalert.layout.Layout.sft
    sft: SFTConfig
    model: VLMConfig
    # The sources' frames stores (results/frames/{source}.arrow) the ticks' windows are read from;
    # none: from the clips themselves (a seek and a decode per tick).
    frames: tuple[str, ...] = ()

    def frame_stores(self) -> FrameStores | None:
        return FrameStores(self.frames) if self.frames else None

    @property
    def paths(self) -> SFTFiles:
        return SFTFiles(self.run_dir)


# --------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Dist:
    """This process's place among the data-parallel ranks: who evaluates and generates which share."""

    rank: int = 0
    world: int = 1
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

    def shard(self, indices: Sequence[int]) -> list[int]:
        return list(indices[self.rank :: self.world])


def check_switches(cfg: SFTConfig, device: str) -> None:
    """Refuse switches this device cannot honour, before any model is loaded."""
    if cfg.fsdp and not device.startswith("cuda"):
        raise RuntimeError(f"sft.fsdp needs CUDA devices (one per rank), but SFT runs on {device}")
    if cfg.qlora:
        from vlalert.vlm.lora import require_qlora

        require_qlora(device)


def use_bf16(cfg: SFTConfig, device: str) -> bool:
    return device.startswith("cuda") if cfg.bf16 is None else cfg.bf16


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random stream (LoRA dropout); distinct per rank, fixed per (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank, 0x5F7]).generate_state(1)[0])


def _autocast(device: str, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16:
        return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(model: Any, loader: Any, dist: Dist, bf16: bool = False) -> float | None:
    """Token-mean target loss over the loader's batches, summed over ranks; None without targets."""
    was_training = model.training
    model.eval()
    total = count = 0.0
    try:
        for batch in loader:
            with _autocast(dist.device, bf16):
                s, c = loss_sum(model, to_device(batch, dist.device, non_blocking=True))
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
    bf16: bool = False,
) -> list[str]:
    """Greedy generations of the dataset's ticks at `indices` (the dataset built without targets)."""
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for start in range(0, len(indices), batch_size):
            examples = [dataset[i] for i in indices[start : start + batch_size]]
            batch = to_device(collate(examples, tokenizer.pad_token_id), device, non_blocking=True)
            with _autocast(device, bf16):
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


# ------------------------------------------------------------------------------------------ outputs


def write_train_log(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    write_table("sft_train_log", pa.Table.from_pylist([dict(r) for r in rows], schema=SFT_TRAIN_LOG), path)


def save_adapter(model: Any, tokenizer: Any, out: str | os.PathLike[str], state_dict: Any = None) -> None:
    """peft `save_pretrained` plus the tokenizer in the same directory, moved into place at the end
    (`vlalert.atomic.atomic_dir`, which also gives the weights save_pretrained writes 0600 the usual mode)."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), state_dict=state_dict)
        tokenizer.save_pretrained(str(tmp))


# ---------------------------------------------------------------------------------------- training


def model_config_identity(model_path: str) -> dict[str, Any]:
    """What identifies the base model for the checkpoint fingerprint: its path and the text of its
    config (and build info); vlalert.cache.stage.model_files_identity is the cache's, by file stats."""
    path = Path(model_path)
    out: dict[str, Any] = {"model_path": model_path}
    for name in ("config.json", "vlalert_build.json"):
        if (path / name).is_file():
            out[name] = (path / name).read_text()
    return out


def training_arguments(job: SFTJob, device: str, world: int = 1) -> dict[str, Any]:
    """Keyword arguments of `transformers.TrainingArguments` for the job: the sft.* switches mapped."""
    cfg = job.sft
    on_gpu = device.startswith("cuda")
    kwargs: dict[str, Any] = {
        "output_dir": job.paths.checkpoints,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.micro_batch,
        "per_device_eval_batch_size": cfg.eval_batch,
        "gradient_accumulation_steps": cfg.batch_size // (cfg.micro_batch * world),
        "learning_rate": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "optim": "adamw_torch",
        "lr_scheduler_type": "cosine",
        "warmup_steps": cfg.warmup_steps,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "bf16": use_bf16(cfg, device),
        "use_cpu": not on_gpu,
        # FSDP checkpoints activations itself (fsdp_config below)
        "activation_checkpointing": cfg.gradient_checkpointing and not cfg.fsdp,
        "activation_checkpointing_kwargs": {"use_reentrant": False},  # frozen inputs: non-reentrant
        "logging_strategy": "steps",
        "logging_steps": 1,
        "logging_nan_inf_filter": False,  # a non-finite loss stops the run (SFTTrainer.log)
        "eval_strategy": "steps",
        "eval_steps": cfg.eval_every,
        "save_strategy": "steps",
        "save_steps": cfg.save_every,
        "save_total_limit": None,  # pruned once sealed (vlalert.vlm.checkpoint)
        "dataloader_num_workers": cfg.num_workers,
        "dataloader_prefetch_factor": cfg.prefetch_factor if cfg.num_workers else None,
        "dataloader_persistent_workers": cfg.num_workers > 0,
        "dataloader_pin_memory": on_gpu,
        "ddp_find_unused_parameters": False,  # every trainable parameter gets a gradient every step
        "remove_unused_columns": False,
        "report_to": "none",
        "disable_tqdm": True,
    }
    if cfg.fsdp:
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = {
            "version": 2,
            "transformer_layer_cls_to_wrap": list(FSDP_UNITS),
            "reshard_after_forward": True,
            "activation_checkpointing": cfg.gradient_checkpointing,
        }
    return kwargs


@dataclass
class SFTRun:
    """What SFTTrainer needs beside the Trainer's own state: data, val subset, log, identity."""

    cfg: SFTConfig
    dist: Dist
    eval_dist: Dist  # under FSDP every rank evaluates everything (forwards must run in lockstep)
    train_set: TickDataset
    val_loader: Any
    n_train: int
    val_rows: list[dict[str, Any]]
    tokenizer: Any
    fingerprint: str
    rows: list[dict[str, Any]]
    elapsed0: float = 0.0
    started: float = 0.0
    step0: int = 0  # the step this process started from (a resumed run's checkpoint)

    def seconds(self) -> float:
        return self.elapsed0 + time.monotonic() - self.started

    def pace(self, step: int) -> tuple[float, float]:
        """(steps per second in this process, seconds left to max_steps at that rate; inf if unknown)."""
        spent = time.monotonic() - self.started
        rate = (step - self.step0) / spent if spent > 0 and step > self.step0 else 0.0
        return rate, (self.cfg.max_steps - step) / rate if rate > 0 else math.inf

    def epoch(self, step: int) -> float:
        return step * self.cfg.batch_size / self.n_train


class SFTTrainer(Trainer):
    """`transformers.Trainer` with vlalert's loss, data order, val loss and sealed checkpoints."""

    loss_is_scaled_for_ga = True  # compute_loss divides by the tokens of the whole global batch

    def __init__(self, *args: Any, run: SFTRun, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        self.remove_callback(PrinterCallback)  # progress goes to vlalert's log (SFTTrainer.log)
        self.add_callback(SealCheckpoint(run))

    def get_train_dataloader(self) -> Any:
        """This rank's micro-batches of every step in the seeded order (not re-sharded by accelerate)."""
        cfg, dist, a = self.run.cfg, self.run.dist, self.args
        sampler = StepSampler(
            self.run.n_train,
            cfg.seed,
            cfg.batch_size,
            cfg.micro_batch,
            0,
            cfg.max_steps,
            dist.rank,
            dist.world,
        )
        return torch.utils.data.DataLoader(
            self.run.train_set,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=a.dataloader_num_workers,
            prefetch_factor=a.dataloader_prefetch_factor,
            persistent_workers=a.dataloader_persistent_workers,
            pin_memory=a.dataloader_pin_memory,
            # a private generator: a loader iterator must not draw from torch's global generator,
            # whose state the checkpoints restore for dropout
            generator=torch.Generator().manual_seed(0),
        )

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, int]:
        """The step's micro-batches and the target tokens of the global batch (all ranks)."""
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        local = sum(count_targets(b["labels"]) for b in batches)
        return batches, int(self.run.dist.sum([local])[0])

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        total, count = loss_sum(model, inputs)
        # DDP and FSDP average gradients over ranks, hence the factor world
        denominator = int(num_items_in_batch) if num_items_in_batch is not None else max(count, 1)
        loss = total * (self.run.dist.world / denominator)
        return (loss, None) if return_outputs else loss

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> Any:
        """Token-mean val loss (each rank its share); fills in the log row of this step."""
        run, step = self.run, self.state.global_step
        value = evaluate_loss(self.model, run.val_loader, run.eval_dist, bf16=self.args.bf16)
        if run.rows and run.rows[-1]["step"] == step:
            row = run.rows[-1]
        else:  # step 0, before training
            lr = run.cfg.lr if run.cfg.warmup_steps == 0 else 0.0
            row = {"step": step, "epoch": run.epoch(step), "lr": lr, "train_loss": None}
            run.rows.append(row)
        row.update(val_loss=value, seconds=run.seconds())
        log.info("step %d/%d: val loss %.4f", step, run.cfg.max_steps, value)
        metrics = {f"{metric_key_prefix}_loss": value}
        super().log(metrics)
        # as Trainer.evaluate: the evaluation is done (else it runs again after the last step)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """A train step's log: one row of the train log (a non-finite loss stops the run)."""
        if "loss" in logs:
            run, step = self.run, self.state.global_step
            loss, lr = float(logs["loss"]), float(logs["learning_rate"])
            if not math.isfinite(loss):
                raise FloatingPointError(f"SFT loss is {loss} at step {step}")
            row = {"step": step, "epoch": run.epoch(step), "lr": lr, "train_loss": loss, "val_loss": None}
            run.rows.append(row | {"seconds": run.seconds()})
            if step % 10 == 0 or step == 1:
                rate, eta = run.pace(step)
                log.info(
                    "step %d/%d: train %.4f, lr %.2e, %.1f s, %.2f steps/s, ETA %.0f s",
                    step,
                    run.cfg.max_steps,
                    loss,
                    lr,
                    run.seconds(),
                    rate,
                    eta,
                )
        super().log(logs, start_time)


class SealCheckpoint(TrainerCallback):
    """After every rank saved a checkpoint: seal it with the run's identity and log, prune old ones."""

    def __init__(self, run: SFTRun) -> None:
        self.run = run

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        run = self.run
        run.dist.barrier()  # every rank's RNG state is on disk
        if run.dist.is_main:
            path = Path(args.output_dir) / ckpt.checkpoint_name(state.global_step)
            body = {
                "step": state.global_step,
                "fingerprint": run.fingerprint,
                "world_size": run.dist.world,
                "log": run.rows,
                "elapsed_s": run.seconds(),
            }
            ckpt.seal(path, body)
            for old in ckpt.prune(args.output_dir, run.fingerprint, run.cfg.keep_checkpoints):
                log.debug("pruned %s", old)
        return control


def _batches(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def _metrics(trainer: SFTTrainer, job: SFTJob) -> dict[str, Any]:
    """Losses, and the parse rate of greedy generations on val ticks (each rank generates its share)."""
    cfg, vlm, run = job.sft, job.model, trainer.run
    model, dist, val_rows, tok = trainer.model, run.eval_dist, run.val_rows, run.tokenizer
    gen_all = evenly_spaced(len(val_rows), cfg.gen_max_ticks)
    gen_idx = dist.shard(gen_all)
    texts = generate_texts(
        model,
        tok,
        TickDataset(val_rows, tok, vlm, with_target=False, frames=run.train_set.frames),
        gen_idx,
        max_new_tokens=vlm.max_new_tokens,
        batch_size=cfg.gen_batch,
        device=dist.device,
        bf16=trainer.args.bf16,
    )
    ok, correct = dist.sum(parse_counts(texts, [val_rows[i] for i in gen_idx]))
    initial, final = run.rows[0]["val_loss"], run.rows[-1]["val_loss"]
    examples = [
        {"video_id": val_rows[i]["video_id"], "tick": val_rows[i]["tick"], "label": val_rows[i]["action"]}
        | {"text": text}
        for i, text in list(zip(gen_idx, texts, strict=True))[:3]
    ]
    trainables = [p for _, p in trainable_parameters(model)]
    step = trainer.state.global_step
    return {
        "initial_val_loss": initial,
        "final_val_loss": final,
        "val_loss_ratio": final / initial if initial else None,
        "final_train_loss": run.rows[-1]["train_loss"],
        "val_parse_rate": ok / len(gen_all) if gen_all else None,
        "val_action_accuracy": correct / len(gen_all) if gen_all else None,
        "n_generated": len(gen_all),
        "examples": examples,
        "steps": step,
        "epochs": run.epoch(step),
        "n_train_ticks": run.n_train,
        "n_val_ticks": len(val_rows),
        "n_val_evaluated": len(evenly_spaced(len(val_rows), cfg.val_max_ticks)),
        "batch_size": cfg.batch_size,
        "grad_accum": trainer.args.gradient_accumulation_steps,
        "world_size": run.dist.world,
        "device": run.dist.device,
        "bf16": trainer.args.bf16,
        "fsdp": cfg.fsdp,
        "qlora": cfg.qlora,
        "dtype": str(trainables[0].dtype).removeprefix("torch."),
        "base_dtype": str(model.get_input_embeddings().weight.dtype).removeprefix("torch."),
        "train_embeddings": cfg.embeddings_mode(vlm.is_tiny),
        "lora_modules": len(lora_module_names(model)),
        "trainable_parameters": sum(p.numel() for p in trainables),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "wall_s": run.seconds(),
        "fingerprint": run.fingerprint,
    }


def _trainer(job: SFTJob) -> SFTTrainer:
    """Data, model, LoRA and the Trainer of one run (torchrun's environment gives the rank)."""
    cfg, vlm = job.sft, job.model
    started = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, "sft.device")
    check_switches(cfg, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % (cfg.micro_batch * world):
        raise ValueError(f"sft.batch_size {cfg.batch_size} does not split into {world} x {cfg.micro_batch}")
    args = TrainingArguments(**training_arguments(job, device, world))  # joins the process group
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = Dist(rank=args.process_index, world=args.world_size, device=str(args.device))
    train_rows = trainable_rows(read_table("benchmark", job.train))
    val_rows = trainable_rows(read_table("benchmark", job.val))
    if not train_rows or not val_rows:
        raise ValueError(
            f"SFT needs trainable ticks in train and val, got {len(train_rows)} and {len(val_rows)}"
        )
    tok = load_tokenizer(job.model_path, vlm.revision)
    base = load_base_model(
        job.model_path, dtype=vlm.dtype, device=dist.device, qlora=cfg.qlora, revision=vlm.revision
    )
    base.config.use_cache = False
    torch.manual_seed(cfg.seed)  # LoRA init: the same on every rank and in a single process
    model = apply_lora(base, tok, cfg, vlm.is_tiny)
    stores = job.frame_stores()
    fp = ckpt.run_fingerprint(
        {
            "sft": cfg.result_keys(),
            "model": vlm.model_dump(mode="json"),
            "base": model_config_identity(job.model_path),
            "train": rows_sha256(train_rows),
            "val": rows_sha256(val_rows),
            "frames": stores.specs() if stores is not None else None,  # what the pixels went through
        }
    )
    eval_dist = Dist(device=dist.device) if cfg.fsdp else dist
    val_set = TickDataset(
        val_rows, tok, vlm, with_target=True, cache_examples=cfg.cache_examples, frames=stores
    )
    val_idx = eval_dist.shard(evenly_spaced(len(val_rows), cfg.val_max_ticks))
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_sampler=_batches(val_idx, cfg.eval_batch), collate_fn=Collator(tok.pad_token_id)
    )
    train_set = TickDataset(
        train_rows, tok, vlm, with_target=True, cache_examples=cfg.cache_examples, frames=stores
    )
    run = SFTRun(
        cfg, dist, eval_dist, train_set, val_loader, len(train_rows), val_rows, tok, fp, [], started=started
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=Collator(tok.pad_token_id),
        run=run,
    )
    return trainer


def _latest(trainer: SFTTrainer) -> Path | None:
    """The newest checkpoint of this run (stale and half-written ones removed first), with its log."""
    run = trainer.run
    root = Path(trainer.args.output_dir)
    if run.dist.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in ckpt.remove_stale(root, run.fingerprint):
            log.warning("removed checkpoint %s: incomplete, or of another config or data set", stale)
    run.dist.barrier()
    latest = ckpt.latest_checkpoint(root, run.fingerprint)
    if latest is not None:
        state = ckpt.read_state(latest)
        assert state is not None
        run.rows, run.elapsed0 = list(state["log"]), float(state["elapsed_s"])
        run.step0 = int(state["step"])
        log.info("resuming from %s (step %d of %d)", latest, state["step"], run.cfg.max_steps)
    return latest


def _write_outputs(trainer: SFTTrainer, job: SFTJob, metrics: Mapping[str, Any], state_dict: Any) -> None:
    paths = job.paths
    save_adapter(trainer.model, trainer.run.tokenizer, paths.adapter, state_dict)
    write_train_log(trainer.run.rows, paths.train_log)
    write_json_atomic(dict(metrics), paths.metrics)
    if job.sft.clean_checkpoints:
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
    try:
        trainer = _trainer(job)
        run = trainer.run
        latest = _latest(trainer)
        cfg = job.sft
        log.info(
            "SFT: %d train / %d val ticks, %d steps of %d (%d ranks x %d micro x %d accum) on %s, "
            "%d trainable parameters",
            run.n_train,
            len(run.val_rows),
            cfg.max_steps,
            cfg.batch_size,
            run.dist.world,
            cfg.micro_batch,
            trainer.args.gradient_accumulation_steps,
            run.dist.device,
            sum(p.numel() for _, p in trainable_parameters(trainer.model)),
        )
        torch.manual_seed(rank_seed(cfg.seed, run.dist.rank))  # dropout; a resume restores the saved state
        if latest is None:
            trainer.evaluate()
        trainer.train(resume_from_checkpoint=None if latest is None else str(latest))
        metrics = _metrics(trainer, job) | {
            "resumed_from_step": None if latest is None else int(latest.name.removeprefix(ckpt.PREFIX))
        }
        # FSDP: the full adapter is gathered from the shards (every rank takes part)
        state_dict = trainer.accelerator.get_state_dict(trainer.model) if cfg.fsdp else None
        if run.dist.is_main:
            _write_outputs(trainer, job, metrics, state_dict)
        run.dist.barrier()
        return metrics
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------- launch


def write_job(job: SFTJob) -> Path:
    path = Path(job.paths.job)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.model_dump(mode="json"), path)
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
    return json.loads(Path(job.paths.metrics).read_text())


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
