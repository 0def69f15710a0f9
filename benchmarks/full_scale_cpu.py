"""The CPU stages at the published scale, without videos: time and peak memory, linear in ticks.

The published run is ~10 k clips and ~132 k ticks from four sources. This builds that case from
tables alone (no video is decoded: the stages below never read one) and runs the library code of
each CPU stage on it, as the Snakemake jobs do:

  relabel    vlalert.labels.label_source, per source, with a gate table for every tick
  beliefs    vlalert.beliefs.stage.generate_beliefs, provider `rules`, per source
  benchmark  vlalert.benchmark.build_benchmark over the four sources
  score      vlalert.score.score_split on the test split (baselines: gate, badas, vlm, constants;
             the heads need a cache of hidden states, which is the GPU stage)
  summary    vlalert.summary.summarize_scores

Clips per source (durations as the sources ship them): Nexar 1,500 x 40 s at 30 fps; DoTA 4,700
x 8 s at 10 fps (prefix negatives on, gated); DAD 1,750 x 5 s at 20 fps; DADA-2000 2,050 x 17 s at
30 fps (prefix negatives on): 10,000 clips, ~131 k ticks. Half the clips are positives.

Each scale (--scales, fractions of that case) runs in its own process, so the peak RSS is that
scale's alone; time per stage is wall and CPU (process) seconds; linearity is the ratio of CPU
seconds per tick between the largest and the smallest scale. A dry run of the full-scale job graph
(config/full.yaml's DAG with `cache.shards` 16 and 5 seeds x 2 heads) is timed with `snakemake -n`.

    python benchmarks/full_scale_cpu.py [--scales 0.25,0.5,1] [--out benchmarks/results/full_scale_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hostinfo import describe_host

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# (source kind, clips, seconds, fps, prefix negatives)
SOURCES: tuple[tuple[str, int, float, float, bool], ...] = (
    ("nexar", 1500, 40.0, 30.0, False),
    ("dota", 4700, 8.0, 10.0, True),
    ("dad", 1750, 5.0, 20.0, False),
    ("dada2000", 2050, 17.0, 30.0, True),
)
STAGES = ("relabel", "beliefs", "benchmark", "score", "summary")


def workflow_config(results: str) -> Any:
    from vlalert.config import validate_config

    sources = {
        kind: {
            "kind": kind,
            "root": f"resources/{kind}",
            "gate_provider": "scores_file",
            "gate_scores": f"resources/{kind}/gate.parquet",
            "prefix_negatives": prefix,
        }
        for kind, _, _, _, prefix in SOURCES
    }
    return validate_config(
        {
            "run": "full-scale-cpu",
            "results": results,
            "demo": {"enabled": False},
            "sources": sources,
            "labels": {"gated_sources": ["dota"]},
            "beliefs": {"provider": "rules"},
        }
    )


def videos_table(kind: str, n: int, seconds: float, fps: float, seed: int) -> Any:
    """A VIDEOS table of n clips: half positives, risky time 2-6 s before the event near the end."""
    import numpy as np
    import pyarrow as pa

    from vlalert.schemas import VIDEOS

    rng = np.random.default_rng(seed)
    pos = np.arange(n) % 2 == 0
    t_event = np.where(pos, seconds - rng.uniform(0.3, 1.5, n), np.nan)
    t_risky = np.where(pos, t_event - rng.uniform(0.5, 4.0, n), np.nan)
    n_frames = np.full(n, int(round(seconds * fps)), np.int32)
    ids = [f"{kind}_{i:05d}" for i in range(n)]
    return pa.table(
        {
            "video_id": ids,
            "source": [kind] * n,
            "path": [f"resources/{kind}/{v}.mp4" for v in ids],
            "fps": np.full(n, fps),
            "n_frames": n_frames,
            "duration_s": n_frames / fps,
            "width": np.full(n, 1280, np.int32),
            "height": np.full(n, 720, np.int32),
            "official_split": pa.nulls(n, pa.string()),
            "is_positive": pos,
            "t_risky_s": pa.array(t_risky, pa.float64(), from_pandas=True),
            "t_event_s": pa.array(t_event, pa.float64(), from_pandas=True),
            "ego_involved": pa.array(np.where(pos, rng.random(n) < 0.7, False)),
            "event_type": pa.array(["collision" if p else None for p in pos], pa.string()),
            "meta": ["{}"] * n,
        },
        schema=VIDEOS,
    )


def gate_table(videos: Any, cfg: Any, seed: int) -> Any:
    """A score for every tick of every clip (provider `badas` for every other clip)."""
    import numpy as np
    import pyarrow as pa

    from vlalert.ticks import tick_times

    rng = np.random.default_rng(seed)
    vids, ts, by = [], [], []
    for i, (vid, nf, fps) in enumerate(
        zip(
            videos.column("video_id").to_pylist(),
            videos.column("n_frames").to_pylist(),
            videos.column("fps").to_pylist(),
            strict=True,
        )
    ):
        t = tick_times(nf, fps, cfg.ticks, cfg.window)
        vids += [vid] * t.size
        ts.append(t)
        by += ["badas" if i % 2 else "consensus"] * t.size
    t_all = np.concatenate(ts) if ts else np.zeros(0)
    return pa.table(
        {
            "video_id": pa.array(vids, pa.string()),
            "t_s": t_all,
            "p_collision": rng.random(t_all.size),
            "provider": pa.array(by, pa.string()),
        }
    )


def empty(name: str) -> Any:
    from vlalert.schemas import SCHEMAS

    return SCHEMAS[name].empty_table()


def text_cache(bench: Any, folder: Path) -> Path:
    """A cache of the test split holding generated texts only (z/r of width 4): the baselines' input."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlalert.cache.store import vector_array

    n = bench.num_rows
    folder.mkdir(parents=True, exist_ok=True)
    texts = np.where(np.arange(n) % 7 == 0, "<|ACTION|> ALERT <|/ACTION|>", "<|ACTION|> SILENT <|/ACTION|>")
    pq.write_table(
        pa.table(
            {
                "video_id": bench.column("video_id"),
                "tick": bench.column("tick").cast(pa.int32()),
                "z": vector_array(np.zeros((n, 4), np.float16)),
                "r": vector_array(np.zeros((n, 4), np.float16)),
                "generated_text": pa.array(texts.tolist(), pa.string()),
            }
        ),
        folder / "part-00000.parquet",
    )
    return folder


