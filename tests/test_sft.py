"""LoRA SFT of the tiny VLM (transformers.Trainer): val loss falls, generations parse, a killed run
resumes to the bit-identical adapter, unsealed checkpoints are ignored, LoRA stays out of the vision
tower, the belief/action rows train, QLoRA and FSDP refuse to run where they cannot."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from sft_helpers import sft_config

from vlalert.beliefs.text import SPECIAL_TOKENS
from vlalert.config import load_config
from vlalert.schemas import SFT_TRAIN_LOG, read_table
from vlalert.vlm import checkpoint as ckpt
from vlalert.vlm.config import SFT_RUNTIME_KEYS, SFTConfig, TinyModelConfig, VLMConfig
from vlalert.vlm.data import (
    Collator,
    StepSampler,
    TickDataset,
    epoch_permutation,
    evenly_spaced,
    global_batch,
    rank_micro_batches,
    trainable_rows,
)
from vlalert.vlm.inputs import collate
from vlalert.vlm.loading import load_model, load_tokenizer
from vlalert.vlm.lora import apply_lora, load_adapted_model, lora_module_names, require_qlora
from vlalert.vlm.loss import count_targets, loss_sum
from vlalert.vlm.sft import (
    FSDP_UNITS,
    Dist,
    SFTJob,
    check_switches,
    evaluate_loss,
    run_sft,
    training_arguments,
    write_job,
)
from vlalert.vlm.tiny import init_tiny_model, tiny_config
from vlalert.workflow import stage_params

VLM = VLMConfig()
REPO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "config", "config.yaml")


@pytest.fixture(scope="module")
def bench(sft_bench):
    """The session's synthetic benchmark and the tiny model built from its targets (conftest.py)."""
    return sft_bench


def _job(bench, run_dir, **overrides) -> SFTJob:
    return SFTJob(
        model_path=str(bench["model"]),
        train=str(bench["train"]),
        val=str(bench["val"]),
        run_dir=str(run_dir),
        sft=sft_config(**overrides),
        model=VLM,
    )


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    # checkpoints kept: test_a_checkpoint_of_another_config_is_not_resumed reuses one
    job = _job(bench, tmp_path_factory.mktemp("run") / "ref", clean_checkpoints=False)
    messages = _Messages()
    logging.getLogger("vlalert.vlm.sft").addHandler(messages)
    logging.getLogger("vlalert.vlm.sft").setLevel(logging.INFO)
    try:
        metrics = run_sft(job)
    finally:
        logging.getLogger("vlalert.vlm.sft").removeHandler(messages)
    return job, metrics | {"_log": messages.lines}


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


# ------------------------------------------------------------------------------------ end to end


def test_val_loss_falls_and_the_parse_rate_is_reported(trained):
    job, metrics = trained
    paths = job.paths
    assert metrics["steps"] == 40 and metrics["resumed_from_step"] is None
    assert metrics["final_val_loss"] / metrics["initial_val_loss"] < 0.7
    assert metrics["val_loss_ratio"] == pytest.approx(metrics["final_val_loss"] / metrics["initial_val_loss"])
    # 4 of the 8 val ticks are generated (evenly spaced); the rate is a count over them
    assert metrics["n_generated"] == 4
    assert metrics["val_parse_rate"] * 4 == pytest.approx(round(metrics["val_parse_rate"] * 4))
    assert 0.0 <= metrics["val_parse_rate"] <= 1.0
    assert json.loads(Path(paths.metrics).read_text())["val_parse_rate"] == metrics["val_parse_rate"]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in Path(paths.adapter).iterdir()
    }


