"""Throughput of the `llm` belief provider (online mode) against the local fake server.

DESIGN.md, "Performance targets": beliefs reach >= 80% of the ideal request rate at 64 in flight.
The ideal is in_flight / latency ticks per second (every tick is one request; the fake server
answers each after a fixed latency). Each case runs `LLMBeliefProvider.run` in a fresh child
process on fresh ticks (empty cache and ledger, on the repository's disk like a real run) against
one `tests/llm_server.FakeLLMServer` hosted by this process, so the child's CPU seconds are the
client's alone.

Two rates per case. `ticks_per_s` / `pct_of_ideal` (the target's measure) are end to end: all ticks
over the whole `run`, so they include what a run pays once: building the client and ledger, the
first wave's ramp (the first `in_flight` ticks all being prepared at once, under the GIL, before the
slots fill) and the last wave's drain. At 384 ticks, 6 waves of 64, that is about a wave of the
run. `steady_ticks_per_s` / `steady_pct_of_ideal` is the rate requests reach the server from the
first request that had to wait for a free slot (number `in_flight`), over whole rounds of
`in_flight` requests: what a run of 132k ticks sees for all but its first and last second.
Neither changes what is timed or the default tick counts, which stay as they were so results
compare across revisions.

`--baseline REV` also runs every case with the package as of git revision REV (checked out in a
temporary worktree and put first on the child's PYTHONPATH), in the same run and alternating
with the current tree, so before/after are measured on the same machine load.

    python benchmarks/beliefs_throughput.py                        # current tree, 1/4/16/64 in flight
    python benchmarks/beliefs_throughput.py --baseline acf4724     # before/after in one run
    python benchmarks/beliefs_throughput.py --frame-size 720x1280  # real-size frames (JPEG cost)
    python benchmarks/beliefs_throughput.py --profile 64           # where the client's time goes

Results print as a table and go to benchmarks/results/beliefs_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hostinfo import describe_host

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
RESULTS = Path(__file__).resolve().parent / "results"
KEY_ENV = "VLALERT_BENCH_LLM_KEY"


def _ticks_for(in_flight: int, fixed: int | None) -> int:
    """Enough ticks for a steady state (>= 6 waves at 64, >= 48 requests sequentially), or `fixed`."""
    return fixed if fixed else min(384, max(48, 24 * in_flight))


# ---------------------------------------------------------------- child: one case


def _contexts(n: int, frame_size: tuple[int, int] | None) -> tuple[Any, list[Any], Any]:
    """(config, n tick contexts, frames loader): clips alternating positive / negative, like the tests'."""
    sys.path.insert(0, str(TESTS))
    import numpy as np
    import pyarrow as pa
    from llm_server import base_config, clip_row, fake_frames

    from vlalert.beliefs.stage import belief_contexts
    from vlalert.config import validate_config
    from vlalert.labels import label_source

    cfg = validate_config(base_config(provider="llm", progress=False))
    rows = []
    for i in range(n // 4 + 2):
        if i % 2:
            rows.append(clip_row(f"neg{i:05d}", n_frames=120, positive=False, ego=False))
        else:
            rows.append(clip_row(f"pos{i:05d}", n_frames=120, t_risky_s=4.0, t_event_s=9.0))
    videos = pa.Table.from_pylist(rows)
    ctxs = belief_contexts(label_source(videos, None, "mix", cfg), videos, cfg)
    if len(ctxs) < n:
        raise RuntimeError(f"only {len(ctxs)} ticks from {len(rows)} clips, {n} asked")
    loader = fake_frames
    if frame_size is not None:
        h, w = frame_size

        def loader(path: str, indices: Any) -> Any:  # small random frames, upscaled (JPEG-like content)
            small = fake_frames(path, indices)
            return np.repeat(np.repeat(small, -(-h // small.shape[1]), 1), -(-w // small.shape[2]), 2)[
                :, :h, :w
            ]

    return cfg, ctxs[:n], loader


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from vlalert.beliefs.llm import LLMBeliefProvider

    cfg, ctxs, loader = _contexts(args.ticks, args.frame_size)
    llm = cfg.beliefs.llm.model_copy(
        update={"base_url": args.base_url, "model": "bench", "cache_dir": args.cache_dir, "timeout_s": 60.0}
    )
    provider = LLMBeliefProvider(
        llm,
        cfg.labels,
        cfg.window,
        api_key="EMPTY",
        frames_loader=loader,
        concurrency=args.in_flight,
    )
    import openai  # noqa: F401  # the one-time imports (~2-3 s here) are not the steady state measured
    import PIL.Image  # noqa: F401

    profiler = None
    if args.profile:
        import yappi  # type: ignore[import-not-found]

        yappi.set_clock_type("cpu")
        yappi.start()
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    out = provider.run(ctxs, progress=False)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if args.profile:
        yappi.stop()
        stats = yappi.get_func_stats()
        stats.sort("ttot")
        profiler = [
            {"func": f"{s.module.rsplit('/', 1)[-1]}:{s.lineno} {s.name}", "calls": s.ncall, "cpu_s": s.ttot}
            for s in list(stats)[:40]
        ]
    assert len(out) == len(ctxs), (len(out), len(ctxs))
    return {
        "ticks": len(ctxs),
        "wall_s": wall,
        "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "profile": profiler,
    }


# ---------------------------------------------------------------- parent: server, cases, table


def _worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev], check=True)
    return into


def _steady_rate(arrivals: list[float], in_flight: int) -> float | None:
    """Requests per second reaching the server from the first that waited for a slot (number
    `in_flight`), over whole rounds of `in_flight` requests (requests bunch into waves: a window
    ending inside one would count part of a wave in next to no time)."""
    rounds = (len(arrivals) - 1 - in_flight) // in_flight
    if rounds < 1:
        return None
    t = sorted(arrivals)
    return rounds * in_flight / (t[in_flight + rounds * in_flight] - t[in_flight])


def _case(
    impl: str,
    tree: Path,
    base_url: str,
    in_flight: int,
    args: argparse.Namespace,
    scratch: Path,
    arrivals: list[float],
) -> dict[str, Any]:
    n = _ticks_for(in_flight, args.ticks)
    cache = scratch / f"cache-{impl}-{in_flight}"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--base-url",
        base_url,
        "--cache-dir",
        str(cache),
        "--in-flight",
        str(in_flight),
        "--ticks",
        str(n),
    ]
    if args.frame_size:
        cmd += ["--frame-size", "x".join(map(str, args.frame_size))]
    if args.profile:
        cmd += ["--profile", str(in_flight)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(TESTS)])}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)  # this process only hosts the server meanwhile
    first = len(arrivals)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tree))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    steady = _steady_rate(arrivals[first:], in_flight)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} at {in_flight} in flight failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    ideal = in_flight / args.latency
    rate = res["ticks"] / res["wall_s"]
    return {
        "impl": impl,
        "in_flight": in_flight,
        "ticks": res["ticks"],
        "wall_s": round(res["wall_s"], 3),
        "ticks_per_s": round(rate, 2),
        "ideal_ticks_per_s": round(ideal, 2),
        "pct_of_ideal": round(100 * rate / ideal, 1),
        "steady_ticks_per_s": round(steady, 2) if steady else None,
        "steady_pct_of_ideal": round(100 * steady / ideal, 1) if steady else None,
        "cpu_s": round(res["cpu_s"], 2),
        "cpu_ms_per_tick": round(1000 * res["cpu_s"] / res["ticks"], 2),
        "server_cpu_s": round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "profile": res["profile"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--latency", type=float, default=0.5, help="the fake server's seconds per answer")
    ap.add_argument("--ticks", type=int, default=None, help="ticks per case (default: by in-flight)")
    ap.add_argument("--baseline", default=None, help="git revision to measure too (the 'before')")
    ap.add_argument("--frame-size", type=lambda s: tuple(int(v) for v in s.split("x")), default=None)
    ap.add_argument("--profile", type=int, default=None, help="yappi CPU profile of one in-flight case")
    ap.add_argument("--out", type=Path, default=RESULTS / "beliefs_throughput.json")
    # child-only
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.in_flight = args.in_flight[0]
        print(json.dumps(_child(args)))
        return

    sys.path.insert(0, str(TESTS))
    from llm_server import FakeLLMServer, Reply

    if args.profile:
        args.in_flight = [args.profile]
    scratch = Path(tempfile.mkdtemp(prefix=".beliefs_bench-", dir=REPO / "benchmarks"))
    trees = {"after": REPO}
    try:
        if args.baseline:
            trees = {"before": _worktree(args.baseline, scratch / "baseline"), "after": REPO}
        rows = []
        arrivals: list[float] = []  # when each request reached the server

        def script(n: int, req: Any) -> Reply:
            arrivals.append(time.monotonic())
            return Reply(delay_s=args.latency)

        with FakeLLMServer(script) as server:
            for in_flight in args.in_flight:
                for impl, tree in trees.items():  # alternate, so both see the same machine load
                    row = _case(impl, tree, server.base_url, in_flight, args, scratch, arrivals)
                    rows.append(row)
                    print(
                        f"{impl:>6} {in_flight:>4} in flight: {row['ticks_per_s']:7.2f} ticks/s "
                        f"({row['pct_of_ideal']:5.1f}% of {row['ideal_ticks_per_s']:g}; steady "
                        f"{row['steady_pct_of_ideal'] or 0:5.1f}%), "
                        f"{row['cpu_s']:.2f} CPU s",
                        flush=True,
                    )
                    if row["profile"]:
                        for p in row["profile"][:25]:
                            print(f"    {p['cpu_s']:8.3f} s {p['calls']:8d}  {p['func']}")
    finally:
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(scratch / "baseline")]
            )
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    head = ("impl", "in flight", "ticks", "ticks/s", "ideal", "% ideal", "steady %", "CPU s", "CPU ms/tick")
    head += ("server CPU s", "load 1m")
    print(" ".join(f"{h:>{max(len(h), 6)}}" for h in head))
    for r in rows:
        print(
            f"{r['impl']:>6} {r['in_flight']:>9} {r['ticks']:>6} {r['ticks_per_s']:>7.2f} "
            f"{r['ideal_ticks_per_s']:>6.1f} {r['pct_of_ideal']:>6.1f}% "
            f"{r['steady_pct_of_ideal'] or 0:>7.1f}% {r['cpu_s']:>6.2f} {r['cpu_ms_per_tick']:>11.2f} "
            f"{r['server_cpu_s']:>12.2f} {r['load_avg_1m']:>7.2f}"
        )
    if args.profile:
        return
    result = {
        "benchmark": "beliefs_throughput",
        "latency_s": args.latency,
        "frame_size": list(args.frame_size) if args.frame_size else [48, 64],
        "baseline": args.baseline,
        "head": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "host": describe_host(),
        "rows": [{k: v for k, v in r.items() if k != "profile"} for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
