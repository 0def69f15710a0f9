"""The fastest cache extraction a GPU allows (a roofline), against the goal of 132 k ticks in <= 1 h.

DESIGN.md asks for full-scale extraction on one H100 in <= 1 h (>= 36.7 ticks/s). The GPU suite
measures what the pipeline reaches (benchmarks/results/gpu_suite.json: 11.6-12.4 ticks/s on an H200
at batch 128); this script says what no implementation can beat, from the architecture and the
pipeline's settings alone, so that a measured rate can be read against it:

- FLOPs of one tick, by part (matrix products only, as torch's FlopCounterMode counts them, which a
  test checks on a small model): the vision tower over the tick's patches; the prompt's prefill
  (text and video tokens, logits of the last one); greedy decoding of `new_tokens` tokens, one step
  at a time over the growing key/value cache; the cached hidden-state pass (the last prompt token
  and the generated ones, vlalert.cache.extract). Attention is counted over the full score matrix
  (what eager attention computes; causal kernels skip about half of the prefill's, ~2 % of a tick).
- Bytes of one decoding step of a batch: every text weight once (the embedding, tied to the LM head,
  included) and the whole key/value cache of the batch, in bf16.
- Time of a batch at the roofline: the prefill, vision and hidden pass at the matmul peak, each
  decoding step at max(its FLOPs / peak, its bytes / memory bandwidth). Nothing else (kernel
  launches, the Python of generate, padding, the CPU side) is charged, so the result is an upper
  bound on ticks/s.

Devices: the vendors' dense bf16 and HBM figures (H100 SXM 989 TFLOP/s, 3.35 TB/s; H200 989 TFLOP/s,
4.8 TB/s) and, when benchmarks/results/gpu_suite.json holds one, the measured matmul peak of the GPU
that ran it (its bandwidth is the vendor's unless the suite measured it too).

    python benchmarks/extraction_roofline.py                       # config/full.yaml's settings
    python benchmarks/extraction_roofline.py --new-tokens 96 --batch 256

Results print as a table and go to benchmarks/results/extraction_roofline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GOAL_TICKS = 132_000
GOAL_HOURS = 1.0
BF16_BYTES = 2


@dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float  # dense bf16 matrix products
    bandwidth_tbs: float  # HBM, TB/s
    source: str  # "vendor" or what measured it


VENDOR = (
    Device("H100 SXM", 989.0, 3.35, "vendor"),
    Device("H200", 989.0, 4.8, "vendor"),
)


@dataclass(frozen=True)
class Tick:
    """What one tick feeds the model: `prompt_tokens` (text and merged video tokens), `patches` of
    the vision tower in `groups` temporal groups (attention runs within a group), `new_tokens`
    generated."""

    prompt_tokens: int
    patches: int
    groups: int
    new_tokens: int


def _text_layer_params(t: Any) -> int:
    """Weights of one text decoder layer's projections (attention and gated MLP; norms are noise)."""
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    return t.hidden_size * (2 * q + 2 * kv) + 3 * t.hidden_size * t.intermediate_size


def _text_attention_flops(t: Any, queries: float, keys: float) -> float:
    """Score and value products of `queries` tokens over `keys` keys, all layers."""
    return 4.0 * t.num_attention_heads * t.head_dim * queries * keys * t.num_hidden_layers


def _text_flops(t: Any, tokens: float, keys: float, logits: int) -> float:
    """`tokens` tokens through every text layer, each over `keys` keys, and `logits` rows of logits."""
    return (
        2.0 * _text_layer_params(t) * t.num_hidden_layers * tokens
        + _text_attention_flops(t, tokens, keys)
        + 2.0 * t.hidden_size * t.vocab_size * logits
    )


def tick_flops(config: Any, tick: Tick) -> dict[str, float]:
    """FLOPs of one tick's extraction by part (see module doc); `config` a Qwen3VLConfig."""
    t, v = config.text_config, config.vision_config
    p, s = tick.patches, tick.prompt_tokens
    patch_in = v.in_channels * v.temporal_patch_size * v.patch_size**2
    block = 2.0 * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
    merged = p / v.spatial_merge_size**2
    wide = v.hidden_size * v.spatial_merge_size**2
    mergers = 1 + len(v.deepstack_visual_indexes)
    vision = (
        2.0 * p * patch_in * v.hidden_size
        + v.depth * (p * block + 4.0 * v.hidden_size * (p / tick.groups) * p)
        + mergers * merged * 2.0 * (wide * wide + wide * v.out_hidden_size)
    )
    # the prefill gives the first token; step j = 1 .. new_tokens - 1 feeds one token over s + j keys
    decode = sum(_text_flops(t, 1, s + j, 1) for j in range(1, tick.new_tokens))
    hidden = tick.new_tokens + 1  # the last prompt token and the generated ones, logits of the last
    return {
        "vision": vision,
        "prefill": _text_flops(t, s, s, 1),
        "decode": decode,
        "hidden_pass": _text_flops(t, hidden, s + tick.new_tokens, 1),
    }


