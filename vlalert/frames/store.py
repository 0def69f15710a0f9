"""The frames store: each clip decoded once, the frames of its ticks' windows kept at model resolution.

Why a store: reading one tick's 8 frames from a 1280x720 H.264 clip seeks to a keyframe and decodes
a group of pictures, 150-370 ms of CPU per tick (DESIGN.md), >= 11 CPU-hours per pass over the
~132 k ticks of a full run, and SFT pays it again every epoch, in random order, on the training
process. The frames stage instead decodes each clip once, forward over its sorted frame indices,
resizes the frames its ticks' windows use to the model's image size with the processor's resize
(`vlalert.vlm.inputs.resize_frames`, so a model input built from the store equals one built from
the clip) and writes them to one Arrow IPC file per source. SFT and the cache stage read a tick's
window from it by (clip path, frame index): the file is memory-mapped, a read decodes only the asked
frames (one small JPEG each, or nothing for `raw`).

File (`results/frames/{source}.arrow`): one record batch per clip file, in the order of the clips'
paths, columns `path` (as in videos.parquet and the benchmark), `frame_idx` (int32, ascending) and
`data` (the encoded frame); the schema's metadata holds the codec, the JPEG quality and the frame
size, so a reader never guesses them. A clip's frames are the union of the windows of all its
labelled ticks (post-event ticks too: few, and the timelines read them); `{id}#prefix` clips are
their parent's ticks of the same file.

Writing is resumable: clips are done in chunks of `chunk_clips`, each sealed in its own IPC file under
`{store}.chunks/` with the fingerprint of what determines it (codec, quality, size, and per clip its
path, file size, mtime and frame list); a rerun after a kill keeps the chunks whose fingerprint still
matches. Clips are decoded in `workers` spawned processes (one thread each); the bytes of the store
do not depend on the number of workers or on the chunking.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vlalert.atomic import atomic_path
from vlalert.frames.config import FramesConfig
from vlalert.video import FrameReadError, VideoError, VideoFrames, frame_worker_pool, in_blocks
from vlalert.vlm.config import VLMConfig

log = logging.getLogger(__name__)

SPEC_KEY = b"vlalert.frames"  # schema metadata: the StoreSpec as JSON
FINGERPRINT_KEY = b"vlalert.frames.fingerprint"  # chunk files only
READ_BLOCK = 32  # frames resized and encoded together while reading a clip forward (bounds memory)

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("frame_idx", pa.int32(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
    ]
)


@dataclass(frozen=True)
class StoreSpec:
    """How a store's frames are encoded: what a reader needs and what a model input depends on."""

    codec: str  # "jpeg" | "raw"
    quality: int  # JPEG quality (codec jpeg)
    height: int
    width: int

    def metadata(self) -> dict[bytes, bytes]:
        return {SPEC_KEY: json.dumps(asdict(self), sort_keys=True).encode()}

    @classmethod
    def from_metadata(cls, meta: Mapping[bytes, bytes] | None, file: str | os.PathLike[str]) -> StoreSpec:
        raw = (meta or {}).get(SPEC_KEY)
        if raw is None:
            raise ValueError(f"{file}: not a frames store (its schema has no {SPEC_KEY.decode()} metadata)")
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class ClipFrames:
    """One clip file and the frames its ticks need (sorted, unique)."""

    video_id: str  # for error messages
    path: str
    frames: tuple[int, ...]


def store_spec(frames: FramesConfig, model: VLMConfig) -> StoreSpec:
    """The spec of a run's stores: the frames config's codec at the model's image size."""
    return StoreSpec(frames.codec, frames.quality, model.image_height, model.image_width)


# ----------------------------------------------------------------------------------------- what


