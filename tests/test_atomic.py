"""vlalert.atomic's writes (a failed write leaves the old file or nothing, never a partial file or a
temp file), and the small foundation modules every stage shares: vlalert.devices, vlalert.strict."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from vlalert import atomic
from vlalert.atomic import atomic_dir, atomic_path, write_bytes_atomic, write_json_atomic
from vlalert.devices import resolve_device, resolve_dtype, to_device
from vlalert.strict import StrictModel


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield
    os.umask(old)


# ----------------------------------------------------------------------------- files


def test_a_block_that_raises_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.parquet"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["out.parquet"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError):
        write_json_atomic({"x": circular}, tmp_path / "sub" / "a.json")
    assert _names(tmp_path / "sub") == []


def test_write_bytes_atomic(tmp_path, umask027):
    path = write_bytes_atomic(b"\x00abc", tmp_path / "d" / "e.json", fsync=True)
    assert path.read_bytes() == b"\x00abc"
    assert _mode(path) == 0o640  # a plain open()'s mode under the umask
    assert _names(path.parent) == ["e.json"]
    write_bytes_atomic(b"", path)
    assert path.read_bytes() == b""


def test_write_bytes_atomic_failure_keeps_the_old_file_and_no_temp(tmp_path):
    path = write_bytes_atomic(b"old", tmp_path / "e.json")
    with pytest.raises(TypeError):
        write_bytes_atomic("not bytes", path)  # type: ignore[arg-type]  # fails after the temp file is open
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["e.json"]


def test_concurrent_writers_do_not_share_a_temp_file(tmp_path):
    path = tmp_path / "e.json"
    bodies = [bytes([65 + i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=write_bytes_atomic, args=(b, path)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in bodies  # one writer's whole content
    assert _names(tmp_path) == ["e.json"]


# ----------------------------------------------------------------------------- folders


def test_atomic_dir_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.safetensors").write_text("new")
        os.chmod(tmp / "sub" / "w.safetensors", 0o600)  # as save_pretrained writes it
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["sub", "sub/w.safetensors"]
    assert _mode(out / "sub" / "w.safetensors") == atomic.file_mode()
    assert _names(tmp_path) == ["adapter"]


def test_atomic_dir_failure_keeps_the_old_folder_and_no_temp(tmp_path):
    out = tmp_path / "adapter"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (out / "a").read_text() == "first"
    assert _names(tmp_path) == ["adapter"]


def test_atomic_dir_puts_the_old_folder_back_when_the_rename_fails(tmp_path, monkeypatch):
    out = tmp_path / "adapter"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("first")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out and Path(src).name.endswith(".tmp"):
            raise OSError("rename refused")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename refused"), atomic_dir(out) as tmp:
        (tmp / "a").write_text("second")
    monkeypatch.undo()
    assert (out / "a").read_text() == "first"
    assert _names(tmp_path) == ["adapter"]


# ----------------------------------------------------------------------------- devices, dtypes


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sft.device is 'cuda:1' but no CUDA device"):
            resolve_device("cuda:1", "sft.device")


def test_resolve_dtype_takes_a_string_or_a_torch_device():
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@dataclasses.dataclass(frozen=True)
class _Batch:
    x: torch.Tensor
    y: torch.Tensor | None
    idx: np.ndarray


def test_to_device_moves_tensors_of_a_mapping_or_a_dataclass():
    moved = to_device({"a": torch.ones(2), "b": torch.zeros(1, dtype=torch.int64)}, "cpu")
    assert isinstance(moved, dict) and torch.equal(moved["a"], torch.ones(2))
    batch = _Batch(torch.ones(3), None, np.arange(3))
    out = to_device(batch, torch.device("cpu"), non_blocking=True)
    assert isinstance(out, _Batch) and out.y is None and out.idx is batch.idx
    assert torch.equal(out.x, batch.x)
    with pytest.raises(TypeError):
        to_device([torch.ones(1)], "cpu")


# ----------------------------------------------------------------------------- config base


class _Section(StrictModel):
    n: int = 1


def test_strict_model_refuses_unknown_keys_and_is_frozen():
    with pytest.raises(ValidationError):
        _Section.model_validate({"n": 2, "typo": 3})
    section = _Section(n=2)
    with pytest.raises(ValidationError):
        section.n = 3  # type: ignore[misc]
    assert json.loads(section.model_dump_json()) == {"n": 2}