def test_train_log_has_every_step_and_the_schedule(trained):
    job, metrics = trained
    log = pq.read_table(job.paths.train_log)
    assert log.schema.equals(SFT_TRAIN_LOG)
    rows = log.to_pylist()
    assert [r["step"] for r in rows] == list(range(41))
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [0, 10, 20, 30, 40]
    # each evaluation runs once (the Trainer's end-of-training pass does not repeat the last one)
    assert sum(m.startswith("step ") and "val loss" in m for m in metrics["_log"]) == 5
    assert rows[0]["train_loss"] is None and all(r["train_loss"] > 0 for r in rows[1:])
    assert (
        rows[0]["val_loss"] == metrics["initial_val_loss"]
        and rows[-1]["val_loss"] == metrics["final_val_loss"]
    )
    # warmup: lr(step k) = lr * (k - 1) / 4 for the k-th step, then cosine down to 0 at step 40
    assert [rows[k]["lr"] for k in (1, 2, 5)] == pytest.approx([0.0, 0.75e-3, 3e-3])
    assert rows[23]["lr"] == pytest.approx(1.5e-3)  # cosine midpoint: (22 - 4) / 36 = 0.5
    assert rows[12]["epoch"] == pytest.approx(12 * 4 / 16)
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(rows, rows[1:], strict=False))


def test_saved_adapter_reproduces_the_final_val_loss(trained, bench):
    job, metrics = trained
    model = load_adapted_model(bench["model"], job.paths.adapter, device="cpu")
    tok = load_tokenizer(job.paths.adapter)
    rows = trainable_rows(read_table("benchmark", bench["val"]))
    ds = TickDataset(rows, tok, VLM, with_target=True)
    loader = [
        collate([ds[i] for i in range(j, min(j + 8, len(ds)))], tok.pad_token_id)
        for j in range(0, len(ds), 8)
    ]
    assert evaluate_loss(model, loader, Dist()) == pytest.approx(metrics["final_val_loss"], rel=1e-5)


