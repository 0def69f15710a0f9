"""A scripted OpenAI-compatible chat server on 127.0.0.1 for the llm belief provider's tests.

Routes: POST /v1/chat/completions; and the Batch API: POST /v1/files (multipart, purpose=batch),
POST /v1/batches, GET /v1/batches/{id} (each poll advances it: validating -> in_progress ->
completed after `batch_polls` polls, answering every line by the same script), GET /v1/batches
(list), GET /v1/files/{id}/content. `batch_lines` counts every request submitted in a batch.

It is a real HTTP server (http.server in a thread, port 0), so the tests exercise the real
`openai` client, its timeouts and its error mapping. Each test scripts the replies with a
function of (request number, request JSON); the default reply is a belief that agrees with the
label stated in the prompt, the way a well-behaved model would answer.

Also here: `fake_frames`, a deterministic stand-in for vlalert.video.read_frames (same frames
for the same path and indices in every process, which the cache keys depend on).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 100
_LABEL_RE = re.compile(r"action=(SILENT|OBSERVE|ALERT) danger=([0-9.]+)")


def fake_frames(path: str, indices: Sequence[int]) -> np.ndarray:
    """Random but reproducible (N, 48, 64, 3) uint8 frames for (path, indices)."""
    seed = zlib.crc32(f"{path}|{list(indices)}".encode())
    return np.random.default_rng(seed).integers(0, 256, size=(len(indices), 48, 64, 3), dtype=np.uint8)


def user_text(request: dict[str, Any]) -> str:
    """All text parts of the request's user message(s)."""
    parts = []
    for msg in request.get("messages", []):
        content = msg.get("content")
        if msg.get("role") != "user":
            continue
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [c.get("text", "") for c in content if c.get("type") == "text"]
    return "\n".join(parts)


def label_of(request: dict[str, Any]) -> tuple[str, float]:
    """The (action, danger) the prompt states for the tick."""
    m = _LABEL_RE.search(user_text(request))
    if m is None:
        raise AssertionError("request states no label")
    return m.group(1), float(m.group(2))


def agreeing_reply(request: dict[str, Any]) -> dict[str, Any]:
    """A TickReply that agrees with the prompt's label."""
    action, danger = label_of(request)
    if action == "SILENT":
        belief = {"hazard": "none", "where": "none", "motion": "none", "ttc_s": None}
        analysis = "Traffic flows normally and the lane ahead is clear."
    else:
        belief = {"hazard": "vehicle", "where": "ahead", "motion": "braking", "ttc_s": 1.5}
        analysis = "The car ahead brakes hard about 1.5 s ahead; slow down."
    belief.update(danger=danger, ego_involved=action == "ALERT")
    return {"analysis": analysis, "belief": belief, "action": action}


def contradicting_reply(request: dict[str, Any]) -> dict[str, Any]:
    """A reply whose danger sits on the wrong side of 0.5 for the label's action."""
    reply = agreeing_reply(request)
    action, _ = label_of(request)
    reply["belief"]["danger"] = 0.2 if action == "ALERT" else 0.9
    if action == "OBSERVE":  # OBSERVE has no danger bound: contradict the action instead
        reply["action"] = "SILENT"
    return reply


@dataclass
class Reply:
    """One scripted HTTP answer. `content` None: the default agreeing reply."""

    status: int = 200
    content: str | dict[str, Any] | None = None
    body: dict[str, Any] | None = None  # full response body (overrides content)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    pad_bytes: int = 0  # whitespace appended to the JSON body (an oversized reply)


Script = Callable[[int, dict[str, Any]], Reply]


@dataclass
class Seen:
    body_sha256: str
    request: dict[str, Any]
    headers: dict[str, str]
    status: int | None = None  # what was answered (None: not answered, e.g. held or client gone)
    t: float = field(default_factory=time.monotonic)  # when it arrived
    peer: tuple[str, int] | None = None  # the client's (address, port): one per connection


