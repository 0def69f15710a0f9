"""Time one training epoch of each head on synthetic caches of growing size.

DESIGN.md, "Performance targets": an epoch reads the cache at memory speed (Arrow, no per-row
Python objects). This script separates the three costs so a regression shows where it is:

* load   - read the Parquet parts, join the labels, group into clips (once per job);
* data   - one epoch of batch assembly alone (gather float16 rows, pad, cast to float32);
* epoch  - one real training epoch (data + forward + backward + AdamW).

Heads: danger (z), policy with teacher forcing (whole-sequence GRU), and policy with scheduled
sampling at p = 0.5 (tick-by-tick GRU with the FSM in the loop). Head widths are the reference
ones (the input width follows --hidden). Results print as a table and go to heads_epoch.json
next to this script.

    python benchmarks/heads_epoch.py                       # 2k, 8k, 32k ticks at hidden 256
    python benchmarks/heads_epoch.py --sizes 1000 2000 4000 --hidden 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from hostinfo import describe_host

from vlalert.cache.store import write_cache
from vlalert.heads.config import HeadsTrainConfig
from vlalert.heads.data import iter_batches, load_clips
from vlalert.heads.synthetic import synthetic_split
from vlalert.heads.train import build_head, loss_weights, n_params, train_epoch, vectors_for
from vlalert.schemas import write_table

MB = 1e6
MEAN_TICKS = 15  # the reference benchmark averages ~15 ticks per clip (97,649 / 6,406)


def make_split(root: Path, n_ticks: int, hidden: int, seed: int) -> tuple[Path, Path, float]:
    """A synthetic cache of about n_ticks trainable ticks; returns (cache dir, labels, MB on disk)."""
    # each clip yields ~MEAN_TICKS cache rows of which ~75% are trained on (positives lose their
    # post-event tail); the table reports the exact count
    n_clips = max(1, round(n_ticks / (MEAN_TICKS * 0.75)))
    cache, labels = synthetic_split(n_clips, hidden, seed, min_ticks=8, max_ticks=22, prefix=False)
    cache_dir = root / f"cache_{n_ticks}"
    parts = write_cache(cache, cache_dir, part_rows=8192)
    labels_path = root / f"labels_{n_ticks}.parquet"
    write_table("benchmark", labels, labels_path)
    return cache_dir, labels_path, sum(p.stat().st_size for p in parts) / MB


def time_data_pass(clips, batch_clips: int) -> float:
    order = np.random.default_rng(0).permutation(clips.n_clips)
    t0 = time.perf_counter()
    for _ in iter_batches(clips, order, batch_clips):
        pass
    return time.perf_counter() - t0


def time_epoch(kind: str, clips, cfg: HeadsTrainConfig, seed: int = 0) -> tuple[float, int]:
    torch.manual_seed(seed)
    model = build_head(kind, cfg, clips.z_dim if kind == "danger" else clips.r_dim).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = loss_weights(clips, cfg)
    gens = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    # warm-up on a few clips: allocator and kernel selection are not part of an epoch
    warm = load_subset(clips, min(clips.n_clips, cfg.batch_clips))
    train_epoch(kind, model, opt, warm, cfg, weights, 0, *gens)
    t0 = time.perf_counter()
    train_epoch(kind, model, opt, clips, cfg, weights, 0, *gens)
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n_params(model)


def load_subset(clips, n: int):
    """The first n clips as a ClipSet sharing the same vector arrays."""
    end = int(clips.offsets[n])
    return replace(
        clips,
        rows=clips.rows[:end],
        offsets=clips.offsets[: n + 1],
        tick=clips.tick[:end],
        action=clips.action[:end],
        danger=clips.danger[:end],
        video_ids=clips.video_ids[:n],
        is_positive=clips.is_positive[:n],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[2000, 8000, 32000], help="trainable ticks per cache"
    )
    ap.add_argument("--hidden", type=int, default=256, help="VLM hidden width: z = 4*hidden, r = hidden")
    ap.add_argument("--batch-clips", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = HeadsTrainConfig(batch_clips=args.batch_clips, device=args.device)
    variants = {
        "danger": ("danger", base),
        "policy-tf": ("policy", base.model_copy(update={"ss_max": 0.0})),
        "policy-ss0.5": ("policy", base.model_copy(update={"ss_schedule": "constant", "ss_start_epoch": 0})),
    }
    rows = []
    header = f"{'head':<13}{'ticks':>7}{'cache MB':>10}{'load s':>8}{'data s':>8}{'epoch s':>9}"
    header += f"{'ticks/s':>10}{'MB/s':>9}{'data MB/s':>11}{'params':>11}"
    print(header)
    with tempfile.TemporaryDirectory(prefix="heads_epoch_") as tmp:
        for size in args.sizes:
            cache_dir, labels_path, cache_mb = make_split(Path(tmp), size, args.hidden, seed=size)
            for name, (kind, cfg) in variants.items():
                t0 = time.perf_counter()
                clips = load_clips(cache_dir, labels_path, vectors=vectors_for(kind))
                load_s = time.perf_counter() - t0
                vec = clips.z if kind == "danger" else clips.r
                read_mb = clips.n_ticks * vec.shape[1] * vec.itemsize / MB  # float16 bytes an epoch reads
                data_s = time_data_pass(clips, cfg.batch_clips)
                epoch_s, params = time_epoch(kind, clips, cfg)
                row = {
                    "head": name,
                    "ticks": clips.n_ticks,
                    "clips": clips.n_clips,
                    "cache_mb": round(cache_mb, 2),
                    "read_mb": round(read_mb, 2),
                    "load_s": round(load_s, 4),
                    "data_s": round(data_s, 4),
                    "epoch_s": round(epoch_s, 4),
                    "ticks_per_s": round(clips.n_ticks / epoch_s, 1),
                    "mb_per_s": round(read_mb / epoch_s, 2),
                    "data_mb_per_s": round(read_mb / data_s, 1),
                    "params": params,
                }
                rows.append(row)
                print(
                    f"{name:<13}{row['ticks']:>7}{cache_mb:>10.1f}{load_s:>8.3f}{data_s:>8.3f}{epoch_s:>9.2f}"
                    f"{row['ticks_per_s']:>10.0f}{row['mb_per_s']:>9.1f}{row['data_mb_per_s']:>11.0f}{params:>11,}",
                    flush=True,
                )
    report = {
        "hidden": args.hidden,
        "z_dim": 4 * args.hidden,
        "r_dim": args.hidden,
        "batch_clips": args.batch_clips,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "host": describe_host(),
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