def _kill_after_first_checkpoint(job: SFTJob) -> None:
    job_path = write_job(job)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlalert.vlm.sft", str(job_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not ckpt.complete_checkpoints(job.paths.checkpoints):
            if proc.poll() is not None:
                pytest.fail(
                    f"the SFT process ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not Path(job.paths.metrics).exists(), "the run finished before it could be killed"


@pytest.mark.slow  # a second process killed mid-run, then the resumed and the clean run
def test_resume_after_kill_equals_the_uninterrupted_run(trained, bench, tmp_path):
    ref_job, ref = trained
    job = _job(bench, tmp_path / "killed")
    _kill_after_first_checkpoint(job)
    done = ckpt.complete_checkpoints(job.paths.checkpoints)
    last_step = done[-1][0]
    assert last_step in (10, 20, 30)
    # leftovers of a kill during a later save: the Trainer's files of a checkpoint never sealed
    half = Path(job.paths.checkpoints) / "checkpoint-35"
    shutil.copytree(done[-1][1], half)
    (half / ckpt.SEAL).unlink()
    (half / "optimizer.pt").write_bytes(b"half")
    (Path(job.paths.checkpoints) / "checkpoint-36").mkdir()

    metrics = run_sft(job)
    assert metrics["resumed_from_step"] == last_step
    assert metrics["steps"] == ref["steps"] == 40
    assert not Path(job.paths.checkpoints).exists()  # cleaned once the outputs are written
    ours = load_file(job.paths.adapter_model)
    theirs = load_file(ref_job.paths.adapter_model)
    assert sorted(ours) == sorted(theirs)
    # bit-identical on CPU: the Trainer restores weights, AdamW, schedule and the RNG exactly, and
    # the data order is a function of the step
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    a, b = pq.read_table(job.paths.train_log).to_pylist(), pq.read_table(ref_job.paths.train_log).to_pylist()
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert [x[k] for k in ("train_loss", "val_loss", "lr")] == [
            y[k] for k in ("train_loss", "val_loss", "lr")
        ]
    assert metrics["final_val_loss"] == ref["final_val_loss"]


def test_a_checkpoint_of_another_config_is_not_resumed(trained, bench, tmp_path):
    ref_job, _ = trained
    # one DataLoader worker process (prefetching) under the Trainer: a runtime switch
    job = _job(
        bench,
        tmp_path / "other",
        max_steps=12,
        warmup_steps=2,
        eval_every=6,
        save_every=6,
        gen_max_ticks=0,
        num_workers=1,
        cache_examples=False,
    )
    # a complete checkpoint from the reference run (another config): copied in, must be ignored
    ref_ckpts = ckpt.complete_checkpoints(ref_job.paths.checkpoints)
    shutil.copytree(ref_ckpts[0][1], Path(job.paths.checkpoints) / ref_ckpts[0][1].name)
    (Path(job.paths.checkpoints) / "checkpoint-99").mkdir()  # and an incomplete one
    metrics = run_sft(job)
    assert metrics["resumed_from_step"] is None and metrics["steps"] == 12
    assert metrics["val_parse_rate"] is None and metrics["n_generated"] == 0


# ----------------------------------------------------------------------------------- checkpoints


def _write_checkpoint(root, step, fp="fp", keep=5):
    path = root / ckpt.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    ckpt.seal(path, {"step": step, "fingerprint": fp})
    ckpt.prune(root, fp, keep)
    return path


def test_unsealed_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    good = _write_checkpoint(root, 5)
    assert good.name == "checkpoint-5"
    assert json.loads((good / ckpt.SEAL).read_text())["files"] == ["adapter_model.safetensors"]
    # killed while the Trainer wrote it: files, no seal
    (root / "checkpoint-10").mkdir()
    (root / "checkpoint-10" / "adapter_model.safetensors").write_bytes(b"half")
    # a seal listing a missing file, a truncated seal, one listing nothing
    (root / "checkpoint-20").mkdir()
    (root / "checkpoint-20" / ckpt.SEAL).write_text(
        json.dumps({"step": 20, "fingerprint": "fp", "files": ["a"]})
    )
    (root / "checkpoint-25").mkdir()
    (root / "checkpoint-25" / ckpt.SEAL).write_text("{trunc")
    (root / "checkpoint-27").mkdir()
    (root / "checkpoint-27" / ckpt.SEAL).write_text(
        json.dumps({"step": 27, "fingerprint": "fp", "files": []})
    )
    _write_checkpoint(root, 30, fp="another run")
    assert ckpt.latest_checkpoint(root, "fp") == good
    assert [s for s, _ in ckpt.complete_checkpoints(root)] == [5, 30]
    removed = ckpt.remove_stale(root, "fp")
    assert [p.name for p in removed] == [f"checkpoint-{s}" for s in (10, 20, 25, 27, 30)]
    assert [p.name for p in root.iterdir()] == ["checkpoint-5"]


def test_prune_keeps_the_newest_sealed_checkpoints_of_its_run(tmp_path):
    root = tmp_path / "c"
    _write_checkpoint(root, 90, fp="stale run")
    for step in (10, 20, 30, 40):
        _write_checkpoint(root, step, keep=2)
    assert [s for s, _ in ckpt.complete_checkpoints(root, "fp")] == [30, 40]
    assert [s for s, _ in ckpt.complete_checkpoints(root)] == [30, 40, 90]
    # one being written (no seal yet) is not counted, so keep=1 never deletes the last sealed one
    (root / "checkpoint-50").mkdir()
    ckpt.prune(root, "fp", 1)
    assert [s for s, _ in ckpt.complete_checkpoints(root, "fp")] == [40]


# ------------------------------------------------------------------------------------------ data


def test_trainable_rows_drop_excluded_and_prefix_ticks(bench):
    table = read_table("benchmark", bench["train"])
    rows = trainable_rows(table)
    assert table.num_rows == 18 and len(rows) == 16
    assert all("#prefix" not in r["video_id"] for r in rows)
    assert [(r["video_id"], r["tick"]) for r in rows] == sorted((r["video_id"], r["tick"]) for r in rows)


def test_data_order_is_a_function_of_seed_and_step():
    n, seed = 5, 9
    p0, p1 = epoch_permutation(n, seed, 0).tolist(), epoch_permutation(n, seed, 1).tolist()
    assert sorted(p0) == list(range(5)) and p0 != p1
    assert global_batch(n, seed, 0, 4) == p0[:4]
    assert global_batch(n, seed, 1, 4) == p0[4:] + p1[:3]  # crosses the epoch boundary
    # resuming at step 3 yields exactly the micro-batches an uninterrupted sampler yields from step 3
    full = list(StepSampler(n, seed, 4, 2, 0, 6))
    assert list(StepSampler(n, seed, 4, 2, 3, 6)) == full[6:]
    assert len(StepSampler(n, seed, 4, 2, 3, 6)) == 6
    # ranks take contiguous shares of every global batch
    batch = global_batch(n, seed, 2, 4)
    assert rank_micro_batches(batch, 0, 2, 1) == [[batch[0]], [batch[1]]]
    assert rank_micro_batches(batch, 1, 2, 2) == [batch[2:]]
    both = [i for r in range(2) for mb in StepSampler(n, seed, 4, 1, 0, 3, r, 2) for i in mb]
    assert sorted(both) == sorted(i for s in range(3) for i in global_batch(n, seed, s, 4))
    assert (
        evenly_spaced(10, 4) == [0, 3, 6, 9]
        and evenly_spaced(3, 8) == [0, 1, 2]
        and evenly_spaced(3, 0) == []
    )


# ----------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def tiny(bench):
    return load_model(bench["model"], device="cpu"), load_tokenizer(bench["model"])


def _batch(bench, tok, n=2):
    rows = trainable_rows(read_table("benchmark", bench["train"]))[:n]
    ds = TickDataset(rows, tok, VLM, with_target=True)
    return collate([ds[i] for i in range(n)], tok.pad_token_id)


def test_lora_targets_the_language_model_only(tiny, bench):
    model, tok = tiny
    n_vision_linear = sum(
        isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n.startswith("model.visual")
    )
    assert n_vision_linear > 0  # qkv, proj, linear_fc1/2 and the mergers exist and must stay untouched
    torch.manual_seed(0)
    peft_model = apply_lora(load_model(bench["model"], device="cpu"), tok, SFTConfig(), is_tiny=True)
    names = lora_module_names(peft_model)
    layers = model.config.text_config.num_hidden_layers
    assert len(names) == 7 * layers
    assert all(".language_model.layers." in n and ".visual." not in n for n in names)
    kinds = {n.rsplit(".", 1)[1] for n in names}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not [n for n in trainable if ".visual." in n]
    assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)


