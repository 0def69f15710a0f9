"""One LoRA SFT step of Qwen3-VL-4B at full width: peak memory and step time.

The architecture is built from a hand-written copy of Qwen/Qwen3-VL-4B-Instruct's config.json
(checked against transformers 5.23's Qwen3VLConfig fields; nothing is downloaded), with random
weights in bf16 on CUDA, LoRA as vlalert.vlm.sft applies it (r 32, alpha 64 on
q/k/v/o/gate/up/down of the language model; the four belief/action rows of the tied
embedding), and one tick as the SFT stage feeds it: 8 frames at 448 x 448 (4 temporal groups x 196
merged video tokens), the prompt text and a target. The example's token ids are synthetic (no
tokenizer is needed); their lengths follow the real prompt.

A step is the SFT stage's own: `vlalert.vlm.sft.SFTTrainer` (transformers.Trainer with the
stage's loss and TrainingArguments) runs forward (bf16 autocast on CUDA, fp32 on CPU) + backward
+ gradient clipping + AdamW + the schedule and the step's log row, over the same synthetic batch
each step. The first step is a warmup; the next --steps are timed, in wall and in CPU seconds of
this process. Results print and go to sft_step_full.json next to this script (or --out).

    python benchmarks/sft_step_full.py                       # full width, needs a GPU (~40 GB)
    python benchmarks/sft_step_full.py --tiny-width          # the same shapes at toy width, CPU smoke test
    python benchmarks/sft_step_full.py --batch 2 --gradient-checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hostinfo import describe_host

from vlalert.vlm.config import SFTConfig, TinyModelConfig, VLMConfig
from vlalert.vlm.inputs import IGNORE_INDEX, VIDEO_TYPE, frames_to_pixels
from vlalert.vlm.lora import lora_module_names, wrap_lora
from vlalert.vlm.loss import count_targets
from vlalert.vlm.sft import Dist, SFTJob, SFTRun, SFTTrainer, training_arguments

# Qwen/Qwen3-VL-4B-Instruct config.json (text and vision towers, special token ids)
VOCAB = 151936
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 151655, 151656, 151652, 151653
EOS, PAD = 151645, 151643
# the four belief/action tokens as load_tokenizer adds them to Qwen's 151,669-token vocabulary
BELIEF_ACTION_IDS = [151669, 151670, 151671, 151672]
TEXT_4B: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5_000_000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "bos_token_id": PAD,
    "eos_token_id": EOS,
    "pad_token_id": PAD,
}
VISION_4B: dict[str, Any] = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "in_channels": 3,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "out_hidden_size": 2560,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}


def tiny_width(text: dict[str, Any], vision: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo model's widths (TinyModelConfig defaults), Qwen's vocabulary and token ids kept."""
    t = TinyModelConfig()
    text = text | {
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": t.head_dim,
        "rope_parameters": text["rope_parameters"] | {"mrope_section": list(t.mrope_section)},
    }
    vision = vision | {
        "depth": t.vision_depth,
        "hidden_size": t.vision_hidden_size,
        "intermediate_size": t.vision_intermediate_size,
        "num_heads": t.vision_num_heads,
        "out_hidden_size": t.hidden_size,
        "deepstack_visual_indexes": list(t.deepstack_visual_indexes),
    }
    return text, vision


def build_config(tiny: bool) -> Any:
    from transformers import Qwen3VLConfig

    text, vision = tiny_width(TEXT_4B, VISION_4B) if tiny else (TEXT_4B, VISION_4B)
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=True,
    )


