"""What makes a job rerun besides its config: the source files it reads and the library code it runs.

vlalert/source_files.py fingerprints a source (annotations by content, clips by size and mtime) and
vlalert/workflow.py hashes each rule's code (STAGE_CODE). The DAG-level checks (edit, touch, replace
on a completed demo run) are in tests/test_workflow.py.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

import pytest

from vlalert import source_files as sf
from vlalert import workflow
from vlalert.config import SourceConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"


def put(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def media(listing: dict) -> set[str]:
    return {f"{folder}/{name}" for folder, files in listing["media"].items() for name, *_ in files}


# ---------------------------------------------------------------- source files


def test_each_kind_lists_the_files_its_adapter_reads(tmp_path):
    nexar = tmp_path / "nexar"
    put(nexar / "train.csv", b"id,time_of_event,time_of_alert,target\n")
    for rel in ("train/positive/00001.mp4", "train/00002.mp4", "test-private/negative/00003.mp4"):
        put(nexar / rel)
    put(nexar / "train/positive/notes.txt")  # not a clip: the adapter globs *.mp4
    listing = sf.source_listing(SourceConfig(kind="nexar", root=str(nexar)))
    assert media(listing) == {
        "train/positive/00001.mp4",
        "train/00002.mp4",
        "test-private/negative/00003.mp4",
    }
    assert list(listing["annotations"]) == [str(nexar / "train.csv")]

    dad = tmp_path / "dad"
    for rel in ("videos/training/positive/000001.mp4", "videos/testing/negative/x/000002.MP4"):
        put(dad / rel)  # a stray file in a subfolder is recorded by the adapter: it counts
    consensus = put(tmp_path / "dad.csv", b"id\n")
    listing = sf.source_listing(SourceConfig(kind="dad", root=str(dad), consensus=str(consensus)))
    assert media(listing) == {"videos/training/positive/000001.mp4", "videos/testing/negative/x/000002.MP4"}
    assert list(listing["annotations"]) == [str(consensus)]

    dota = tmp_path / "dota"
    put(dota / "metadata_val.json", b"{}")
    for rel in ("frames/a/000000.jpg", "frames/b/images/000000.JPG", "videos/c.mp4"):
        put(dota / rel)
    listing = sf.source_listing(SourceConfig(kind="dota", root=str(dota)))
    assert media(listing) == {"frames/a/000000.jpg", "frames/b/images/000000.JPG", "videos/c.mp4"}
    assert sf.source_listing(SourceConfig(kind="dota", root=str(dota), videos=False))["media"] == {}

    dada = tmp_path / "dada"
    put(dada / "DADA2000_video_annotations.xlsx")
    split = put(tmp_path / "test_file.json", b"[]")
    for rel in ("10/001/images/0001.jpg", "10/001/maps/0001.png", "10/002/0001.png", "x/001/images/0001.jpg"):
        put(dada / rel)
    listing = sf.source_listing(
        SourceConfig(kind="dada2000", root=str(dada), split_files={"test": str(split)})
    )
    assert media(listing) == {"10/001/images/0001.jpg", "10/002/0001.png"}  # fixation maps are not frames
    assert set(listing["annotations"]) == {str(dada / "DADA2000_video_annotations.xlsx"), str(split)}


def test_the_listing_is_the_same_on_one_thread_or_many(tmp_path, monkeypatch):
    """Threads only where a stat waits on the file system (a probe of the first files); the listing
    itself, and so the fingerprint, never depends on which was taken."""
    dada = tmp_path / "dada"
    put(dada / "DADA2000_video_annotations.xlsx")
    for clip in range(12):
        for frame in range(40):
            put(dada / f"{1 + clip % 3}/{clip:03d}/images/{frame:04d}.jpg", bytes(frame % 5))
    src = SourceConfig(kind="dada2000", root=str(dada))
    folders = [(str(dada / rel), *rest) for rel, *rest in sf._media_folders(src)]
    one = sf._list_folders(folders, threads=1)
    assert sum(map(len, one)) == 12 * 40
    assert sf._list_folders(folders, threads=8) == one

    pools: list[int] = []

    class Recorded(sf.ThreadPoolExecutor):
        def __init__(self, workers: int) -> None:
            pools.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(sf, "ThreadPoolExecutor", Recorded)
    monkeypatch.setattr(sf, "PROBE_FILES", 100)
    monkeypatch.setattr(sf, "LATENCY_BOUND_S", 1.0)  # every stat is fast: one thread
    fast = sf.source_fingerprint(src)
    assert pools == []
    monkeypatch.setattr(sf, "LATENCY_BOUND_S", 0.0)  # every stat waits: the rest on STAT_THREADS
    assert sf._list_folders(folders) == one and pools == [sf.STAT_THREADS]
    assert sf.source_fingerprint(src) == fast


def test_annotations_count_by_content_and_clips_by_size_and_mtime(tmp_path):
    root = tmp_path / "nexar"
    csv = put(root / "train.csv", b"id,time_of_event,time_of_alert,target\n00001,,,0\n")
    video = put(root / "train/negative/00001.mp4", b"mp4 bytes")
    src = SourceConfig(kind="nexar", root=str(root))
    before = sf.source_fingerprint(src)

    os.utime(csv, ns=(csv.stat().st_atime_ns, csv.stat().st_mtime_ns + 10**9))  # touch
    csv.write_bytes(csv.read_bytes())  # a byte-identical rewrite
    assert sf.source_fingerprint(src) == before
    csv.write_bytes(csv.read_bytes() + b"00002,,,0\n")
    edited = sf.source_fingerprint(src)
    assert edited != before

    st = video.stat()
    video.write_bytes(b"MP4 BYTES")  # same size, other bytes: seen through the new mtime
    assert sf.source_fingerprint(src) != edited
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sf.source_fingerprint(src) == edited  # the documented limit: same size and mtime look the same
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert sf.source_fingerprint(src) != edited  # a touched clip counts as changed (README)
    put(root / "train/positive/00002.mp4")
    assert len({sf.source_fingerprint(src), edited}) == 2


def test_a_missing_annotation_is_left_to_the_layout_check(tmp_path):
    src = SourceConfig(kind="dota", root=str(tmp_path), consensus=str(tmp_path / "absent.csv"))
    assert sf.annotation_files(src) == []  # not declared: check_source names it, with where to get it


# ---------------------------------------------------------------- code


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, package: str) -> set[str]:
    """Every vlalert module `path` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] == "vlalert" and _module_file(m)}