def test_belief_and_action_rows_train_and_are_shared_with_the_output_head(tiny, bench):
    model, tok = tiny
    torch.manual_seed(0)
    base = load_model(bench["model"], device="cpu")
    peft_model = apply_lora(base, tok, SFTConfig(train_embeddings="special", lora_dropout=0.0), is_tiny=True)
    deltas = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert len(deltas) == 1  # tied embeddings: one set of rows for the embedding and lm_head
    name, delta = deltas[0]
    assert "embed_tokens" in name and delta.shape == (4, model.config.text_config.hidden_size)
    ids = sorted(tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
    assert peft_model.get_input_embeddings().token_adapter.token_indices["default"] == ids
    assert not peft_model.get_input_embeddings().original_module.weight.requires_grad
    batch = _batch(bench, tok)
    s, n = loss_sum(peft_model, batch)
    s.backward()
    assert n == count_targets(batch["labels"]) > 0
    assert delta.grad is not None and bool((delta.grad.abs().sum(dim=1) > 0).all())
    # the output head reads the same rows: moving them moves the logits of exactly those ids
    with torch.no_grad():
        before = peft_model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, -1]
        delta.add_(1.0)
        after = peft_model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, -1]
    changed = ((after - before).abs() > 1e-6).any(dim=0).nonzero().flatten().tolist()
    assert set(ids) <= set(changed)


