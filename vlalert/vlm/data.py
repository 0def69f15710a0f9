"""SFT data: which benchmark ticks are trained on, their model inputs, and the order they come in.

The order is a pure function of (seed, number of ticks, position): an endless stream of
per-epoch permutations, `np.random.default_rng([seed, epoch]).permutation(n)`, cut into global
batches of `batch_size`. Optimiser step s (0-based) always trains on stream positions
[s * batch_size, (s + 1) * batch_size), so a run resumed at step s skips exactly the consumed
batches without replaying anything, and a data-parallel run trains on the same examples as a
single process: rank r takes the r-th contiguous share of each global batch. The SFT Trainer resumes
by skipping the batches already trained, which only draws indices (no example is built).

Frames of a tick (`path`, 8 `frame_idx`) are read from the frames stores (vlalert.frames.store:
each clip decoded once by the frames stage, at the model's resolution), or, for library use without
stores, from the clip through `vlalert.video` (opening a video costs an index scan, so a dataset
keeps a few readers open, least recently used out). Neither is shared between processes:
DataLoader workers open their own.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vlalert.video import FrameReadError, VideoFrames
from vlalert.vlm.config import VLMConfig
from vlalert.vlm.inputs import build_example, collate, tick_target

ROW_COLUMNS: tuple[str, ...] = (
    "video_id",
    "source",
    "tick",
    "frame_idx",
    "fps",
    "path",
    "action",
    "analysis",
    "belief",
)


def trainable_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The benchmark rows SFT trains and validates on, sorted by (video_id, tick).

    Excluded (post-event) ticks and prefix clips (`parent_id` set: the parent's ticks again) have
    no target. Sorting makes the data order independent of the file's row order.
    """
    keep = pc.and_(pc.invert(table["excluded"]), pc.is_null(table["parent_id"]))
    rows = table.filter(keep).select(list(ROW_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda r: (r["video_id"], r["tick"]))


def target_corpus(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """SFT targets (analysis, belief span, action span) of the rows: the tiny tokenizer's corpus."""
    return [tick_target(r) for r in rows]


def rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    """Identity of a set of ticks and their targets, for the checkpoint fingerprint."""
    h = hashlib.sha256()
    for r in rows:
        key = f"{r['video_id']}\t{r['tick']}\t{r['action']}\t{r['belief']}\t{r['analysis']}\n"
        h.update(key.encode("utf-8"))
    return h.hexdigest()


def evenly_spaced(n: int, k: int) -> list[int]:
    """At most k indices spread evenly over range(n): a fixed, representative validation subset."""
    if n <= 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


@functools.lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch `epoch` (read-only; cached: every step of an epoch reads the same one)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.setflags(write=False)
    return perm


def global_batch(n: int, seed: int, step: int, batch_size: int) -> list[int]:
    """Example indices of optimiser step `step` (0-based): stream positions [step * B, (step + 1) * B)."""
    if n <= 0:
        raise ValueError("no examples to draw batches from")
    out: list[int] = []
    pos = step * batch_size
    end = pos + batch_size
    while pos < end:
        epoch, offset = divmod(pos, n)
        take = min(end - pos, n - offset)
        out.extend(int(i) for i in epoch_permutation(n, seed, epoch)[offset : offset + take])
        pos += take
    return out


def rank_micro_batches(batch: Sequence[int], rank: int, world: int, micro_batch: int) -> list[list[int]]:
    """Rank `rank`'s contiguous share of a global batch, cut into micro-batches."""
    if len(batch) % (world * micro_batch):
        raise ValueError(
            f"a batch of {len(batch)} does not split into {world} ranks x micro-batches of {micro_batch}"
        )
    share = len(batch) // world
    mine = list(batch[rank * share : (rank + 1) * share])
    return [mine[i : i + micro_batch] for i in range(0, share, micro_batch)]


class StepSampler:
    """Batch sampler of one rank: its micro-batches for steps [start_step, max_steps), in order."""

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        micro_batch: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.seed, self.batch_size, self.micro_batch = n, seed, batch_size, micro_batch
        self.start_step, self.max_steps, self.rank, self.world = start_step, max_steps, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            batch = global_batch(self.n, self.seed, step, self.batch_size)
            yield from rank_micro_batches(batch, self.rank, self.world, self.micro_batch)

    def __len__(self) -> int:
        per_step = self.batch_size // (self.world * self.micro_batch)
        return max(0, self.max_steps - self.start_step) * per_step


class FrameReaders:
    """Open clips by path, at most `max_open` at a time (least recently used closed first)."""

    def __init__(self, max_open: int = 16) -> None:
        self.max_open = max_open
        self._open: OrderedDict[str, VideoFrames] = OrderedDict()

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray:
        clip = self._open.pop(path, None)
        if clip is None:
            clip = VideoFrames(path)
        self._open[path] = clip
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return clip.read(indices)


class FrameSource(Protocol):
    """Where tick windows are read (vlalert.frames.store.FrameStores in the workflow); picklable."""

    def read(self, path: str, indices: Sequence[int]) -> np.ndarray: ...


class TickDataset(torch.utils.data.Dataset):
    """Model inputs (`inputs.build_example`) of benchmark ticks.

    Frames come from the frames stores (`frames`: vlalert.frames.store.FrameStores, what the
    workflow gives: each clip decoded once, windows read at memory speed), or, without stores, from
    the clips themselves (a seek and a decode per tick: library use on a few ticks).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        tokenizer: Any,
        cfg: VLMConfig,
        *,
        with_target: bool,
        cache_examples: bool = False,
        max_open: int = 16,
        frames: FrameSource | None = None,
    ) -> None:
        self.rows = list(rows)
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.with_target = with_target
        self.cache_examples = cache_examples
        self.max_open = max_open
        self.frames = frames
        self._readers: FrameReaders | None = None
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i in self._cache:
            return self._cache[i]
        row = self.rows[i]
        try:
            if self.frames is not None:
                frames = self.frames.read(row["path"], row["frame_idx"])
            else:
                if self._readers is None:
                    self._readers = FrameReaders(self.max_open)
                frames = self._readers.read(row["path"], row["frame_idx"])
        except FrameReadError as err:  # a file that broke after ingest: say which clip and tick
            raise err.for_clip(row["video_id"], f"tick {row.get('tick')}") from None
        example = build_example(row, frames, self.tokenizer, self.cfg, with_target=self.with_target)
        if self.cache_examples:
            self._cache[i] = example
        return example

    def __getstate__(self) -> dict[str, Any]:
        # open decoders cannot cross into a worker process; each worker opens its own
        state = dict(self.__dict__)
        state["_readers"] = None
        return state


class Collator:
    """`inputs.collate` with the tokenizer's pad id: a picklable collate_fn for DataLoader workers."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(examples, self.pad_id)