def text_weight_bytes(config: Any) -> float:
    """bf16 bytes of the text tower's weights (read once per decoding step; the embedding is the LM head)."""
    t = config.text_config
    return BF16_BYTES * (_text_layer_params(t) * t.num_hidden_layers + t.vocab_size * t.hidden_size)


def kv_bytes_per_token(config: Any) -> float:
    t = config.text_config
    return BF16_BYTES * 2.0 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim


def roofline(config: Any, tick: Tick, batch: int, device: Device) -> dict[str, Any]:
    """Seconds per batch at the roofline by part, the ticks/s ceiling and the hours for the goal."""
    peak = device.peak_tflops * 1e12
    bw = device.bandwidth_tbs * 1e12
    f = tick_flops(config, tick)
    weights, kv = text_weight_bytes(config), kv_bytes_per_token(config)
    decode_s = memory_bound_steps = 0.0
    for j in range(1, tick.new_tokens):
        keys = tick.prompt_tokens + j
        flops_s = batch * _text_flops(config.text_config, 1, keys, 1) / peak
        bytes_s = (weights + batch * keys * kv) / bw
        decode_s += max(flops_s, bytes_s)
        memory_bound_steps += bytes_s > flops_s
    parts = {
        "vision_s": batch * f["vision"] / peak,
        "prefill_s": batch * f["prefill"] / peak,
        "decode_s": decode_s,
        "hidden_pass_s": batch * f["hidden_pass"] / peak,
    }
    rate = batch / sum(parts.values())
    return {
        "device": asdict(device),
        "batch": batch,
        "seconds_per_batch": parts,
        "decode_steps_memory_bound": int(memory_bound_steps),
        "ticks_per_s_ceiling": rate,
        "hours_132k_at_ceiling": GOAL_TICKS / rate / 3600,
        "share_of_ceiling_goal_needs": GOAL_TICKS / (GOAL_HOURS * 3600) / rate,
    }


def rounded(value: Any, digits: int = 4) -> Any:
    """`value` with every float to `digits` significant digits (for the JSON a reader reads)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def qwen3_vl_4b_config() -> Any:
    """The Qwen3VLConfig at Qwen3-VL-4B's widths and vocabulary (no weights are built)."""
    import cache_throughput as ct

    from vlalert.vlm.config import VLMConfig
    from vlalert.vlm.tiny import tiny_config

    vlm = VLMConfig(tiny=ct.QWEN3_VL_4B, image_height=448, image_width=448)
    config = tiny_config(vlm, _tokenizer(vlm))
    config.text_config.vocab_size = ct.QWEN3_VL_4B_VOCAB
    return config


def _tokenizer(vlm: Any) -> Any:
    from vlalert.beliefs.schema import Belief
    from vlalert.beliefs.text import target_text
    from vlalert.vlm.tiny import prompt_corpus
    from vlalert.vlm.tokenizer import train_bpe, wrap_tokenizer

    belief = Belief(
        hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.8, ego_involved=True
    )
    corpus = [target_text("A car ahead brakes hard.", belief, "ALERT")] * 4 + prompt_corpus(vlm) * 4
    return wrap_tokenizer(train_bpe(corpus, 2048, 2))


