"""Throughput of cache extraction, with the Conv3d patch embedding and with its Linear rewrite.

DESIGN.md, "Performance targets": the Linear patch embedding is >= 6x faster than the Conv3d on CPU
at D = 1,024 over 3,136 patches (one tick: 8 frames at 448 x 448), and full-scale extraction on one
H100 runs >= 37 ticks/s (Qwen3-VL-4B, bf16), with MFU reported against a measured bf16 matmul peak.
Both variants run in the same process on the same inputs, alternating, so the ratios are not
skewed by a machine that gets busier or quieter during the run:

* layer - Qwen3-VL's own patch-embedding module (transformers' class, D = 1,024) on 3,136 random
  patches: as loaded (Conv3d), after our in-place swap (vlalert.vlm.patch), and transformers'
  fused class (the one `fusion_config={"patch_embeddings": True}` builds); median of many calls.
* extract - `vlalert.cache.extract` end to end (greedy generation + the cached hidden-state
  pass) on random frames, model unpatched vs patched by the in-place swap (transformers' fusion
  is process-global, so it cannot be toggled inside one process; the two compute the same
  product). Random weights never emit the stop token, so every tick generates exactly
  --max-new-tokens tokens: a fixed, comparable amount of work.

Models (all random weights, built in memory from a config; tokenizer trained on the prompt):
  --model tiny   the demo's tiny Qwen3-VL at the demo's 64 x 96 frames (default);
  --model wide   tiny text tower, but the real vision width (1,024) and 448 x 448 frames, so the
                 patch embedding has its real cost;
  --full         GPU only: the full Qwen3-VL-4B widths (text 2,560 x 36 layers, 32/8 heads,
                 MLP 9,728, vocab 151,936; vision 1,024 x 24, MLP 4,096, 16 heads, DeepStack
                 5/11/17), bf16, 8-frame ticks at 448 x 448; adds the bf16 matmul peak and MFU
                 (FLOPs of one extraction batch counted by torch's FlopCounterMode).

    python benchmarks/cache_throughput.py
    python benchmarks/cache_throughput.py --model wide --ticks 4
    python benchmarks/cache_throughput.py --full --ticks 64 --batch 32

Results print and go to cache_throughput.json next to this script (git-ignored).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hostinfo import describe_host

from vlalert.beliefs.schema import Belief  # noqa: E402
from vlalert.beliefs.text import target_text  # noqa: E402
from vlalert.cache.extract import Extractor, run_examples  # noqa: E402
from vlalert.vlm.config import TinyModelConfig, VLMConfig  # noqa: E402
from vlalert.vlm.inputs import build_example  # noqa: E402
from vlalert.vlm.patch import fuse_patch_embed, max_relative_error, unfuse_patch_embed  # noqa: E402
from vlalert.vlm.tiny import prompt_corpus, tiny_config  # noqa: E402
from vlalert.vlm.tokenizer import train_bpe, wrap_tokenizer  # noqa: E402

QWEN3_VL_4B = TinyModelConfig(
    hidden_size=2560,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=9728,
    mrope_section=(24, 20, 20),
    rope_theta=5_000_000.0,
    max_position_embeddings=262_144,
    vision_depth=24,
    vision_hidden_size=1024,
    vision_num_heads=16,
    vision_intermediate_size=4096,
    vision_num_position_embeddings=2304,
    deepstack_visual_indexes=(5, 11, 17),
    tie_word_embeddings=True,
)
QWEN3_VL_4B_VOCAB = 151_936
WIDE = TinyModelConfig(
    vision_depth=2,
    vision_hidden_size=1024,
    vision_num_heads=16,
    vision_intermediate_size=4096,
    vision_num_position_embeddings=2304,
)
# z from 4 layers spread over the depth, r from the one after the third (as 20/24/28/32 and 33 of 36)
LAYERS = {4: ((1, 2, 3, 4), 3), 36: ((20, 24, 28, 32), 33)}


# ---------------------------------------------------------------------------------------- helpers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn, reps: int, device: str) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ layer


@torch.inference_mode()
def bench_layer(dim: int, n_patches: int, reps: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """Conv3d vs Linear on transformers' own Qwen3-VL patch-embedding module, same weights, same input."""
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

    torch.manual_seed(0)
    conv = Qwen3VLVisionPatchEmbed(Qwen3VLVisionConfig(hidden_size=dim)).to(device, dtype).eval()
    ours = copy.deepcopy(conv)
    fuse_patch_embed(torch.nn.ModuleDict({"patch_embed": ours}))
    variants = {"conv3d": conv, "linear_inplace": ours}
    try:  # transformers' own fused class, built without its process-global registration
        from transformers.fusion_mapping import PatchEmbeddingsFusionSpec

        cls = PatchEmbeddingsFusionSpec().make_fused_class(Qwen3VLVisionPatchEmbed)
        lib = cls(Qwen3VLVisionConfig(hidden_size=dim)).to(device, dtype).eval()
        lib.linear_proj.weight.copy_(conv.proj.weight.reshape(dim, -1))
        lib.linear_proj.bias.copy_(conv.proj.bias)
        variants["linear_library"] = lib
    except ImportError:  # transformers without load-time fusion
        pass
    x = torch.randn(n_patches, 3 * 2 * 16 * 16, device=device, dtype=dtype)
    ref = conv(x)
    errors = {name: max_relative_error(ref, m(x)) for name, m in variants.items()}
    for m in variants.values():  # warm-up
        for _ in range(3):
            m(x)
    # interleave the variants, a few calls each per round, and keep each one's median
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rounds = max(1, reps // 5)
    for _ in range(rounds):
        for name, m in variants.items():
            samples[name].append(_median_ms(lambda m=m: m(x), 5, device))
    ms = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "dim": dim,
        "patches": n_patches,
        "calls_per_variant": rounds * 5,
        "median_ms": ms,
        "speedup_vs_conv3d": {name: ms["conv3d"] / v for name, v in ms.items() if name != "conv3d"},
        "max_relative_error": errors,
    }


