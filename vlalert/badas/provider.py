"""The `badas` gate provider: Open-BADAS p_collision at every tick of every clip.

For each clip, the tick times come from `vlalert.ticks.tick_times` (the same ticks every stage
uses) and each tick's 16-frame, 8 fps window from `vlalert.badas.windows` (by default Open-BADAS's
own timing: a tick at t gets the score their code gives 8 fps sample floor(8 t), i.e. the window of
the 16 samples before it). Windows are scored in batches of `batch_size`; each batch decodes the
union of its windows' frames once (windows of neighbouring ticks overlap), preprocesses each frame
once on the model's device (their preprocessing is per frame, so a frame shared by windows gives
the same pixels), and gathers them into (batch, frames, 3, crop, crop). A tick whose window starts
before the clip's first frame gets a null score (their NaN), or a score on a window padded with
black frames or with frame 0, as `incomplete_window` says.

The model runs on CUDA in bfloat16 when a GPU is present and on CPU in float32 otherwise
(`device` / `dtype` override both). The hub is only contacted when `hub_repo` is configured, once
per file, through `huggingface_hub.hf_hub_download` at the pinned revision (HF_HUB_OFFLINE is honoured).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from vlalert.badas.config import BadasConfig
from vlalert.badas.model import BadasModel, preprocess_frames, weight_files
from vlalert.badas.windows import BLACK, Window, clip_windows
from vlalert.config import TicksConfig, WindowConfig
from vlalert.devices import resolve_device, resolve_dtype
from vlalert.schemas import table_from_rows
from vlalert.ticks import tick_times
from vlalert.video import VideoError, VideoFrames

PROVIDER = "badas"


class FrameReader(Protocol):
    def read(self, indices: Sequence[int]) -> np.ndarray: ...


FramesLoader = Callable[[str], FrameReader]


def resolve_weights(cfg: BadasConfig) -> tuple[Path, Path]:
    """(weights file, config file): local paths as configured, or fetched from the hub (cached)."""
    problem = cfg.check_weights_source()
    if problem:
        raise ValueError(problem)
    if cfg.model_path:
        return weight_files(cfg.model_path, cfg.config_path)
    import huggingface_hub  # only a hub run needs it; called through the module so tests can stub it

    files = [
        Path(
            huggingface_hub.hf_hub_download(
                repo_id=cfg.hub_repo, filename=name, revision=cfg.hub_revision, cache_dir=cfg.cache_dir
            )
        )
        for name in (cfg.hub_weights, cfg.hub_config)
    ]
    return files[0], files[1]


def load_model(cfg: BadasConfig) -> BadasModel:
    weights, config_file = resolve_weights(cfg)
    device = torch.device(resolve_device(cfg.device, "gate.badas.device"))
    return BadasModel.from_pretrained(
        weights, config_file, device=device, dtype=resolve_dtype(cfg.dtype, device)
    )


def _model_device_dtype(model: BadasModel) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def score_windows(
    reader: FrameReader,
    windows: Sequence[Window],
    model: BadasModel,
    batch_size: int,
    temperature: float | None = None,
) -> list[float]:
    """p_collision of each window; a BLACK index reads an all-zero (black) frame."""
    device, dtype = _model_device_dtype(model)
    out: list[float] = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        needed = sorted({i for w in batch for i in w.indices if i != BLACK})
        frames = reader.read(needed) if needed else np.zeros((0, 224, 224, 3), dtype=np.uint8)
        if frames.shape[0] != len(needed):
            raise VideoError(f"asked for {len(needed)} frames, got {frames.shape[0]}")
        if any(BLACK in w.indices for w in batch):  # one black frame of the clip's size, last
            frames = np.concatenate([frames, np.zeros((1, *frames.shape[1:]), dtype=frames.dtype)])
        pixels = preprocess_frames(frames, model.config, device=device, dtype=dtype)
        row = {f: j for j, f in enumerate(needed)} | {BLACK: len(needed)}
        gather = torch.tensor([[row[i] for i in w.indices] for w in batch], device=device)
        p = model.collision_probability(pixels[gather], temperature)
        out.extend(float(x) for x in p.cpu())
    return out


def _pad(window: Window, mode: str) -> Window | None:
    """The window as scored under `incomplete_window`, None when it gets no score."""
    if window.complete:
        return window
    if mode == "null":
        return None
    if mode == "repeat_first":
        return Window(tuple(0 if i == BLACK else i for i in window.indices), complete=False)
    return window  # black: BLACK positions read black frames


class BadasScorer:
    """Scores one clip's ticks; callable as `score(clip, ts)`, the shape of `vlalert.gate`'s scorers.

    `BadasScorer(cfg, model=None, frames_loader=None, total=None)(clip, ts) -> list[float | None]`:
    `clip` needs the videos-table fields video_id, path, fps and n_frames; `ts` are the clip's tick
    times (s); one p_collision per tick, None where the window reaches before the clip and
    `incomplete_window` is "null". The model is loaded once (from `cfg`, unless one is given) and
    kept for every clip; `total` is the number of clips, for the progress bar.
    """

    def __init__(
        self,
        cfg: BadasConfig,
        model: BadasModel | None = None,
        frames_loader: FramesLoader | None = None,
        total: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model if model is not None else load_model(cfg)
        tubelet = self.model.config.encoder.tubelet_size
        if cfg.frames % tubelet:
            raise ValueError(
                f"gate.badas.frames ({cfg.frames}) must be a multiple of the model's tubelet size {tubelet}"
            )
        self.frames_loader: FramesLoader = frames_loader or VideoFrames
        self._bar: Any = None
        if cfg.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="badas", unit="clip")

    def __call__(self, clip: Mapping[str, Any], ts: Sequence[float] | np.ndarray) -> list[float | None]:
        ts = [float(t) for t in ts]
        fps, n_frames = float(clip["fps"]), int(clip["n_frames"])
        windows = clip_windows(ts, fps, n_frames, self.cfg.frames, self.cfg.sample_fps, self.cfg.timing)
        fed = [_pad(w, self.cfg.incomplete_window) for w in windows]
        todo = [i for i, w in enumerate(fed) if w is not None]
        scores: list[float | None] = [None] * len(ts)
        if todo:
            reader: FrameReader | None = None
            try:
                reader = self.frames_loader(clip["path"])
                ps = score_windows(
                    reader, [fed[i] for i in todo], self.model, self.cfg.batch_size, self.cfg.temperature
                )
            except VideoError as err:
                raise VideoError(f"clip {clip['video_id']}: {err}") from None
            finally:
                close = getattr(reader, "close", None)
                if close is not None:
                    close()
            for i, p in zip(todo, ps, strict=True):
                scores[i] = p
        if self._bar is not None:
            self._bar.update(1)
        return scores

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def badas_scores(
    videos: pa.Table,
    cfg: BadasConfig,
    ticks: TicksConfig,
    window: WindowConfig,
    frames_loader: FramesLoader | None = None,
    model: BadasModel | None = None,
) -> pa.Table:
    """GATE table (video_id, t_s, p_collision, provider="badas"), sorted by video_id, t_s.

    Ticks as `vlalert.gate.gate_scores` makes them (tick_times with `ticks` and `window`);
    `model` None loads the weights `cfg` names.
    """
    clips = sorted(videos.to_pylist(), key=lambda c: c["video_id"])
    scorer = BadasScorer(cfg, model=model, frames_loader=frames_loader, total=len(clips))
    rows = []
    try:
        for clip in clips:
            ts = tick_times(int(clip["n_frames"]), float(clip["fps"]), ticks, window)
            for t, p in zip(ts, scorer(clip, ts), strict=True):
                rows.append(
                    {"video_id": clip["video_id"], "t_s": float(t), "p_collision": p, "provider": PROVIDER}
                )
    finally:
        scorer.close()
    return table_from_rows("gate", rows)