def clip_frames(labels: pa.Table, videos: pa.Table) -> list[ClipFrames]:
    """The frames each clip file's ticks need, from a source's labels and its videos table, by path.

    Ticks of `{id}#prefix` clips (parent_id set) read their parent's file (they are the parent's
    ticks, so they add no frame). Labels naming a clip the videos table lacks are an error (the two
    files must come from the same run).
    """
    paths: dict[str, str] = {}
    for vid, path in zip(
        videos.column("video_id").to_pylist(), videos.column("path").to_pylist(), strict=True
    ):
        paths[vid] = path
    parent = (
        labels.column("parent_id").to_pylist() if "parent_id" in labels.column_names else [None] * len(labels)
    )
    wanted: dict[str, set[int]] = {}
    first_id: dict[str, str] = {}
    missing: set[str] = set()
    for vid, idx, par in zip(
        labels.column("video_id").to_pylist(), labels.column("frame_idx").to_pylist(), parent, strict=True
    ):
        path = paths.get(par or vid)
        if path is None:
            missing.add(par or vid)
            continue
        first_id.setdefault(path, vid)
        wanted.setdefault(path, set()).update(int(i) for i in idx)
    if missing:
        raise ValueError(f"labels name clips that videos.parquet lacks: {sorted(missing)[:5]}")
    return [ClipFrames(first_id[p], p, tuple(sorted(wanted[p]))) for p in sorted(wanted)]


# ----------------------------------------------------------------------------------- the codecs


def encode_frame(frame: np.ndarray, spec: StoreSpec) -> bytes:
    """One (h, w, 3) uint8 frame as the store keeps it."""
    if spec.codec == "raw":
        return np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
    from PIL import Image

    buf = io.BytesIO()
    # 4:4:4 (no chroma subsampling): the model sees colour edges at full resolution; ~1.3x the bytes
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=spec.quality, subsampling=0)
    return buf.getvalue()


def decode_frame(data: bytes | memoryview, spec: StoreSpec) -> np.ndarray:
    """The (h, w, 3) uint8 frame back (raw: the exact pixels; jpeg: the JPEG's decoding)."""
    if spec.codec == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(spec.height, spec.width, 3)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


# ----------------------------------------------------------------------------------------- write


def resized_forward(
    video: VideoFrames, frames: Sequence[int], size: tuple[int, int] | None
) -> Iterator[np.ndarray]:
    """The sorted, unique `frames` of an opened clip, decoded in one forward pass and resized to `size`
    (h, w) with the processor's resize (None: as decoded), as (n, h, w, 3) uint8 blocks of at most
    READ_BLOCK frames, so that a long clip never holds all its frames at full size."""
    from vlalert.vlm.resize import resize_frames

    for _, block in in_blocks(video.iter_forward(frames), READ_BLOCK):
        if size is None or block.shape[1:3] == tuple(size):
            yield block
        else:
            yield resize_frames(block, size).permute(0, 2, 3, 1).contiguous().numpy()


def encode_clip(clip: ClipFrames, spec: StoreSpec) -> list[bytes]:
    """The clip's needed frames, decoded in one forward pass, resized to the spec's size, encoded."""
    from vlalert.video import VideoFrames

    try:
        with VideoFrames(clip.path) as video:  # clip.frames: sorted, unique
            blocks = resized_forward(video, clip.frames, (spec.height, spec.width))
            return [encode_frame(f, spec) for block in blocks for f in block]
    except FrameReadError as err:  # a file that broke after ingest: say which clip
        raise err.for_clip(clip.video_id) from None
    except VideoError as err:
        raise VideoError(f"clip {clip.video_id}: {err}") from None


def _encode_job(args: tuple[ClipFrames, StoreSpec]) -> list[bytes]:
    return encode_clip(*args)


def clip_batch(clip: ClipFrames, data: Sequence[bytes]) -> pa.RecordBatch:
    if len(data) != len(clip.frames):
        raise ValueError(f"clip {clip.video_id}: {len(data)} encoded frames for {len(clip.frames)} indices")
    return pa.record_batch(
        [
            pa.array([clip.path] * len(data), pa.string()),
            pa.array(clip.frames, pa.int32()),
            pa.array(data, pa.binary()),
        ],
        schema=SCHEMA,
    )


