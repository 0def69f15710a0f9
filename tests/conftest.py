"""Shared fixtures: repository paths, the real data samples in ../shared (skipped when absent), no hub."""

from __future__ import annotations

from pathlib import Path

import pytest

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
