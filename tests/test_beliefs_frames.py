"""The llm provider's frames (vlalert.beliefs.frames.ClipJpegs): each clip read once, same bytes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vlalert.beliefs import frames as beliefs_frames
from vlalert.beliefs.frames import ClipJpegs
from vlalert.beliefs.request import encode_frames


class Clips:
    """A frames loader of synthetic clips whose frame i is the same whatever else is read with it."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, list[int]]] = []
        self._lock = threading.Lock()

    def __call__(self, path: str, indices: Sequence[int]) -> np.ndarray:
        with self._lock:
            self.reads.append((path, list(indices)))
        return np.stack(
            [
                np.random.default_rng([len(path), int(i)]).integers(0, 256, (48, 64, 3), np.uint8)
                for i in indices
            ]
        )


def windows(path: str, ticks: int) -> list[tuple[str, list[int]]]:
    """1 Hz ticks of a 10 fps clip, 8 frames over 2 s: neighbouring windows share half their frames."""
    return [(path, [10 * t + 10 + k * 10 // 4 for k in range(-4, 4)]) for t in range(ticks)]


def test_each_clip_is_read_once_and_each_tick_gets_the_bytes_a_per_tick_read_gives():
    loader = Clips()
    ticks = windows("a.mp4", 6) + windows("bb.mp4", 3)
    jp = ClipJpegs(ticks, loader, max_side=512, quality=90)
    for path, idx in ticks:
        assert jp.jpegs(path, idx) == encode_frames(loader(path, idx), 512, 90)
    clip_reads = [r for r in loader.reads if len(r[1]) > 8]
    assert [p for p, _ in clip_reads] == ["a.mp4", "bb.mp4"] and jp.clip_reads == 2
    assert all(idx == sorted(set(idx)) for _, idx in clip_reads)  # one forward pass, no repeats


def test_a_long_clip_is_read_forward_in_blocks_and_freed_after_its_last_tick(monkeypatch):
    monkeypatch.setattr(beliefs_frames, "READ_BLOCK", 8)
    loader = Clips()
    ticks = windows("a.mp4", 5)
    jp = ClipJpegs(ticks, loader, max_side=512, quality=90)
    jp.jpegs(*ticks[0])
    blocks = [idx for _, idx in loader.reads]
    flat = [i for b in blocks for i in b]
    assert all(len(b) <= 8 for b in blocks) and flat == sorted(set(flat))
    for t in ticks[1:]:
        jp.jpegs(*t)
    assert jp.clip_reads == 1 and not jp._done  # the clip's JPEGs are gone once every tick took them


def test_ticks_of_one_clip_asked_together_wait_for_one_read():
    loader = Clips()
    ticks = windows("a.mp4", 8)
    jp = ClipJpegs(ticks, loader, max_side=512, quality=90)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: jp.jpegs(*t), ticks))
    assert jp.clip_reads == 1 and [len(g) for g in got] == [8] * 8


def test_a_window_that_was_not_announced_is_still_served():
    loader = Clips()
    jp = ClipJpegs(windows("a.mp4", 1), loader, max_side=512, quality=90)
    assert jp.jpegs("c.mp4", [3, 1]) == encode_frames(loader("c.mp4", [3, 1]), 512, 90)


def test_a_provider_run_reads_each_clip_once_and_sends_the_per_tick_bytes(tmp_path):
    from llm_server import ENV, KEY, FakeLLMServer, llm_config, llm_source

    from vlalert.beliefs.stage import belief_contexts, generate_beliefs

    loader = Clips()
    with FakeLLMServer() as server:
        cfg = llm_config(tmp_path, server)
        labels, videos = llm_source(cfg)
        out = generate_beliefs(labels, videos, cfg, frames_loader=loader, environ={ENV: KEY})
        contexts = belief_contexts(labels, videos, cfg)
        assert out.num_rows == len(contexts) and len(server.seen) == len(contexts)
        clips = {c.path for c in contexts}
        assert sorted(p for p, _ in loader.reads) == sorted(clips)  # one read per clip (blocks of 32 max)
        llm = cfg.beliefs.llm
        sent = {
            base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
            for seen in server.seen
            for msg in seen.request["messages"]
            if isinstance(msg["content"], list)
            for part in msg["content"]
            if part.get("type") == "image_url"
        }
        per_tick = {
            j
            for c in contexts
            for j in encode_frames(loader(c.path, c.frame_idx), llm.max_image_side, llm.jpeg_quality)
        }
        assert sent == per_tick


def test_clips_on_disk_are_decoded_forward_once_and_give_the_per_tick_bytes(tmp_path):
    """The stage's own loader (ClipReader): one sequential decode per clip, the bytes of a per-tick read."""
    import av

    from vlalert.beliefs.frames import ClipReader
    from vlalert.video import read_frames

    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(40):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    ticks = windows(str(path), 3)
    calls = []

    class Counting(ClipReader):
        def forward(self, p, wanted):
            calls.append(list(wanted))
            yield from super().forward(p, wanted)

    jp = ClipJpegs(ticks, Counting(), max_side=512, quality=90)
    for p, idx in ticks:
        assert jp.jpegs(p, idx) == encode_frames(read_frames(p, idx), 512, 90)
    assert calls == [sorted({i for _, w in ticks for i in w})]
