"""Hub downloads against a real local HTTP server that speaks the hub routes huggingface_hub calls,
and the layout checks of the sources placed by hand.

Routes the client uses (huggingface_hub 2.x, read from its source): GET
/api/datasets/{repo}/tree/{rev}?recursive=... (listing), GET /api/datasets/{repo}/revision/{rev}
(resolving a branch), HEAD /datasets/{repo}/resolve/{rev}/{path} (needs X-Repo-Commit, an ETag or
X-Linked-Etag, and the size; LFS files redirect to a CDN address), GET of the file or of the CDN
address, resumed after a dropped connection with `Range: bytes=N-`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest
from pydantic import ValidationError

from vlalert.download import (
    RECORD_NAME,
    DownloadError,
    check_source_layout,
    format_problems,
    hub_download,
    public_endpoint,
    token_from_env,
    write_json,
)
from vlalert.download_config import DownloadConfig, download_config_errors, download_for_source
from vlalert.sources.dad import Dad

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "nexar-ai/nexar_collision_prediction"
COMMIT = "3f7a1c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"
TOKEN = "hf_TESTtokenDoNotLeak0123456789"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeFile:
    path: str
    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:
        return git_blob_sha1(self.pointer if self.lfs else self.data)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


@dataclass
class FakeHub:
    """A hub with one dataset repo at one commit (branch `main`), and faults to inject."""

    files: dict[str, FakeFile]
    seen: list[Seen] = field(default_factory=list)
    drop_once: set[str] = field(default_factory=set)  # first GET of these stops half way
    fail_get: set[str] = field(default_factory=set)  # GET answers 500
    corrupt: set[str] = field(default_factory=set)  # served bytes differ from the listing
    url: str = ""  # the hub, at 127.0.0.1
    cdn: str = ""  # the same server as another host (localhost), like the hub's LFS storage

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def file_requests(self) -> list[Seen]:
        return [s for s in self.seen if "/resolve/" in s.path or s.path.startswith("/cdn/")]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    by_sha = {f.sha256: f for f in hub.files.values() if f.lfs}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        def _send(self, code: int, headers: dict[str, str], data: bytes = b"", body: bool = True) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
            self.end_headers()
            if body and data:
                self.wfile.write(data)

        def _error(self, code: int, error_code: str, message: str) -> None:
            data = json.dumps({"error": message}).encode()
            headers = {
                "X-Error-Code": error_code,
                "X-Error-Message": message,
                "Content-Type": "application/json",
            }
            self._send(code, headers, data)

        def _route(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.seen.append(
                Seen(self.command, unquote(path), {k.lower(): v for k, v in self.headers.items()})
            )
            api = f"/api/datasets/{REPO_ID}/"
            resolve = f"/datasets/{REPO_ID}/resolve/"
            if path.startswith(api + "tree/"):
                rev = unquote(path[len(api + "tree/") :])
                if rev not in (COMMIT, "main"):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return self._json(self._tree())
            if path.startswith(api + "revision/"):
                rev = unquote(path[len(api + "revision/") :])
                if rev not in (COMMIT, "main"):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return self._json(
                    {"id": REPO_ID, "sha": COMMIT, "siblings": [{"rfilename": p} for p in hub.files]}
                )
            if path.startswith("/api/"):
                return self._error(404, "RepoNotFound", "Repository not found")
            if path.startswith(resolve):
                rev, _, name = unquote(path[len(resolve) :]).partition("/")
                if rev not in (COMMIT, "main"):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                if name not in hub.files:
                    return self._error(404, "EntryNotFound", f"{name} does not exist")
                f = hub.files[name]
                common = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
                if f.lfs:  # like the hub: LFS content lives on a CDN, the HEAD says where and what
                    location = f"{hub.cdn}/cdn/{f.sha256}"
                    headers = common | {
                        "Location": location,
                        "ETag": f'"{f.oid}"',
                        "X-Linked-Etag": f'"{f.sha256}"',
                        "X-Linked-Size": str(len(f.data)),
                    }
                    return self._send(302, headers)
                return self._content(f, common | {"ETag": f'"{f.oid}"'}, body)
            if path.startswith("/cdn/") and path[5:] in by_sha:
                return self._content(
                    by_sha[path[5:]], {"ETag": f'"{path[5:]}"', "Accept-Ranges": "bytes"}, body
                )
            return self._error(404, "EntryNotFound", f"no route {path}")

        def _json(self, obj: object) -> None:
            self._send(200, {"Content-Type": "application/json"}, json.dumps(obj).encode())

        def _tree(self) -> list[dict]:
            entries: list[dict] = []
            folders = sorted({str(Path(p).parent) for p in hub.files} - {"."})
            for folder in folders:
                entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
            for f in hub.files.values():
                entry = {"type": "file", "oid": f.oid, "size": len(f.data), "path": f.path}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}
                entries.append(entry)
            return entries

        def _content(self, f: FakeFile, headers: dict[str, str], body: bool) -> None:
            data = bytes(b ^ 0xFF for b in f.data) if f.path in hub.corrupt else f.data
            if not body:
                return self._send(200, headers | {"Content-Length": str(len(data))})
            if f.path in hub.fail_get:
                return self._error(500, "InternalError", "storage unavailable")
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.removeprefix("bytes=").split("-")[0])
            part = data[start:]
            if rng:
                headers = headers | {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            if f.path in hub.drop_once and not rng:
                hub.drop_once.discard(f.path)
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                self.close_connection = True
                return
            self._send(206 if rng else 200, headers, part)

    return Handler


@pytest.fixture
def fake_files() -> dict[str, FakeFile]:
    rng = random.Random(3)
    files = [
        FakeFile("train.csv", b"id,time_of_event,time_of_alert,target\n00001,19.5,18.0,1\n00002,,,0\n"),
        FakeFile("train/positive/00001.mp4", bytes(rng.randrange(256) for _ in range(300_000)), lfs=True),
        FakeFile("train/negative/00002.mp4", bytes(rng.randrange(256) for _ in range(5_000))),
        FakeFile("README.md", b"# fake nexar\n"),
        FakeFile("extra/big.bin", bytes(rng.randrange(256) for _ in range(50_000)), lfs=True),
    ]
    return {f.path: f for f in files}


@pytest.fixture
def hub(fake_files, monkeypatch, tmp_path):
    # conftest sets HF_HUB_OFFLINE=1 for the whole session (no test may reach a real hub);
    # this one talks to its own hub on 127.0.0.1, in this process and in snakemake subprocesses.
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import huggingface_hub.constants as hf_constants

    # A token stored on the machine must never be used: point the client's token file at one.
    stored = tmp_path / "stored_token"
    stored.write_text("hf_STOREDtokenMustNotBeSent")
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(stored))
    # The client's user-agent code may ask huggingface.co for a registry; keep the tests off the network.
    import huggingface_hub.utils._detect_agent as detect_agent

    monkeypatch.setattr(detect_agent, "_fetch_registry", lambda: None)
    state = FakeHub(files=fake_files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.cdn = f"http://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def config(tmp_path: Path, **overrides) -> DownloadConfig:
    values = {
        "repo_id": REPO_ID,
        "revision": COMMIT,
        "allow_patterns": ["*.csv", "train/*"],
        "local_dir": str(tmp_path / "resources" / "nexar"),
        "max_workers": 2,
    }
    return DownloadConfig(**(values | overrides))


WANTED = ["train.csv", "train/negative/00002.mp4", "train/positive/00001.mp4"]


def test_pinned_download_fetches_only_the_allowed_files_and_records_them(hub, tmp_path):
    dl = config(tmp_path)
    record = hub_download("nexar", dl, endpoint=hub.url)

    assert record.commit == COMMIT and record.revision == COMMIT
    assert [f.path for f in record.files] == WANTED
    for f in record.files:
        assert f.sha256 == hub.files[f.path].sha256 and f.size == len(hub.files[f.path].data)
        assert (Path(dl.local_dir) / f.path).read_bytes() == hub.files[f.path].data
    assert record.total_bytes == 300_000 + 5_000 + len(hub.files["train.csv"].data)
    # Files outside the patterns are never asked for; each wanted file is asked for once.
    asked = {s.path for s in hub.file_requests()}
    assert not any("README" in p or "extra/" in p for p in asked)
    assert len(hub.requests("HEAD", "/resolve/")) == 3
    gets = [s.path for s in hub.requests("GET") if "/resolve/" in s.path or s.path.startswith("/cdn/")]
    assert sorted(gets) == sorted(
        [
            f"/cdn/{hub.files['train/positive/00001.mp4'].sha256}",
            f"/datasets/{REPO_ID}/resolve/{COMMIT}/train.csv",
            f"/datasets/{REPO_ID}/resolve/{COMMIT}/train/negative/00002.mp4",
        ]
    )
    assert not (Path(dl.local_dir) / "README.md").exists()

    marker = write_json(record.to_json(), tmp_path / "results" / "download" / "nexar.json")
    saved = json.loads(marker.read_text())
    assert saved["commit"] == COMMIT and saved["n_files"] == 3 and saved["pinned"] is True
    assert [f["path"] for f in saved["files"]] == WANTED
    # the same record lies beside the files it describes
    assert json.loads((Path(dl.local_dir) / RECORD_NAME).read_text()) == saved

    # A second run finds every file complete at the same commit: only our listing call goes out.
    hub.seen.clear()
    again = hub_download("nexar", dl, endpoint=hub.url)
    assert again.files == record.files
    assert [s.method for s in hub.seen] == ["GET"] and "/tree/" in hub.seen[0].path


def test_a_dropped_connection_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    # The client writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB) and resumes after
    # the last whole chunk: at this file's scale, 50 kB chunks, so the drop at 150 kB resumes there.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 50_000)
    video = "train/positive/00001.mp4"
    hub.drop_once.add(video)
    record = hub_download("nexar", config(tmp_path), endpoint=hub.url)

    sha = hub.files[video].sha256
    gets = hub.requests("GET", f"/cdn/{sha}")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == "bytes=150000-"
    assert {f.path: f.sha256 for f in record.files}[video] == sha


def test_a_failed_run_keeps_finished_files_and_the_rerun_fetches_only_the_rest(hub, tmp_path):
    dl = config(tmp_path)
    broken = "train/negative/00002.mp4"
    hub.fail_get.add(broken)
    with pytest.raises(DownloadError, match="run again to resume"):
        hub_download("nexar", dl, endpoint=hub.url)
    assert (Path(dl.local_dir) / "train.csv").is_file()
    assert not (Path(dl.local_dir) / broken).exists()

    hub.fail_get.clear()
    hub.seen.clear()
    record = hub_download("nexar", dl, endpoint=hub.url)
    assert [f.path for f in record.files] == WANTED
    assert {s.path for s in hub.file_requests()} == {f"/datasets/{REPO_ID}/resolve/{COMMIT}/{broken}"}


def test_the_token_comes_from_hf_token_only_and_is_never_written(hub, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    # Without HF_TOKEN nothing is sent, although a token is stored on the machine (see the fixture).
    hub_download("nexar", config(tmp_path / "anon"), endpoint=hub.url, token=token_from_env())
    assert hub.seen and not any("authorization" in s.headers for s in hub.seen)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.seen.clear()
    record = hub_download("nexar", config(tmp_path / "auth"), endpoint=hub.url, token=token_from_env())
    to_hub = [s for s in hub.seen if not s.path.startswith("/cdn/")]
    to_cdn = [s for s in hub.seen if s.path.startswith("/cdn/")]
    assert to_hub and all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in to_hub)
    assert to_cdn and not any("authorization" in s.headers for s in to_cdn)  # it never leaves the hub

    marker = write_json(record.to_json(), tmp_path / "nexar.json")
    assert TOKEN not in marker.read_text()
    with pytest.raises(DownloadError) as err:
        hub_download("nexar", config(tmp_path, revision="f" * 40), endpoint=hub.url, token=token_from_env())
    assert TOKEN not in str(err.value)
    assert TOKEN not in caplog.text and "hf_STORED" not in caplog.text


def test_a_wrong_revision_is_a_clear_error(hub, tmp_path):
    wrong = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(DownloadError) as err:
        hub_download("nexar", config(tmp_path, revision=wrong), endpoint=hub.url)
    message = str(err.value)
    assert f"revision {wrong!r} does not exist" in message
    assert "download.nexar.revision" in message and REPO_ID in message
    assert hub.file_requests() == []


def test_an_unpinned_revision_is_resolved_and_its_commit_recorded(hub, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="vlalert.download")
    dl = config(tmp_path, revision="main", allow_unpinned=True)
    record = hub_download("nexar", dl, endpoint=hub.url)
    assert record.revision == "main" and record.commit == COMMIT
    assert f"revision: {COMMIT}" in caplog.text
    assert all(COMMIT in s.path for s in hub.file_requests() if "/resolve/" in s.path)
    # the resolved commit is in the download's own record, next to the files, not only in the log
    saved = json.loads((Path(dl.local_dir) / RECORD_NAME).read_text())
    assert (saved["revision"], saved["commit"], saved["pinned"]) == ("main", COMMIT, False)
    assert [f["path"] for f in saved["files"]] == WANTED


def test_a_repo_file_named_like_the_record_is_refused(hub, tmp_path):
    hub.files[RECORD_NAME] = FakeFile(RECORD_NAME, b"{}")
    with pytest.raises(DownloadError, match=f"has a file {RECORD_NAME}"):
        hub_download("nexar", config(tmp_path, allow_patterns=["*.json", "*.csv"]), endpoint=hub.url)
    assert hub.file_requests() == []


def test_a_file_that_differs_from_the_listing_is_named_and_deleted(hub, tmp_path):
    hub.corrupt.add("train.csv")
    dl = config(tmp_path)
    with pytest.raises(DownloadError, match=r"train\.csv: git blob sha1 .* the hub lists") as err:
        hub_download("nexar", dl, endpoint=hub.url)
    assert "1 file(s)" in str(err.value)
    assert not (Path(dl.local_dir) / "train.csv").exists()
    hub.corrupt.clear()
    assert [f.path for f in hub_download("nexar", dl, endpoint=hub.url).files] == WANTED


def test_patterns_that_match_nothing_are_an_error(hub, tmp_path):
    with pytest.raises(DownloadError, match="match no file"):
        hub_download("nexar", config(tmp_path, allow_patterns=["*.parquet"]), endpoint=hub.url)


def test_config_demands_a_pinned_commit():
    base = {"repo_id": REPO_ID, "local_dir": "resources/nexar"}
    with pytest.raises(ValidationError, match="is not a commit"):
        DownloadConfig(**base, revision="main")
    with pytest.raises(ValidationError, match="allow_patterns is empty"):
        DownloadConfig(**base, revision=COMMIT, allow_patterns=[])
    with pytest.raises(ValidationError):
        DownloadConfig(**base, revision=COMMIT, token="hf_x")  # no place for a token in the config
    assert DownloadConfig(**base, revision="v1.0", allow_unpinned=True).revision == "v1.0"


def test_token_from_env_and_public_endpoint():
    assert token_from_env({"HF_TOKEN": "  hf_abc \n"}) == "hf_abc"
    assert token_from_env({"HF_TOKEN": ""}) is None and token_from_env({}) is None
    assert public_endpoint("https://user:pw@mirror.example:8443/") == "https://mirror.example:8443"
    assert public_endpoint("https://huggingface.co") == "https://huggingface.co"


def test_download_section_cross_checks():
    dl = {
        "nexar": DownloadConfig(
            repo_id=REPO_ID, revision=COMMIT, local_dir="resources/nexar", source="nexar"
        ),
        "bench": DownloadConfig(repo_id="HenryYHW/VLAlert", revision=COMMIT, local_dir="resources/nexar/"),
        "ghost": DownloadConfig(repo_id="a/b", revision=COMMIT, local_dir="resources/x", source="dota"),
        "off": DownloadConfig(repo_id="a/c", revision=COMMIT, local_dir="resources/x", enabled=False),
    }
    errors = download_config_errors(dl, {"nexar": "resources/nexar", "dad": "resources/dad"})
    assert errors == [
        "download.bench.local_dir 'resources/nexar/' is also used by download.nexar",
        "download.ghost.source names 'dota', which is not an enabled source",
    ]
    moved = download_config_errors({"nexar": dl["nexar"]}, {"nexar": "data/nexar"})
    assert moved == [
        "download.nexar.local_dir 'resources/nexar' must equal sources.nexar.root 'data/nexar': "
        "the download fills that source"
    ]
    assert download_for_source(dl, "nexar") == "nexar"
    assert download_for_source(dl, "dota") == "ghost" and download_for_source(dl, "dad") is None


# ---------------------------------------------------------------------------------------------
# Layout checks
# ---------------------------------------------------------------------------------------------


def source(kind: str, root: Path, **kw) -> SimpleNamespace:
    return SimpleNamespace(
        kind=kind,
        root=str(root),
        annotations=kw.get("annotations"),
        consensus=kw.get("consensus"),
        gate_scores=kw.get("gate_scores"),
        videos=kw.get("videos", True),
        split_files=kw.get("split_files"),
    )


def touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_layout_of_an_absent_dada2000_names_every_missing_item_and_where_to_get_it(tmp_path):
    root = tmp_path / "resources" / "dada2000"
    consensus = tmp_path / "labels" / "badas_consensus_dada_test.csv"
    report = check_source_layout("dada2000", source("dada2000", root, consensus=str(consensus)))

    assert not report.ok
    assert [p.path for p in report.problems] == [
        str(root),
        str(root / "DADA2000_video_annotations.xlsx"),
        str(root / "DADA2000_video_annotations.csv"),
        str(root / "<type>" / "<NNN>" / "images"),
        str(consensus),
    ]
    assert all("github.com/JWFangit/LOTVS-DADA" in p.obtain for p in report.problems[:4])
    assert "BADAS consensus" in report.problems[4].obtain
    text = format_problems(report)
    assert "5 missing item(s)" in text
    assert all(p.path in text for p in report.problems)
    assert json.loads(json.dumps(report.to_json()))["ok"] is False


def test_layout_of_a_complete_dada2000(tmp_path):
    root = tmp_path / "dada"
    touch(root / "DADA2000_video_annotations.csv", b"video,type\n")
    touch(root / "10" / "068" / "images" / "0001.jpg")
    touch(root / "10" / "069" / "0001.png")  # frames directly in the clip folder count too
    touch(root / "readme" / "notes.txt")
    report = check_source_layout("dada2000", source("dada2000", root))
    assert report.ok and report.warnings == []
    assert report.found["clips"] == 2


def test_layout_of_dota_needs_metadata_and_frames(tmp_path):
    root = tmp_path / "dota"
    touch(root / "metadata_val.json", b"{}")
    report = check_source_layout("dota", source("dota", root))
    assert [p.path for p in report.problems] == [str(root / "frames"), str(root / "videos")]
    assert all("MoonBlvd/Detection-of-Traffic-Anomaly" in p.obtain for p in report.problems)
    assert [p.path for p in report.warnings] == [str(root / "metadata_train.json")]

    touch(root / "frames" / "clip_a" / "000001.jpg")
    report = check_source_layout("dota", source("dota", root))
    assert report.ok and report.found["clips"] == 1


def test_layout_of_dad_accepts_part_of_the_folders_with_warnings(tmp_path):
    root = tmp_path / "dad"
    report = check_source_layout("dad", source("dad", root))
    expected = [
        str(root),
        *(
            str(root / "videos" / s / lab)
            for s in ("training", "testing")
            for lab in ("positive", "negative")
        ),
    ]
    assert [p.path for p in report.problems] == expected
    assert all(p.obtain == Dad.OBTAIN for p in report.problems)

    touch(root / "videos" / "testing" / "positive" / "000001.mp4")
    report = check_source_layout("dad", source("dad", root))
    assert report.ok and len(report.warnings) == 3
    assert report.found["videos"]["testing/positive"] == 1


def test_layout_of_nexar_wants_videos_for_each_annotation_csv(tmp_path):
    root = tmp_path / "nexar"
    touch(root / "train.csv", b"id,time_of_event,time_of_alert,target\n")
    scores = tmp_path / "gate_scores.parquet"
    report = check_source_layout("nexar", source("nexar", root, gate_scores=str(scores)))
    assert [p.path for p in report.problems] == [str(root / "train"), str(scores)]
    assert "huggingface.co/datasets/nexar-ai/nexar_collision_prediction" in report.problems[0].obtain
    assert {p.path for p in report.warnings} == {
        str(root / "test-public.csv"),
        str(root / "test-private.csv"),
    }

    touch(root / "train" / "positive" / "00001.mp4")
    touch(scores)
    report = check_source_layout("nexar", source("nexar", root, gate_scores=str(scores)))
    assert report.ok and report.found["videos"] == {"train": 1}


def test_layout_check_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="no layout check for source kind 'kitti'"):
        check_source_layout("x", source("kitti", tmp_path))


# ---------------------------------------------------------------------------------------------
# The rules: `snakemake download` against the local hub
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_download_target_fetches_hub_data_and_fails_listing_every_missing_manual_item(hub, tmp_path):
    import subprocess
    import sys

    import yaml

    cfg = {
        "run": "real",
        "demo": {"enabled": False},
        "cache": {"belief_layers": [1, 2, 3, 4], "policy_layer": 3},  # the default tiny model has 4 layers
        "gate": {"provider": "scores_file"},
        "labels": {"gated_sources": ["dad"]},
        "sources": {
            "nexar": {"kind": "nexar", "root": "resources/nexar", "gate_scores": "resources/nexar_gate.csv"},
            "dad": {"kind": "dad", "root": "resources/dad", "gate_scores": "resources/dad_gate.csv"},
        },
        "download": {
            "nexar": {
                "repo_id": REPO_ID,
                "revision": COMMIT,
                "allow_patterns": ["*.csv", "train/*"],
                "local_dir": "resources/nexar",
                "source": "nexar",
            }
        },
    }
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("nexar_gate.csv", "dad_gate.csv"):
        touch(tmp_path / "resources" / name, b"video_id,t_s,p_collision\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf_home")}
    env |= {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", str(tmp_path / "real.yaml"), "--cores", "1"]
    cmd += ["--keep-going", "download"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    out = res.stdout + res.stderr
    assert res.returncode != 0
    for folder in ("training/positive", "training/negative", "testing/positive", "testing/negative"):
        assert f"resources/dad/videos/{folder}: missing or empty" in out
    assert "source 'dad' (dad) under resources/dad: 5 missing item(s)" in out
    assert "aliensunmin.github.io/project/dashcam" in out
    marker = json.loads((tmp_path / "results" / "real" / "download" / "nexar.json").read_text())
    assert marker["commit"] == COMMIT and [f["path"] for f in marker["files"]] == WANTED
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in hub.requests("HEAD"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "resources" not in p.parts]
    assert TOKEN not in out and not any(TOKEN in p.read_text(errors="replace") for p in written)

    touch(tmp_path / "resources" / "dad" / "videos" / "testing" / "positive" / "000001.mp4")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    layout = json.loads((tmp_path / "results" / "real" / "download" / "dad.layout.json").read_text())
    assert layout["ok"] and len(layout["warnings"]) == 3