def reach(script: Path) -> set[Path]:
    """The vlalert files a script can run: its imports, theirs, and the packages around them."""
    # reach a stage through its params (STAGE_CODE), or (the layout) through its input and output paths
    stop = {"vlalert.config", "vlalert.stage_config", "vlalert.workflow", "vlalert.layout"}
    seen: set[str] = set()
    todo = list(_imports(script, "vlalert"))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if name not in stop:
            file = _module_file(name)
            todo += _imports(file, name if file.name == "__init__.py" else name.rsplit(".", 1)[0])
    return {_module_file(m).resolve() for m in seen - stop}


def test_stage_code_covers_everything_each_script_imports():
    assert set(workflow.STAGE_CODE) == {p.stem for p in SCRIPTS.glob("*.py")}
    for script in workflow.STAGE_CODE:
        missing = reach(SCRIPTS / f"{script}.py") - set(workflow.code_files(script))
        assert not missing, (
            f"STAGE_CODE[{script!r}] lacks {sorted(str(p.relative_to(REPO)) for p in missing)}"
        )
    # what the issue asks for, spelled out: labels is relabel's code, not ingest's
    labels = REPO / "vlalert" / "labels.py"
    assert labels in workflow.code_files("relabel") and labels not in workflow.code_files("ingest")


def test_every_rule_hashes_its_own_script():
    rules = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^\s*rule (?=\w+:)", smk.read_text())[1:]:
            script = re.search(r'script:\s+"\.\./workflow/scripts/(\w+)\.py"', block)
            if script is None:
                continue
            rules += 1
            code = re.search(r'code=code\("(\w+)"\)', block)
            assert code and code.group(1) == script.group(1), f"{smk.name}: {block.splitlines()[0]}"
    assert rules == len(workflow.STAGE_CODE)


def test_the_code_hash_follows_content_not_mtime(tmp_path, monkeypatch):
    shutil.copytree(REPO / "vlalert", tmp_path / "vlalert", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    monkeypatch.setattr(workflow, "PACKAGE_DIR", tmp_path / "vlalert")
    scripts = tmp_path / "scripts"
    before = {s: workflow.code_sha256(s, scripts) for s in workflow.STAGE_CODE}
    assert before == {s: workflow.code_sha256(s, SCRIPTS) for s in workflow.STAGE_CODE}  # location-free

    labels = tmp_path / "vlalert" / "labels.py"
    labels.write_bytes(labels.read_bytes())  # byte-identical rewrite and a touch of a script
    relabel = scripts / "relabel.py"
    os.utime(relabel, ns=(relabel.stat().st_atime_ns, relabel.stat().st_mtime_ns + 10**9))
    assert {s: workflow.code_sha256(s, scripts) for s in workflow.STAGE_CODE} == before

    labels.write_text(labels.read_text() + "# an edit\n")
    changed = {s for s in workflow.STAGE_CODE if workflow.code_sha256(s, scripts) != before[s]}
    assert {"relabel", "beliefs", "sft", "cache_shard", "score"} <= changed
    assert not {"ingest", "gate", "check_source", "make_demo", "heads", "cache_gather"} & changed

    relabel.write_text(relabel.read_text() + "# an edit\n")
    assert workflow.code_sha256("relabel", scripts) != workflow.code_sha256("relabel", SCRIPTS)


def test_a_stage_code_entry_must_exist(monkeypatch):
    monkeypatch.setitem(workflow.STAGE_CODE, "relabel", ("labels", "no_such_module"))
    with pytest.raises(ValueError, match="vlalert.no_such_module"):
        workflow.code_files("relabel")
