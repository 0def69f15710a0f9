"""Shared fixtures: repository paths, the real data samples in ../shared (skipped when absent), no hub,
and the models and runs several test files use, each built once per session.

Two tiers. The tests marked `slow` run the Snakemake DAG for real (the demo end to end, the cluster
executor, the real samples, the benchmark scripts, the hub download, the BADAS gate in the DAG) or
several processes at once (SFT under torchrun); everything else is the fast tier:

    .venv/bin/python -m pytest -m "not slow"    # the fast tier alone
    .venv/bin/python -m pytest -m slow          # the end-to-end tier alone
    make test                                   # lint, then every test (both tiers)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_helpers import TINY_CORPUS, TINY_SEED

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not SHARED_REAL.is_dir():
        pytest.skip(f"real data samples not present at {SHARED_REAL}")
    return SHARED_REAL


@pytest.fixture(scope="session", autouse=True)
def hf_hub_offline():
    """No test reaches the Hugging Face hub: HF_HUB_OFFLINE=1 for the whole session, set in one place.

    Both the variable (subprocesses inherit it) and huggingface_hub's constant (read once at its
    import, which may come before this fixture). A test that needs the hub off-limits lifted (the
    download tests' local fake hub) undoes both with its own `monkeypatch`.
    """
    import huggingface_hub.constants

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The demo DAG run end to end once per session, in a fresh folder; the workflow and report tests
    read it (and put back whatever they change in it). Its wall time is kept in wall_time_s.txt."""
    import time

    from test_workflow import snakemake  # the invocation every workflow test uses

    workdir = tmp_path_factory.mktemp("demo")
    start = time.monotonic()
    res = snakemake(workdir, "--cores", "2")
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-8000:]
    (workdir / "wall_time_s.txt").write_text(f"{elapsed:.1f}\n")
    return workdir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny model (default VLMConfig) built from tiny_helpers.TINY_CORPUS with TINY_SEED.

    Shared by every test that needs *a* tiny model: load it, never write into it (copy it first).
    """
    from vlalert.vlm.config import VLMConfig
    from vlalert.vlm.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny") / "tiny-qwen3vl"
    return build_tiny_model(out, TINY_CORPUS, VLMConfig(), seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """A run `vlalert predict` reads (predict_helpers.make_run) and a 5 s mp4: results, config, root, video.

    Read-only for the tests: one that deletes or edits run files works on a copy of `results`.
    """
    from predict_helpers import make_run, write_mp4

    root = tmp_path_factory.mktemp("run")
    out = make_run(root, tiny_model_dir)
    out["video"] = write_mp4(root / "clip.mp4", seconds=5.0)
    return out


@pytest.fixture(scope="session")
def sft_bench(tmp_path_factory) -> dict[str, Path]:
    """sft_helpers' synthetic benchmark (train/val Parquet, frame folders) and the tiny model built
    from its targets: train, val, model, root. Runs write under their own tmp_path, never in root."""
    from sft_helpers import build_model, make_benchmark

    root = tmp_path_factory.mktemp("bench")
    paths = make_benchmark(root)
    return {**paths, "model": build_model(root, paths["train"]), "root": root}
