"""What a job leaves behind: world-readable files, its failure reason in its own log, config warnings."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vlalert.atomic import atomic_path, file_mode, publish_tree
from vlalert.beliefs.cache import ResponseCache, request_key
from vlalert.cli import main
from vlalert.workflow import job_logging


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_llm_cache_entries_are_world_readable(tmp_path, umask022):
    key = request_key("m", "p", [b"x"])
    path = ResponseCache(tmp_path).put(key, {"content": "x"})
    assert _mode(path) == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("a")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == 0o640


def test_publish_tree(tmp_path, umask022):
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "w.safetensors").write_bytes(b"")
    os.chmod(tmp_path / "d" / "w.safetensors", 0o600)
    publish_tree(tmp_path / "d")
    assert _mode(tmp_path / "d") == 0o755 and _mode(tmp_path / "d" / "w.safetensors") == 0o644


def test_a_full_disk_is_named_in_the_jobs_own_log(tmp_path):
    log = tmp_path / "logs" / "job.log"
    with pytest.raises(OSError), job_logging(log) as jl:
        jl.info("writing")
        assert (log.parent / ".job.log.reserve").stat().st_size > 0  # room kept for the failure message
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out.parquet"))
    text = log.read_text()
    assert "disk full (errno 28" in text and str(tmp_path / "out.parquet") in text and "GB free" in text
    assert "OSError: [Errno 28]" in text  # the traceback too
    assert sorted(p.name for p in log.parent.iterdir()) == ["job.log"]  # the reserve is gone


def test_a_job_that_exits_with_a_message_logs_it(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit), job_logging(log):
        raise SystemExit("beliefs dota: budget cap reached")
    assert "job failed: beliefs dota: budget cap reached" in log.read_text()


def test_check_config_flags_a_yte_config(tmp_path, capsys):
    yte = tmp_path / "yte.yaml"
    yte.write_text("__use_yte__: true\n__definitions__:\n  - import os\nrun: ?os.getlogin()\n")
    main(["check-config", str(yte), "--snakefile", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert "WARNING" in err and "__use_yte__: true" in err and "runs the Python" in err

    plain = tmp_path / "plain.yaml"
    plain.write_text("# __use_yte__: true is only mentioned here\nrun: demo\n")
    main(["check-config", str(plain), "--snakefile", str(tmp_path / "none")])
    assert "WARNING" not in capsys.readouterr().err