def completion_body(content: str | None, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # a provider's front end accepts 64+ connections at once, not 5


class FakeLLMServer:
    """POST /v1/chat/completions on 127.0.0.1:<free port>, answering by `script`.

    `hold_after`: after that many 200 answers, further requests are held unanswered until
    `release()` (used to kill a client at a known point).
    """

    def __init__(self, script: Script | None = None, hold_after: int | None = None) -> None:
        self.script: Script = script or (lambda n, req: Reply())
        self.hold_after = hold_after
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_lines: list[str] = []  # custom_id of every request submitted in a created batch
        self.batch_polls = 1  # polls of a batch before it completes
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        self._release.set()

    def answered(self, status: int = 200) -> list[str]:
        """Body hashes of the requests answered with `status`, in order."""
        with self._lock:
            return [s.body_sha256 for s in self.seen if s.status == status]

    # -- Batch API

    def _file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            fid = f"file-{len(self.files) + 1:04d}"
            self.files[fid] = data
        return {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def _create_batch(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = self.files.get(req.get("input_file_id", ""))
        if data is None:
            return 404, {"error": {"message": "no such file"}}
        ids = [json.loads(line)["custom_id"] for line in data.splitlines() if line.strip()]
        with self._lock:
            bid = f"batch_{len(self.batches) + 1:04d}"
            self.batch_lines += ids
            self.batches[bid] = {
                "id": bid,
                "object": "batch",
                "endpoint": req["endpoint"],
                "input_file_id": req["input_file_id"],
                "completion_window": req["completion_window"],
                "created_at": int(time.time()),
                "status": "validating",
                "metadata": req.get("metadata"),
                "output_file_id": None,
                "error_file_id": None,
                "request_counts": {"completed": 0, "failed": 0, "total": len(ids)},
                "_polls": 0,
            }
            return 200, self._public(self.batches[bid])

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _poll_batch(self, bid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(bid)
            if batch is None:
                return 404, {"error": {"message": "no such batch"}}
            if batch["status"] in ("validating", "in_progress"):
                batch["_polls"] += 1
                batch["status"] = "in_progress"
                complete = batch["_polls"] >= self.batch_polls
            else:
                complete = False
            data = self.files[batch["input_file_id"]] if complete else b""
        if complete:
            out, err = [], []
            for n, text in enumerate(data.splitlines()):
                line = json.loads(text)
                reply = self.script(n, line["body"])
                if reply.status == 200:
                    content = reply.content if reply.content is not None else agreeing_reply(line["body"])
                    if isinstance(content, dict):
                        content = json.dumps(content)
                    body = reply.body or completion_body(content, line["body"].get("model", "?"))
                    out.append(
                        {
                            "id": f"req_{n}",
                            "custom_id": line["custom_id"],
                            "error": None,
                            "response": {"status_code": 200, "request_id": f"r{n}", "body": body},
                        }
                    )
                else:
                    body = {"error": {"message": f"scripted {reply.status}", "type": "test"}}
                    err.append(
                        {
                            "id": f"req_{n}",
                            "custom_id": line["custom_id"],
                            "error": None,
                            "response": {"status_code": reply.status, "request_id": f"r{n}", "body": body},
                        }
                    )
            dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
            out_file = self._file(dump(out), "out.jsonl", "batch_output")["id"] if out else None
            err_file = self._file(dump(err), "err.jsonl", "batch_output")["id"] if err else None
            with self._lock:
                batch.update(status="completed", output_file_id=out_file, error_file_id=err_file)
                batch["request_counts"] = {
                    "completed": len(out),
                    "failed": len(err),
                    "total": len(out) + len(err),
                }
        with self._lock:
            return 200, self._public(batch)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints: the client reuses its connections

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without TCP_NODELAY (which real servers set)
                # the body waits for the client's delayed ACK of the headers, ~40 ms per reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/batches":
                    with server._lock:
                        data = [server._public(b) for b in reversed(server.batches.values())]
                    body = {
                        "object": "list",
                        "data": data,
                        "has_more": False,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None,
                    }
                    self._send(200, body, {})
                elif path.startswith("/v1/batches/"):
                    self._send(*server._poll_batch(path.rsplit("/", 1)[1]), {})
                elif path.startswith("/v1/files/") and path.endswith("/content"):
                    data = server.files.get(path.split("/")[3])
                    if data is None:
                        self._send(404, {"error": {"message": "no such file"}}, {})
                    else:
                        self._send_bytes(200, data, "application/octet-stream")
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})

            def _multipart(self, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
                )
                return {
                    part.get_param("name", header="content-disposition"): (
                        part.get_filename(),
                        part.get_payload(decode=True),
                    )
                    for part in msg.iter_parts()
                }

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.rstrip("/")
                if path == "/v1/files":
                    fields = self._multipart(raw)
                    name, data = fields["file"]
                    self._send(200, server._file(data, name or "?", fields["purpose"][1].decode()), {})
                    return
                if path == "/v1/batches":
                    self._send(*server._create_batch(json.loads(raw)), {})
                    return
                if path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                request = json.loads(raw)
                seen = Seen(
                    hashlib.sha256(raw).hexdigest(),
                    request,
                    {k.lower(): v for k, v in self.headers.items()},
                    peer=tuple(self.client_address[:2]),
                )
                with server._lock:
                    n = len(server.seen)
                    server.seen.append(seen)
                    n_ok = sum(1 for s in server.seen if s.status == 200)
                if server.hold_after is not None and n_ok >= server.hold_after:
                    server._release.wait(timeout=30)
                    self.close_connection = True
                    return  # never answered: the client is gone by now
                reply = server.script(n, request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.body is not None:
                    body = reply.body
                elif reply.status == 200:
                    content = reply.content if reply.content is not None else agreeing_reply(request)
                    if isinstance(content, dict):
                        content = json.dumps(content)
                    body = completion_body(content, request.get("model", "?"))
                else:
                    body = {"error": {"message": f"scripted {reply.status}", "type": "test"}}
                if self._send(reply.status, body, reply.headers, reply.pad_bytes):
                    with server._lock:
                        seen.status = reply.status

            def _send_bytes(self, status: int, data: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str], pad: int = 0) -> bool:
                data = json.dumps(body).encode() + b" " * pad
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return False
                return True

        return Handler


# ---------------------------------------------------------------- a small labelled source


def clip_row(
    video_id: str,
    *,
    fps: float = 10.0,
    n_frames: int = 80,
    positive: bool = True,
    t_risky_s: float | None = 5.0,
    t_event_s: float | None = None,
    ego: bool | None = True,
    event_type: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One VIDEOS row (meta as the JSON string videos.parquet holds)."""
    return {
        "video_id": video_id,
        "source": "mix",
        "path": f"/videos/{video_id}.mp4",
        "fps": fps,
        "n_frames": n_frames,
        "duration_s": n_frames / fps,
        "width": 64,
        "height": 48,
        "official_split": "test",
        "is_positive": positive,
        "t_risky_s": t_risky_s if positive else None,
        "t_event_s": t_event_s if positive else None,
        "ego_involved": ego,
        "event_type": event_type,
        "meta": json.dumps(meta or {}, sort_keys=True),
    }


def base_config(**beliefs: Any) -> dict[str, Any]:
    """Raw workflow config of the one source `mix` (no gating by source; the gate file is never read)."""
    raw: dict[str, Any] = {
        "sources": {
            "mix": {"kind": "dota", "root": "unused", "prefix_negatives": True, "gate_scores": "unused"}
        },
        "labels": {"gated_sources": []},
        "gate": {"provider": "scores_file"},
        "demo": {"enabled": False},
    }
    if beliefs:
        raw["beliefs"] = beliefs
    return raw


def small_llm_clips() -> list[dict[str, Any]]:
    """8 trainable ticks: a DoTA-like positive (OBSERVE x3, ALERT x2, 1 post-event) and a negative."""
    return [
        clip_row("pos_dota", event_type="turning", meta={"anomaly_class": "ego: turning"}),
        clip_row("neg_nexar", fps=30.0, n_frames=150, positive=False, ego=False),
    ]


# ---------------------------------------------------------------- shared by the llm and batch tests

KEY = "sk-test-SECRET-0123456789abcdef"
ENV = "VLALERT_TEST_LLM_KEY"
ROW_COST = PROMPT_TOKENS / 1000 * 0.0025 + COMPLETION_TOKENS / 1000 * 0.01  # default prices: $0.0035
N_TICKS = 8  # pos_dota: 3 OBSERVE + 2 ALERT (+1 post-event, excluded); neg_nexar: 3 SILENT


def llm_config(tmp_path: Path, server: FakeLLMServer, **llm: Any) -> Any:
    """A validated workflow config whose beliefs use the `llm` provider against `server`."""
    from vlalert.config import validate_config

    settings = {
        "base_url": server.base_url,
        "model": "test-model",
        "api_key_env": ENV,
        "cache_dir": str(tmp_path / "cache"),
        "max_concurrency": 2,
        "timeout_s": 5.0,
    }
    settings.update(llm)
    return validate_config(base_config(provider="llm", progress=False, llm=settings))


def llm_source(cfg: Any) -> tuple[Any, Any]:
    """(labels, videos) of small_llm_clips under `cfg`."""
    import pyarrow as pa

    from vlalert.labels import label_source

    videos = pa.Table.from_pylist(small_llm_clips())
    return label_source(videos, None, "mix", cfg), videos


def is_tick(request: dict[str, Any], action: str, danger: float) -> bool:
    """Whether `request` asks about the tick labelled (action, danger)."""
    return f"action={action} danger={danger:.2f}" in user_text(request)


def is_retry(request: dict[str, Any]) -> bool:
    """Whether `request` is the one re-ask after a rejected reply."""
    return "previous answer was rejected" in user_text(request)