def run_scale(scale: float) -> dict[str, Any]:
    """Every stage at `scale` x the published case, in this process."""
    import pyarrow as pa

    from vlalert.beliefs.stage import generate_beliefs
    from vlalert.benchmark import build_benchmark
    from vlalert.labels import label_source
    from vlalert.score import score_split
    from vlalert.summary import summarize_scores

    cfg = workflow_config("results/full-scale-cpu")
    videos = {
        kind: videos_table(kind, max(2, int(n * scale)), sec, fps, seed)
        for seed, (kind, n, sec, fps, _) in enumerate(SOURCES)
    }
    gates = {kind: gate_table(v, cfg, 100 + i) for i, (kind, v) in enumerate(videos.items())}
    times: dict[str, dict[str, float]] = {}

    def timed(stage: str, fn):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        t = times.setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0})
        t["wall_s"] += time.perf_counter() - w0
        t["cpu_s"] += time.process_time() - c0
        return out

    labels = {k: timed("relabel", lambda k=k: label_source(videos[k], gates[k], k, cfg)) for k in videos}
    beliefs = {k: timed("beliefs", lambda k=k: generate_beliefs(labels[k], videos[k], cfg)) for k in videos}
    tables, manifest = timed(
        "benchmark",
        lambda: build_benchmark(
            labels,
            videos,
            {k: empty("rejected") for k in videos},
            cfg,
            beliefs,
            {k: empty("consensus") for k in videos},
        ),
    )
    test = tables["test"]
    with tempfile.TemporaryDirectory() as td:
        cache = text_cache(test, Path(td) / "cache")
        gate = pa.concat_tables(gates.values())
        scores = timed("score", lambda: score_split(test, cache, {}, gate, cfg.heads.fsm))
    summary = timed("summary", lambda: summarize_scores(scores, test, cfg.scoring, cfg.ticks.hz))
    n_ticks = sum(t.num_rows for t in labels.values())
    return {
        "scale": scale,
        "clips": sum(v.num_rows for v in videos.values()),
        "ticks": n_ticks,
        "benchmark_rows": {s: t.num_rows for s, t in tables.items()},
        "score_rows": scores.num_rows,
        "summary_rows": summary.num_rows,
        "stages": {k: {m: round(v, 3) for m, v in t.items()} for k, t in times.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }


def _missing_inputs(stderr: str) -> list[str]:
    """The files a MissingInputException lists under "affected files:"."""
    lines = stderr.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() == "affected files:":
            for follow in lines[i + 1 :]:
                if not follow.startswith("        "):
                    break
                out.append(follow.strip())
    return out


def dry_run_full_graph() -> dict[str, Any]:
    """`snakemake -n` of config/full.yaml with 16 cache shards and 5 seeds: the jobs and the seconds.

    The sources' files that no rule makes (consensus CSVs, the Open-BADAS weights) are stood in for
    by empty files in a scratch directory, created as the dry run names them."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    raw.setdefault("cache", {})["shards"] = 16
    raw.setdefault("heads", {})["seeds"] = [1, 2, 3, 4, 5]
    snake = str(Path(sys.executable).with_name("snakemake"))
    with tempfile.TemporaryDirectory() as td:
        cfg = Path(td) / "full.yaml"
        cfg.write_text(yaml.safe_dump(raw))
        cmd = [snake, "-n", "-q", "rules", "-s", str(REPO / "Snakefile"), "--directory", td]
        cmd += ["--configfile", str(cfg)]
        for _ in range(10):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=td)
            wall = time.perf_counter() - t0
            missing = _missing_inputs(res.stdout + res.stderr) if res.returncode else []
            if not missing:
                break
            for name in missing:
                path = Path(td) / name
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                else:
                    path.mkdir(parents=True, exist_ok=True)
    jobs = 0
    for line in res.stdout.splitlines():  # the job-count table: "rule    count" rows, "total N"
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return {
        "wall_s": round(wall, 2),
        "jobs": jobs,
        "returncode": res.returncode,
        "stderr_tail": res.stderr[-800:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="0.25,0.5,1")
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)  # run one scale in this process
    ap.add_argument("--out", type=Path, default=HERE / "results" / "full_scale_cpu.json")
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(run_scale(args.one)))
        return
    env = dict(os.environ, POLARS_MAX_THREADS="2")
    results = []
    for s in (float(x) for x in args.scales.split(",")):
        res = subprocess.run(
            [sys.executable, __file__, "--one", str(s)], capture_output=True, text=True, env=env, check=False
        )
        if res.returncode:
            raise SystemExit(f"scale {s} failed:\n{res.stderr[-3000:]}")
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(
        f"{'scale':>6} {'clips':>7} {'ticks':>8} "
        + " ".join(f"{s + ' cpu s':>15}" for s in STAGES)
        + "  peak GB"
    )
    for r in results:
        cells = " ".join(f"{r['stages'][s]['cpu_s']:15.2f}" for s in STAGES)
        print(f"{r['scale']:6.2f} {r['clips']:7d} {r['ticks']:8d} {cells}  {r['peak_rss_gb']:.2f}")
    lo, hi = results[0], results[-1]
    linearity = {
        s: round(
            (hi["stages"][s]["cpu_s"] / hi["ticks"]) / max(lo["stages"][s]["cpu_s"] / lo["ticks"], 1e-12), 2
        )
        for s in STAGES
    }
    print("CPU s per tick, largest / smallest scale (1.0 = linear):", linearity)
    dry = dry_run_full_graph()
    print(f"dry run of the full-scale job graph: {dry['jobs']} jobs in {dry['wall_s']} s")
    report = {
        "host": describe_host(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "scales": results,
        "cpu_s_per_tick_ratio_largest_vs_smallest": linearity,
        "dry_run_full_graph": dry,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
