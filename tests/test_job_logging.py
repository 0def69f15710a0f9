"""`vlalert.workflow.job_logging`: a job's logging, warnings and stderr go to its rule's log file, every
way out of the job is recorded there (an error with its traceback, an interrupt, an exit with a
message; a clean exit is not a failure), and nothing of it outlives the job: the handler, the stderr
redirect and the disk-space reserve are gone afterwards. (A full disk: tests/test_job_files.py.)"""

from __future__ import annotations

import errno
import logging
import sys
import warnings

import pytest

from vlalert import workflow
from vlalert.workflow import job_logging


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """job_logging sets the root level and routes warnings to logging for the rest of the process
    (a job's process ends with the job); put both back so later tests see pytest's own settings.
    Before the test too: an earlier job_logging in this process leaves logging believing it still
    captures warnings after pytest restored `warnings.showwarning`; captureWarnings(True) is then a no-op."""
    level = logging.getLogger().level
    logging.captureWarnings(False)
    yield
    logging.captureWarnings(False)
    logging.getLogger().setLevel(level)


def _lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_logging_warnings_and_stderr_land_in_the_log(tmp_path):
    log = tmp_path / "logs" / "beliefs" / "dota.log"  # folders made as needed
    handlers, stderr = list(logging.getLogger().handlers), sys.stderr
    with job_logging(log) as jl:
        assert sys.stderr is not stderr
        assert jl.name == "vlalert"
        assert (log.parent / ".dota.log.reserve").stat().st_size == workflow.LOG_RESERVE_BYTES
        jl.info("reading %d clips", 4)
        logging.getLogger("vlalert.beliefs.llm").debug("below INFO: not written")
        logging.getLogger("httpx").warning("a library's own logger")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a deprecated option", DeprecationWarning, stacklevel=1)
        print("progress 3/4", file=sys.stderr)  # what tqdm writes
    text = log.read_text()
    assert " INFO vlalert: reading 4 clips" in text
    assert " WARNING httpx: a library's own logger" in text
    assert "DeprecationWarning: a deprecated option" in text and " WARNING py.warnings: " in text
    assert "progress 3/4" in text and "below INFO" not in text
    assert "job failed" not in text
    # nothing outlives the job: handler, redirect, reserve
    assert logging.getLogger().handlers == handlers
    assert sys.stderr is stderr
    logging.getLogger("vlalert").warning("after the job")
    assert "after the job" not in log.read_text()
    assert sorted(p.name for p in log.parent.iterdir()) == ["dota.log"]


def test_an_error_is_logged_with_its_traceback_and_raised(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(RuntimeError, match="no frames in clip a"), job_logging(log) as jl:
        jl.info("starting")
        raise RuntimeError("no frames in clip a")
    lines = _lines(log)
    assert any(line.endswith("ERROR vlalert: job failed") for line in lines)
    assert "Traceback (most recent call last):" in lines
    assert lines[-1] == "RuntimeError: no frames in clip a"
    assert "disk full" not in log.read_text()  # only a full disk gets that line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log"]


@pytest.mark.parametrize("code", [None, 0])
def test_a_clean_exit_is_not_a_failure(tmp_path, code):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit), job_logging(log) as jl:
        jl.info("nothing to do")
        raise SystemExit(code)
    assert _lines(log)[-1].endswith("INFO vlalert: nothing to do")
    assert "ERROR" not in log.read_text()


def test_an_exit_code_is_logged(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit), job_logging(log):
        raise SystemExit(3)
    assert _lines(log)[-1].endswith("ERROR vlalert: job failed: 3")


def test_an_interrupt_is_logged_without_a_traceback(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(KeyboardInterrupt), job_logging(log):
        raise KeyboardInterrupt
    assert _lines(log)[-1].endswith("ERROR vlalert: job interrupted")
    assert "Traceback" not in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log"]


def test_a_job_runs_without_its_reserve_when_the_disk_is_already_full(tmp_path, monkeypatch):
    """The reserve cannot be written: it is removed at once and the job logs as usual."""

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(workflow.os, "fsync", full)
    log = tmp_path / "job.log"
    with pytest.raises(ValueError, match="bad row"), job_logging(log) as jl:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log"]
        jl.info("working")
        raise ValueError("bad row")
    text = log.read_text()
    assert "INFO vlalert: working" in text and "ValueError: bad row" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.log"]


def test_a_progress_bar_lands_in_the_log_as_lines_not_carriage_returns(tmp_path):
    from tqdm import tqdm

    log = tmp_path / "cache.log"
    with job_logging(log):
        for _ in tqdm(range(300), desc="cache test", unit="tick", mininterval=0):
            pass
    text = log.read_text()
    assert "\r" not in text
    bar = [line for line in text.splitlines() if line.startswith("cache test")]
    assert bar[-1].startswith("cache test: 100%") and "300/300" in bar[-1]
    assert len(bar) <= 3  # the first frame, at most one periodic line, the final frame