# ------------------------------------------------------------------------------------- extraction


def build_model(preset: TinyModelConfig, vlm: VLMConfig, vocab: int | None, device: str, dtype: torch.dtype):
    """A random-weight Qwen3-VL at `preset` widths and a BPE tokenizer trained on the prompt texts."""
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    belief = Belief(
        hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.8, ego_involved=True
    )
    corpus = [target_text("A car ahead brakes hard.", belief, "ALERT")] * 4 + prompt_corpus(vlm) * 4
    tok = wrap_tokenizer(train_bpe(corpus, 2048, 2))
    config = tiny_config(vlm, tok)
    if vocab is not None:  # the real vocabulary's size: the embedding and LM head cost what they cost
        config.text_config.vocab_size = vocab
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    ids = config.text_config
    model.generation_config = GenerationConfig(
        eos_token_id=[ids.eos_token_id, ids.pad_token_id], pad_token_id=ids.pad_token_id, do_sample=False
    )
    return model, tok


def make_examples(tok, vlm: VLMConfig, n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    h, w = vlm.image_size
    row = {"video_id": "bench", "tick": 0, "frame_idx": list(range(8)), "fps": 4.0}
    return [
        build_example(row, rng.integers(0, 256, (8, h, w, 3), dtype=np.uint8), tok, vlm, with_target=False)
        for _ in range(n)
    ]


def count_flops(ex: Extractor, examples, batch: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # torch's FlopCounterMode rejects sdpa with grouped-query attention (32 query heads over 8
    # key/value heads): count the same products through eager attention, then restore.
    model = ex.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            run_examples(ex, examples[:batch], batch, teacher_forced=False)
    finally:
        model.set_attn_implementation(before)
    return int(counter.get_total_flops())


def bench_extract(
    model,
    tok,
    vlm: VLMConfig,
    n_ticks: int,
    batch: int,
    max_new: int,
    rounds: int,
    device: str,
    kv_caches: tuple[str, ...] = ("dynamic",),
) -> dict[str, Any]:
    """Extraction ticks/s with the Conv3d patch embedding ("unpatched") and its Linear rewrite
    ("patched"), both with the dynamic key/value cache; and "patched_{kv}" for each other cache of
    `kv_caches` (vlalert.cache.extract: "static" compiles the decoding step on CUDA). Warm-up runs
    each once first (allocator, kernels, compilation: its seconds are reported as `warmup_s`)."""
    depth = model.config.text_config.num_hidden_layers
    layers, policy = LAYERS.get(depth, ((depth,), depth))
    extractors = {"unpatched": "dynamic", "patched": "dynamic"}
    extractors.update({f"patched_{kv}": kv for kv in kv_caches if kv != "dynamic"})
    examples = make_examples(tok, vlm, n_ticks)  # CPU tensors: each batch is moved when it runs
    warmup_s: dict[str, float] = {}
    for kv in dict.fromkeys(extractors.values()):
        t0 = time.perf_counter()
        ex = Extractor(model, tok, layers, policy, max_new, "cached", kv)
        run_examples(ex, examples[:batch], batch, teacher_forced=False)
        _sync(device)
        warmup_s[kv] = round(time.perf_counter() - t0, 2)
    seconds: dict[str, list[float]] = {mode: [] for mode in extractors}
    outputs: dict[str, list] = {}
    for _ in range(rounds):
        for mode, kv in extractors.items():
            (unfuse_patch_embed if mode == "unpatched" else fuse_patch_embed)(model)
            ex = Extractor(model, tok, layers, policy, max_new, "cached", kv)
            _sync(device)
            t0 = time.perf_counter()
            outputs[mode] = run_examples(ex, examples, batch, teacher_forced=False)
            _sync(device)
            seconds[mode].append(time.perf_counter() - t0)
    unfuse_patch_embed(model)
    tps = {mode: n_ticks / statistics.median(s) for mode, s in seconds.items()}

    def z_error(mode: str, reference: str) -> float:
        return max(
            max_relative_error(torch.from_numpy(a.z), torch.from_numpy(b.z))
            for a, b in zip(outputs[reference], outputs[mode], strict=True)
        )

    prompt_tokens = len(examples[0]["input_ids"])
    return {
        "ticks": n_ticks,
        "batch": batch,
        "rounds": rounds,
        "max_new_tokens": max_new,
        "prompt_tokens": prompt_tokens,
        "patches_per_tick": int(examples[0]["pixel_values_videos"].shape[0]),
        "frames": [8, *vlm.image_size],
        "ticks_per_s": tps,
        "speedup_patched": tps["patched"] / tps["unpatched"],
        "speedup_kv_cache": {
            mode: tps[mode] / tps["patched"] for mode in extractors if mode.startswith("patched_")
        },
        "warmup_s": warmup_s,
        "seconds": seconds,
        "z_max_relative_error_patched_vs_unpatched": z_error("patched", "unpatched"),
        "z_max_relative_error_vs_dynamic": {
            mode: z_error(mode, "patched") for mode in extractors if mode.startswith("patched_")
        },
        "generated_tokens_per_tick": statistics.mean(v.n_generated_tokens for v in outputs["patched"]),
        "text_hidden": model.config.text_config.hidden_size,
        "text_layers": depth,
        "vision_hidden": model.config.vision_config.hidden_size,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }


def matmul_peak_tflops(device: str, n: int = 8192, reps: int = 20) -> float:
    """Measured dense bf16 matmul throughput: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms = _median_ms(lambda: a @ b, reps, device)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_bandwidth_tbs(device: str, nbytes: int = 2 << 30, reps: int = 20) -> float:
    """Measured memory bandwidth (TB/s) of a device-to-device copy of `nbytes` (each byte read and
    written once): what a memory-bound decoding step streams at (benchmarks/extraction_roofline.py)."""
    src = torch.empty(nbytes // 2, device=device, dtype=torch.bfloat16).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = _median_ms(lambda: dst.copy_(src), reps, device)
    return 2 * nbytes / (ms * 1e-3) / 1e12


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("tiny", "wide"), default="tiny", help="model for the end-to-end part")
    ap.add_argument("--full", action="store_true", help="GPU: Qwen3-VL-4B widths, bf16, 448 x 448, MFU")
    ap.add_argument("--ticks", type=int, default=None, help="ticks per end-to-end pass")
    ap.add_argument("--batch", type=int, default=None, help="ticks per generate call")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3, help="alternating end-to-end passes per variant")
    ap.add_argument("--layer-reps", type=int, default=50, help="calls per variant for the layer timing")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.full else "cpu"
    if args.full and not torch.cuda.is_available():
        raise SystemExit("--full needs a CUDA GPU")
    dtype = torch.bfloat16 if args.full else torch.float32

    report: dict[str, Any] = {
        "host": describe_host(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.full else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).removeprefix("torch."),
    }
    report["layer"] = bench_layer(1024, 3136, args.layer_reps, device, dtype)
    lay = report["layer"]
    print(f"patch embedding, D=1024 x {lay['patches']} patches ({report['device']}, {report['dtype']}):")
    for name, ms in lay["median_ms"].items():
        speed = lay["speedup_vs_conv3d"].get(name)
        extra = f"  {speed:5.2f}x  max rel err {lay['max_relative_error'][name]:.1e}" if speed else ""
        print(f"  {name:15s} {ms:9.2f} ms{extra}")

    if args.full:
        name, preset, vocab = "qwen3-vl-4b", QWEN3_VL_4B, QWEN3_VL_4B_VOCAB
        vlm = VLMConfig(tiny=preset, image_height=448, image_width=448)
        ticks, batch, max_new = args.ticks or 64, args.batch or 32, args.max_new_tokens or 96
    elif args.model == "wide":
        name, preset, vocab = "wide", WIDE, None
        vlm = VLMConfig(tiny=preset, image_height=448, image_width=448)
        ticks, batch, max_new = args.ticks or 4, args.batch or 2, args.max_new_tokens or 16
    else:
        name, preset, vocab = "tiny", TinyModelConfig(), None
        vlm = VLMConfig()
        ticks, batch, max_new = args.ticks or 32, args.batch or 8, args.max_new_tokens or 64
    model, tok = build_model(preset, vlm, vocab, device, dtype)
    ext = bench_extract(model, tok, vlm, ticks, batch, max_new, args.rounds, device)
    report["extract"] = {"model": name, **ext}
    frames = f"{ext['frames'][0]} frames {ext['frames'][1]}x{ext['frames'][2]}"
    print(
        f"extraction, {name} ({ext['n_parameters'] / 1e6:.1f} M parameters), {ticks} ticks of {frames} "
        f"({ext['patches_per_tick']} patches, {ext['prompt_tokens']} prompt tokens), "
        f"{max_new} new tokens, batch {batch}:"
    )
    for mode, tps in ext["ticks_per_s"].items():
        print(f"  {mode:10s} {tps:8.2f} ticks/s")
    err = ext["z_max_relative_error_patched_vs_unpatched"]
    print(f"  patched / unpatched: {ext['speedup_patched']:.3f}x (z max rel err {err:.1e})")

    if args.full:
        peak = matmul_peak_tflops(device)
        fuse_patch_embed(model)
        flops = count_flops(
            Extractor(model, tok, *LAYERS[36], max_new, "cached"), make_examples(tok, vlm, batch), batch
        )
        per_tick = flops / batch
        achieved = per_tick * ext["ticks_per_s"]["patched"] / 1e12
        report["mfu"] = {
            "bf16_matmul_peak_tflops": peak,
            "flops_per_tick": per_tick,
            "achieved_tflops": achieved,
            "mfu": achieved / peak,
            "target_ticks_per_s": 37.0,
        }
        print(f"  bf16 matmul peak {peak:.0f} TFLOP/s; {per_tick / 1e12:.2f} TFLOP per tick")
        print(f"  MFU {achieved / peak:.1%} at {ext['ticks_per_s']['patched']:.1f} ticks/s (target 37)")

    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