def pipeline_tick(image: tuple[int, int], new_tokens: int, prompt_tokens: int | None) -> Tick:
    """A tick as config/full.yaml's cache stage feeds it (8 frames; prompt tokens measured by the GPU
    suite, else counted with the benchmarks' tokenizer, which splits the prompt's text differently
    from Qwen's by a few tokens)."""
    import cache_throughput as ct

    from vlalert.vlm.config import VLMConfig

    vlm = VLMConfig(tiny=ct.QWEN3_VL_4B, image_height=image[0], image_width=image[1])
    grid_t = 8 // vlm.temporal_patch_size
    patches = grid_t * (image[0] // vlm.patch_size) * (image[1] // vlm.patch_size)
    if prompt_tokens is None:
        ex = ct.make_examples(_tokenizer(vlm), vlm, 1)[0]
        prompt_tokens = int(ex["input_ids"].shape[0])
    return Tick(prompt_tokens=prompt_tokens, patches=patches, groups=grid_t, new_tokens=new_tokens)


def measured_devices(suite_json: Path) -> list[Device]:
    """The GPU of a gpu_suite.json run at its measured matmul peak (and bandwidth, when measured;
    the vendor's otherwise). The section is one run's dict, or several runs' keyed by run."""
    if not suite_json.exists():
        return []
    suite = json.loads(suite_json.read_text())
    peak = suite.get("sections", {}).get("peak", {})
    runs = [peak] if "tflops" in peak else [r for r in peak.values() if isinstance(r, dict) and "tflops" in r]
    name = str(suite.get("device", ""))
    vendor = next((d for d in VENDOR if d.name.split()[0] in name), None)
    if not runs or vendor is None:
        return []
    measured_bw = [r["bandwidth_tbs"] for r in runs if r.get("bandwidth_tbs")]
    how = "measured matmul peak" + (" and bandwidth" if measured_bw else f", {vendor.name} vendor bandwidth")
    return [
        Device(
            f"{name} (suite)",
            round(max(r["tflops"] for r in runs), 1),
            round(max(measured_bw), 2) if measured_bw else vendor.bandwidth_tbs,
            f"{suite_json.name}: {how}",
        )
    ]


def main() -> None:
    import yaml

    from vlalert.config import validate_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=HERE.parent / "config" / "full.yaml")
    ap.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: the config's, and 256)")
    ap.add_argument("--new-tokens", type=int, nargs="+", help="generated tokens (default: the config's)")
    ap.add_argument("--suite", type=Path, default=HERE / "results" / "gpu_suite.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "extraction_roofline.json")
    args = ap.parse_args()

    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    image = (cfg.model.image_height, cfg.model.image_width)
    suite = json.loads(args.suite.read_text()) if args.suite.exists() else {}
    measured = suite.get("sections", {}).get("extract", {}).get("by_batch", {})
    prompt = next((int(v["prompt_tokens"]) for v in measured.values() if "prompt_tokens" in v), None)
    batches = args.batch or sorted({cfg.cache.batch_size, 256})
    news = args.new_tokens or [cfg.model.max_new_tokens]
    config = qwen3_vl_4b_config()
    devices = [*VENDOR, *measured_devices(args.suite)]
    rows, flops = [], {}
    for n in news:
        tick = pipeline_tick(image, n, prompt)
        flops[str(n)] = {k: v / 1e12 for k, v in tick_flops(config, tick).items()}
        for device in devices:
            for b in batches:
                rows.append({"tick": asdict(tick), **roofline(config, tick, b, device)})

    print(
        f"Qwen3-VL-4B, bf16, 8 frames at {image[0]} x {image[1]}; "
        f"goal {GOAL_TICKS:,} ticks in {GOAL_HOURS:g} h"
    )
    for n, f in flops.items():
        total = sum(f.values())
        parts = ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f} %)" for k, v in f.items())
        print(f"TFLOP per tick at {n} new tokens: {total:.2f} = {parts}")
    head = (
        "device",
        "batch",
        "new tok",
        "vision s",
        "prefill s",
        "decode s",
        "hidden s",
        "ceiling t/s",
        "h @ceil",
        "goal needs",
    )
    print(" | ".join(head))
    for r in rows:
        s = r["seconds_per_batch"]
        print(
            f"{r['device']['name']} | {r['batch']} | {r['tick']['new_tokens']} | {s['vision_s']:.2f} | "
            f"{s['prefill_s']:.2f} | {s['decode_s']:.2f} | {s['hidden_pass_s']:.2f} | "
            f"{r['ticks_per_s_ceiling']:.1f} | {r['hours_132k_at_ceiling']:.2f} | "
            f"{100 * r['share_of_ceiling_goal_needs']:.0f} % of ceiling"
        )
    out = {
        "benchmark": "extraction_roofline",
        "model": "Qwen3-VL-4B architecture (benchmarks/cache_throughput.py QWEN3_VL_4B), bf16",
        "image": list(image),
        "frames": 8,
        "goal": {"ticks": GOAL_TICKS, "hours": GOAL_HOURS},
        "tflop_per_tick": flops,
        "text_weight_gb": text_weight_bytes(config) / 1e9,
        "kv_cache_kb_per_token": kv_bytes_per_token(config) / 1e3,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rounded(out), indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