def test_untied_output_head_gets_its_own_rows(tiny):
    _, tok = tiny
    cfg = VLMConfig(tiny=TinyModelConfig(tie_word_embeddings=False))
    model = init_tiny_model(tiny_config(cfg, tok), seed=1)
    peft_model = apply_lora(model, tok, SFTConfig(train_embeddings="special"), is_tiny=True)
    deltas = [n for n, p in peft_model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert (
        len(deltas) == 2 and any("lm_head" in n for n in deltas) and any("embed_tokens" in n for n in deltas)
    )


def test_all_rows_train_on_the_tiny_model_by_default(tiny, bench):
    model, tok = tiny
    peft_model = apply_lora(load_model(bench["model"], device="cpu"), tok, SFTConfig(), is_tiny=True)
    (delta,) = [p for n, p in peft_model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert delta.shape[0] == model.get_input_embeddings().weight.shape[0]
    none = apply_lora(load_model(bench["model"], device="cpu"), tok, SFTConfig(train_embeddings="none"), True)
    assert not [n for n, p in none.named_parameters() if p.requires_grad and "trainable_tokens" in n]


def test_target_window_loss_equals_the_full_loss(tiny, bench):
    model, tok = tiny
    batch = _batch(bench, tok, n=3)
    with torch.no_grad():
        s, n = loss_sum(model, batch)
        full = model(**batch).loss  # transformers: mean over every target token, all logits computed
    assert n == count_targets(batch["labels"])
    torch.testing.assert_close(s / n, full, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- config


def test_sft_config_checks_the_batch_split():
    assert SFTConfig(batch_size=32, micro_batch=4, nproc=2).grad_accum == 4
    with pytest.raises(ValidationError, match="multiple of sft.micro_batch"):
        SFTConfig(batch_size=10, micro_batch=4)
    with pytest.raises(ValidationError, match="warmup_steps"):
        SFTConfig(max_steps=10, warmup_steps=11)
    with pytest.raises(ValidationError, match="plain module names"):
        SFTConfig(target_modules=("q_proj", ".*"))
    assert SFTConfig().gpus(is_tiny=False) == 1 and SFTConfig(nproc=4).gpus(is_tiny=False) == 4
    assert SFTConfig().gpus(is_tiny=True) == 0 and SFTConfig(device="cuda").gpus(is_tiny=True) == 1
    assert SFTConfig(device="cpu").gpus(is_tiny=False) == 0


def test_runtime_keys_do_not_rerun_the_stage():
    cfg = load_config(REPO_CONFIG)
    assert cfg.model.is_tiny and cfg.sft.embeddings_mode(cfg.model.is_tiny) == "all"
    base = stage_params(cfg, "sft")
    assert not SFT_RUNTIME_KEYS & set(base["sft"])
    faster = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"micro_batch": 4, "num_workers": 2})})
    assert stage_params(faster, "sft") == base
    other = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"lr": 1e-4})})
    assert stage_params(other, "sft") != base
    assert stage_params(other, "tiny_model") == stage_params(cfg, "tiny_model")