def synthetic_batch(
    batch: int, frames: int, size: int, prompt_tokens: int, target_tokens: int, seed: int
) -> dict[str, torch.Tensor]:
    """`batch` equal-length ticks laid out as vlalert.vlm.inputs lays them out (ids synthetic)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    pixels, grid = frames_to_pixels(video, (size, size))
    per_group = int(grid[0, 1] * grid[0, 2]) // 4

    def text(n: int) -> list[int]:
        return rng.integers(0, PAD, n).tolist()

    ids: list[int] = text(prompt_tokens // 2)  # system turn and role tags
    for _ in range(int(grid[0, 0])):  # per temporal group: "<t seconds>" + its own vision block
        ids += text(5) + [VISION_START] + [VIDEO_TOKEN] * per_group + [VISION_END]
    ids += text(prompt_tokens - prompt_tokens // 2)  # instruction + assistant tag
    n_prompt = len(ids)
    body = text(target_tokens - 5)
    q = len(body) // 3
    target = (
        body[:q] + [BELIEF_ACTION_IDS[0]] + body[q : 2 * q] + [BELIEF_ACTION_IDS[1], BELIEF_ACTION_IDS[2]]
    )
    target += body[2 * q :] + [BELIEF_ACTION_IDS[3], EOS]
    ids += target
    input_ids = torch.tensor([ids] * batch)
    labels = input_ids.clone()
    labels[:, :n_prompt] = IGNORE_INDEX
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": torch.where(input_ids == VIDEO_TOKEN, VIDEO_TYPE, 0),
        "labels": labels,
        "pixel_values_videos": pixels.repeat(batch, 1),
        "video_grid_thw": grid.repeat(batch, 1),
    }


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB (process peak RSS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-width", action="store_true", help="toy widths, same shapes: a CPU smoke test")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=1, help="ticks per step")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=448, help="frame side in pixels (multiple of 32)")
    ap.add_argument("--prompt-tokens", type=int, default=90, help="text tokens of system + instruction")
    ap.add_argument("--target-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warmup step")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("sft_step_full.json"))
    args = ap.parse_args(argv)

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    on_gpu = device == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    from transformers import Qwen3VLForConditionalGeneration, TrainerCallback, TrainingArguments

    cfg = build_config(args.tiny_width)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    model.config.use_cache = False
    n_steps = args.steps + 1
    sft = SFTConfig(
        train_embeddings="special",
        batch_size=args.batch,
        micro_batch=args.batch,
        max_steps=n_steps,
        warmup_steps=0,
        gradient_checkpointing=args.gradient_checkpointing,
        device="cuda" if on_gpu else "cpu",
    )
    model = wrap_lora(model, sft, BELIEF_ACTION_IDS)
    build_s = time.perf_counter() - t0
    batch = synthetic_batch(args.batch, args.frames, args.size, args.prompt_tokens, args.target_tokens, 0)
    weights_gb = torch.cuda.memory_allocated() / 2**30 if on_gpu else None

    class StepTimes(TrainerCallback):
        """Wall and CPU seconds from a step's first forward to the end of its optimiser step."""

        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            self.wall.append(time.perf_counter() - self._t)
            self.cpu.append(time.process_time() - self._c)
            if on_gpu and len(self.wall) == 1:
                torch.cuda.reset_peak_memory_stats()

    class OneBatch(SFTTrainer):
        def get_train_dataloader(self) -> Any:
            return [batch] * n_steps

    with tempfile.TemporaryDirectory() as tmp:
        job = SFTJob(model_path="", train="", val="", run_dir=tmp, sft=sft, model=VLMConfig())
        targs = training_arguments(job, device) | {"eval_strategy": "no", "save_strategy": "no"}
        run = SFTRun(sft, Dist(device=device), Dist(device=device), None, [], args.batch, [], None, "", [])  # type: ignore[arg-type]
        trainer = OneBatch(model=model, args=TrainingArguments(**targs), run=run)
        timer = StepTimes()
        trainer.add_callback(timer)
        trainer.train()
    params = [p for p in model.parameters() if p.requires_grad]
    warmup_s, times = timer.wall[0], timer.wall[1:]
    cpu_times = timer.cpu[1:]
    seq = int(batch["input_ids"].shape[1])
    result = {
        "model": "Qwen3-VL-4B architecture" + (" at tiny width" if args.tiny_width else ""),
        "device": torch.cuda.get_device_name() if on_gpu else describe_host()["cpu_model"],
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "frames": args.frames,
        "size": args.size,
        "seq_len": seq,
        "video_tokens": int((batch["input_ids"][0] == VIDEO_TOKEN).sum()),
        "patches": int(batch["pixel_values_videos"].shape[0]),
        "target_tokens": count_targets(batch["labels"].cpu()),
        "gradient_checkpointing": args.gradient_checkpointing,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "lora_modules": len(lora_module_names(model)),
        "build_s": round(build_s, 2),
        "warmup_step_s": round(warmup_s, 3),
        "step_s": [round(t, 4) for t in times],
        "step_s_median": round(statistics.median(times), 4),
        "step_cpu_s": [round(t, 4) for t in cpu_times],
        "step_cpu_s_median": round(statistics.median(cpu_times), 4),
        "tokens_per_s": round(args.batch * seq / statistics.median(times), 1),
        "weights_gb": None if weights_gb is None else round(weights_gb, 2),
        "peak_memory_gb": round(peak_memory_gb(device), 2),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if on_gpu else "process peak RSS",
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
