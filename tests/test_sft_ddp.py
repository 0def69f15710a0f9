"""Data-parallel SFT: two gloo ranks under torchrun (DDP through transformers.Trainer) train the same
adapter as one process with the same global batch (each rank takes its share of every batch and
gradient accumulation becomes data parallelism; gradients are averaged)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from sft_helpers import sft_config

from vlalert.vlm import checkpoint as ckpt
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.sft import SFTJob, launch, torchrun_command

# LoRA dropout off: the ranks draw their own dropout masks, which a single process cannot reproduce.
SETTINGS = {
    "max_steps": 3,
    "batch_size": 4,
    "micro_batch": 2,
    "warmup_steps": 1,
    "eval_every": 3,
    "save_every": 2,
    "lora_dropout": 0.0,
    "gen_max_ticks": 3,
    "gen_batch": 2,
    "clean_checkpoints": False,  # the step-2 checkpoint is inspected
}


def _job(root, bench, name, nproc):
    return SFTJob(
        model_path=str(bench["model"]),
        train=str(bench["train"]),
        val=str(bench["val"]),
        run_dir=str(root / name),
        sft=sft_config(**SETTINGS, nproc=nproc),
        model=VLMConfig(),
    )


def test_torchrun_command_runs_the_module():
    cmd = torchrun_command("run/job.json", 4)
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "vlalert.vlm.sft",
        "run/job.json",
    ]


@pytest.mark.slow
def test_two_gloo_ranks_train_the_single_process_adapter(sft_bench, tmp_path):
    bench = sft_bench
    single_job = _job(tmp_path, bench, "single", nproc=1)
    ddp_job = _job(tmp_path, bench, "ddp", nproc=2)
    assert (single_job.sft.grad_accum, ddp_job.sft.grad_accum) == (2, 1)  # same global batch of 4

    single = launch(single_job)
    with open(tmp_path / "torchrun.log", "w") as stream:
        try:
            ddp = launch(ddp_job, stream=stream)
        except RuntimeError:
            pytest.fail((tmp_path / "torchrun.log").read_text()[-4000:])

    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["steps"] == single["steps"] == 3
    # the step-2 checkpoint (the Trainer's files, sealed) holds both ranks' random states
    (_, step2), *_ = ckpt.complete_checkpoints(ddp_job.paths.checkpoints)
    assert step2.name == "checkpoint-2"
    assert {"rng_state_0.pth", "rng_state_1.pth", "adapter_model.safetensors", "optimizer.pt"} <= set(
        ckpt.read_state(step2)["files"]
    )
    # generation is split over the ranks and counted once
    assert ddp["n_generated"] == single["n_generated"] == 3

    a = pq.read_table(single_job.paths.train_log).to_pylist()
    b = pq.read_table(ddp_job.paths.train_log).to_pylist()
    for x, y in zip(a, b, strict=True):
        assert x["step"] == y["step"] and x["lr"] == pytest.approx(y["lr"])
        for key in ("train_loss", "val_loss"):
            assert (x[key] is None) == (y[key] is None)
            if x[key] is not None:
                assert x[key] == pytest.approx(y[key], rel=1e-4)
    ours = load_file(ddp_job.paths.adapter_model)
    theirs = load_file(single_job.paths.adapter_model)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-5, rtol=1e-4)