def test_gradient_checkpointing_gives_the_same_gradients(tiny, bench, tmp_path):
    _, tok = tiny
    batch = _batch(bench, tok)
    kwargs = training_arguments(_job(bench, tmp_path, gradient_checkpointing=True), "cpu")
    assert kwargs["activation_checkpointing"] and kwargs["activation_checkpointing_kwargs"] == {
        "use_reentrant": False
    }
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = load_model(bench["model"], device="cpu")
        peft_model = apply_lora(model, tok, SFTConfig(lora_dropout=0.0), is_tiny=True)
        if checkpointing:  # as transformers.Trainer.train switches it on
            peft_model.activation_checkpointing_enable(
                activation_checkpointing_kwargs=kwargs["activation_checkpointing_kwargs"]
            )
            assert (
                model.model.language_model.gradient_checkpointing
                and model.model.visual.gradient_checkpointing
            )
        peft_model.train()
        s, n = loss_sum(peft_model, batch)
        (s / n).backward()
        grads.append({k: p.grad.clone() for k, p in peft_model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------ trainer switches


def test_trainer_switches_map_to_training_arguments(bench, tmp_path):
    job = _job(bench, tmp_path, num_workers=2, prefetch_factor=3)
    cpu = training_arguments(job, "cpu")
    assert cpu["use_cpu"] and not cpu["bf16"] and "fsdp" not in cpu
    assert (cpu["gradient_accumulation_steps"], cpu["per_device_train_batch_size"]) == (2, 2)
    assert (cpu["dataloader_num_workers"], cpu["dataloader_prefetch_factor"]) == (2, 3)
    assert cpu["dataloader_persistent_workers"] and cpu["save_total_limit"] is None
    assert training_arguments(job, "cpu", world=2)["gradient_accumulation_steps"] == 1
    assert training_arguments(_job(bench, tmp_path), "cpu")["dataloader_prefetch_factor"] is None
    gpu = training_arguments(_job(bench, tmp_path, fsdp=True, gradient_checkpointing=True), "cuda")
    assert gpu["bf16"] and not gpu["use_cpu"] and gpu["dataloader_pin_memory"]
    # FSDP2, one unit per decoder layer and vision block, its own activation checkpointing
    assert gpu["fsdp"] is True and not gpu["activation_checkpointing"]
    assert gpu["fsdp_config"]["version"] == 2 and gpu["fsdp_config"]["activation_checkpointing"]
    assert gpu["fsdp_config"]["transformer_layer_cls_to_wrap"] == list(FSDP_UNITS)
    import transformers.models.qwen3_vl.modeling_qwen3_vl as qwen3_vl

    assert all(hasattr(qwen3_vl, name) for name in FSDP_UNITS)
    assert not training_arguments(_job(bench, tmp_path, bf16=False), "cuda")["bf16"]
    # the new switches: fsdp only changes how the run is laid out, bf16 and qlora what it learns
    assert {"fsdp", "prefetch_factor"} <= SFT_RUNTIME_KEYS and not {"bf16", "qlora"} & SFT_RUNTIME_KEYS
    with pytest.raises(ValidationError, match="sft.fsdp and sft.qlora"):
        SFTConfig(fsdp=True, qlora=True)


def test_qlora_and_fsdp_refuse_to_run_where_they_cannot(bench, tmp_path):
    with pytest.raises(RuntimeError, match="sft.qlora needs a CUDA device"):
        check_switches(sft_config(qlora=True), "cpu")
    with pytest.raises(RuntimeError, match="sft.fsdp needs CUDA"):
        check_switches(sft_config(fsdp=True), "cpu")
    check_switches(sft_config(), "cpu")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs the bitsandbytes package"):
            require_qlora("cuda:0")
    # the stage fails before loading anything, and says why
    with pytest.raises(RuntimeError, match="sft.qlora needs a CUDA device"):
        run_sft(_job(bench, tmp_path / "q", qlora=True))
    assert not (tmp_path / "q" / "checkpoints").exists()


def test_training_data_loads_in_worker_processes(bench):
    """The dataset and collate function cross into DataLoader workers (pickled) and give the same batches."""
    tok = load_tokenizer(bench["model"])
    rows = trainable_rows(read_table("benchmark", bench["train"]))
    ds = TickDataset(rows, tok, VLM, with_target=True)
    ds[0]  # an open reader must not travel to the workers
    sampler = StepSampler(len(rows), 0, 4, 2, 0, 3)
    loaders = [
        torch.utils.data.DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=Collator(tok.pad_token_id),
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            persistent_workers=workers > 0,
            multiprocessing_context="spawn" if workers else None,
            generator=torch.Generator().manual_seed(0),
        )
        for workers in (0, 2)
    ]
    pickle.loads(pickle.dumps((ds, Collator(tok.pad_token_id))))
    a, b = (list(loader) for loader in loaders)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k])


def test_ticks_read_from_the_frames_store_are_the_ticks_read_from_the_clips(bench, tmp_path):
    """The workflow's SFT data (windows from the frames stage's raw store) equals decoding the clips,
    also in DataLoader workers, which open the store themselves."""
    from vlalert.frames.store import FrameStores, StoreSpec, clip_frames, write_store

    tok = load_tokenizer(bench["model"])
    table = read_table("benchmark", bench["train"])
    videos = table.select(["video_id", "path"]).to_pylist()
    videos = pa.Table.from_pylist(list({r["video_id"]: r for r in videos}.values()))
    store = tmp_path / "frames.arrow"
    write_store(clip_frames(table, videos), StoreSpec("raw", 95, *VLM.image_size), store)
    rows = trainable_rows(table)
    direct = TickDataset(rows, tok, VLM, with_target=True)
    stored = TickDataset(rows, tok, VLM, with_target=True, frames=FrameStores([store]))
    for i in range(len(rows)):
        a, b = direct[i], stored[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    loader = torch.utils.data.DataLoader(
        stored,
        batch_sampler=StepSampler(len(rows), 0, 4, 2, 0, 3),
        collate_fn=Collator(tok.pad_token_id),
        num_workers=1,
        multiprocessing_context="spawn",
    )
    first = next(iter(loader))
    ref = collate([direct[i] for i in next(iter(StepSampler(len(rows), 0, 4, 2, 0, 3)))], tok.pad_token_id)
    assert torch.equal(first["pixel_values_videos"], ref["pixel_values_videos"])