def chunk_fingerprint(spec: StoreSpec, clips: Sequence[ClipFrames]) -> str:
    """sha256 of what determines a chunk's bytes: the spec and, per clip, its file and frame list."""
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for clip in clips:
        try:
            st = os.stat(clip.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"\0{clip.path}\0{stamp}\0{','.join(map(str, clip.frames))}".encode())
    return h.hexdigest()


def chunk_dir(store: str | os.PathLike[str]) -> Path:
    return Path(f"{store}.chunks")


def _write_ipc(
    path: str | os.PathLike[str], batches: Iterable[pa.RecordBatch], meta: dict[bytes, bytes]
) -> None:
    with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
        with pa.ipc.new_file(sink, SCHEMA.with_metadata(meta)) as writer:
            for batch in batches:
                writer.write_batch(batch)


def _done_chunk(path: Path, fp: str) -> bool:
    if not path.is_file():
        return False
    try:
        with pa.memory_map(str(path), "r") as src:
            meta = pa.ipc.open_file(src).schema.metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(FINGERPRINT_KEY, b"").decode() == fp


def write_store(
    clips: Sequence[ClipFrames],
    spec: StoreSpec,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    chunk_clips: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode, resize and encode every clip's frames into the store at `out`; returns counts.

    Chunks a killed run sealed are kept when their fingerprint matches (see module docstring); the
    store is assembled from the chunks in order and written atomically.
    """
    from tqdm import tqdm

    folder = chunk_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [list(clips[a : a + chunk_clips]) for a in range(0, len(clips), chunk_clips)]
    files = [folder / f"chunk-{k:05d}.arrow" for k in range(len(chunks))]
    fps = [chunk_fingerprint(spec, chunk) for chunk in chunks]
    todo = [k for k in range(len(chunks)) if not _done_chunk(files[k], fps[k])]
    resumed = len(chunks) - len(todo)
    if resumed:
        log.info("frames: %d of %d chunks already done (resumed)", resumed, len(chunks))
    pool = frame_worker_pool(workers) if workers > 1 and todo else None
    bar = tqdm(total=sum(len(chunks[k]) for k in todo), desc="frames", unit="clip", disable=not progress)
    try:
        for k in todo:
            jobs = [(clip, spec) for clip in chunks[k]]
            results = pool.map(_encode_job, jobs) if pool is not None else map(_encode_job, jobs)
            batches = []
            for clip, data in zip(chunks[k], results, strict=True):
                batches.append(clip_batch(clip, data))
                bar.update(1)
            _write_ipc(files[k], batches, {**spec.metadata(), FINGERPRINT_KEY: fps[k].encode()})
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    def assembled() -> Iterator[pa.RecordBatch]:
        for file in files:
            with pa.memory_map(str(file), "r") as src:
                reader = pa.ipc.open_file(src)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i).replace_schema_metadata(None)

    _write_ipc(out, assembled(), spec.metadata())
    shutil.rmtree(folder, ignore_errors=True)
    n_frames = sum(len(c.frames) for c in clips)
    return {
        "clips": len(clips),
        "frames": n_frames,
        "bytes": Path(out).stat().st_size,
        "chunks": len(chunks),
        "resumed_chunks": resumed,
    }


# ------------------------------------------------------------------------------------------ read


class FrameStore:
    """One store file, memory-mapped; `read(path, indices)` gives a tick window's frames."""

    def __init__(self, file: str | os.PathLike[str]) -> None:
        self.file = Path(file)
        try:
            self._map = pa.memory_map(str(self.file), "r")
            self._reader = pa.ipc.open_file(self._map)
        except (OSError, pa.ArrowInvalid) as err:
            raise ValueError(f"{self.file}: cannot open the frames store: {err}") from None
        self.spec = StoreSpec.from_metadata(self._reader.schema.metadata, self.file)
        self._batches: dict[str, int] = {}
        for i in range(self._reader.num_record_batches):
            paths = self._reader.get_batch(i).column(0)
            if len(paths):
                self._batches[paths[0].as_py()] = i
        self._rows: dict[str, tuple[pa.RecordBatch, dict[int, int]]] = {}
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        return list(self._batches)

    def __contains__(self, path: object) -> bool:
        return path in self._batches

    def _clip(self, path: str) -> tuple[pa.RecordBatch, dict[int, int]]:
        with self._lock:
            got = self._rows.get(path)
            if got is None:
                batch = self._reader.get_batch(self._batches[path])
                rows = {int(f): r for r, f in enumerate(batch.column(1).to_numpy())}
                got = self._rows[path] = (batch, rows)
            return got

    def read(self, path: str, indices: Sequence[int], clip: str | None = None) -> np.ndarray:
        """Frames `indices` of the clip file `path` as (N, h, w, 3) uint8 (indices may repeat)."""
        if path not in self._batches:
            raise FrameReadError(
                f"{self.file}: holds no frames of {path}{f' (clip {clip})' if clip else ''}: the store was "
                "built from other labels (rerun the frames stage)",
                path=path,
                clip=clip,
            )
        batch, rows = self._clip(path)
        data = batch.column(2)
        out = np.empty((len(indices), self.spec.height, self.spec.width, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            r = rows.get(int(i))
            if r is None:
                raise FrameReadError(
                    f"{self.file}: holds no frame {int(i)} of {path}{f' (clip {clip})' if clip else ''}: "
                    "the store was built from other labels (rerun the frames stage)",
                    path=path,
                    frame=int(i),
                    clip=clip,
                )
            frame = decode_frame(data[r].as_buffer(), self.spec)
            if frame.shape != out.shape[1:]:
                raise FrameReadError(
                    f"{self.file}: frame {int(i)} of {path} decodes to {frame.shape}, the store's frames "
                    f"are {out.shape[1:]}",
                    path=path,
                    frame=int(i),
                    clip=clip,
                )
            out[k] = frame
        return out

    def close(self) -> None:
        self._rows.clear()
        self._map.close()


class FrameStores:
    """Several stores (one per source) read as one: a window is looked up by its clip's path.

    Picklable (a DataLoader or frame worker opens its own maps): only the file names travel.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]]) -> None:
        self.files = tuple(str(f) for f in files)
        self._stores: list[FrameStore] | None = None
        self._by_path: dict[str, FrameStore] = {}

    def _open(self) -> None:
        if self._stores is None:
            self._stores = [FrameStore(f) for f in self.files]
            for store in self._stores:
                for path in store.paths():
                    self._by_path.setdefault(path, store)

    def specs(self) -> list[dict[str, Any]]:
        """Each store's spec: what a model input built from them depends on (fingerprints hold it)."""
        self._open()
        assert self._stores is not None
        return [asdict(s.spec) for s in self._stores]

    def read(self, path: str, indices: Sequence[int], clip: str | None = None) -> np.ndarray:
        self._open()
        store = self._by_path.get(path)
        if store is None:
            raise FrameReadError(
                f"no frames store of {', '.join(self.files) or '(none given)'} holds {path}"
                f"{f' (clip {clip})' if clip else ''}: rerun the frames stage of its source",
                path=path,
                clip=clip,
            )
        return store.read(path, indices, clip)

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["files"])  # type: ignore[misc]


_OPEN: dict[tuple[str, ...], FrameStores] = {}


def open_stores(files: Sequence[str | os.PathLike[str]]) -> FrameStores:
    """The process's one `FrameStores` of these files (frame workers keep theirs between tasks)."""
    key = tuple(str(f) for f in files)
    if key not in _OPEN:
        _OPEN[key] = FrameStores(key)
    return _OPEN[key]
