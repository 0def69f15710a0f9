"""The Python API of a trained run: per-tick SILENT / OBSERVE / ALERT for any dashcam video.

    from vlalert import Alerter

    alerter = Alerter.from_run("runs/demo")           # a folder written by `vlalert export-run`
    ticks = alerter.predict("clip.mp4")               # pyarrow.Table, one row per tick
    ticks = alerter.predict(["a.mp4", "b.mp4"])       # several clips, or a glob: "videos/*.mp4"
    df = polars.from_arrow(ticks)                     # if you prefer polars (or ticks.to_pandas())

A row per tick of each clip, in clip then time order: `video` (the path as given or matched),
`t_s` (time in the clip, s), `tick`, `frame_idx` (the frames the tick saw), `generated_text` (the
VLM's analysis, belief and action), `belief_parsed`, `p_danger` (DangerHead), `p_silent`,
`p_observe`, `p_alert` (PolicyHead), `action` (the FSM's decision: what a driver would be shown) and
`vlm_action` (the action the VLM wrote itself, null when it wrote none). With several seeds (an
exported run holds every seed; `seeds=` picks some) the probabilities are the mean over the seeds,
each rolled out through the FSM as the score stage scores it, and `action` is the FSM's decoding of
the mean.

`Alerter.from_results(results, config)` reads the workflow's own results tree instead (what
`vlalert predict --run RESULTS_DIR` does). Both go through `vlalert.predict.Predictor`, the
code the CLI uses too, so a number here is the number `vlalert predict` writes. The VLM is
loaded on the first clip and kept for the next ones. Libraries' warnings, log lines and loading bars
stay out of the terminal unless `verbose=True`. Every problem with the run or a video is a
`vlalert.predict.PredictError` (`RunPackageError` for an exported run) whose one line names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from vlalert.config import ConfigError, WorkflowConfig, load_config
from vlalert.predict import (
    PredictError,
    Predictor,
    PredictResult,
    TickPlan,
    expand_videos,
    library_output,
    missing_run_file,
    one_line,
    run_paths,
    write_outputs,
)
from vlalert.predict_outputs import OutputFormat

if TYPE_CHECKING:
    from vlalert.run_package import PackagedRun

VideoArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class ClipPrediction:
    """One clip's ticks: its path, tick plan and PREDICTIONS table (vlalert.schemas, no `video` column)."""

    video: Path
    plan: TickPlan
    table: pa.Table


class Alerter:
    """A trained run, ready to predict. Build it with `from_run` or `from_results`."""

    def __init__(
        self,
        predictor: Predictor,
        source: Path,
        *,
        package: PackagedRun | None = None,
        verbose: bool = False,
    ) -> None:
        self._predictor = predictor
        self.source = source  # the exported run's folder or the results tree
        self.package = package  # the exported run's manifest and files (from_run only)
        self.verbose = verbose

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_run(
        cls,
        folder: str | os.PathLike[str],
        *,
        seeds: Sequence[int] | None = None,
        device: str | None = None,
        verify: bool = True,
        verbose: bool = False,
    ) -> Alerter:
        """An exported run (`vlalert export-run`). `seeds`: default every exported seed; `device`:
        "auto" / "cpu" / "cuda", default the run's `cache.device`; `verify`: check every file's
        sha256 against run.json (sizes are always checked)."""
        from vlalert.run_package import load_run

        with library_output(verbose):
            run = load_run(folder, verify=verify)
            runs = [run.run_paths(int(s)) for s in (run.seeds if seeds is None else seeds)]
            predictor = Predictor.load(run.cfg, runs, device)
        return cls(predictor, Path(folder), package=run, verbose=verbose)

    @classmethod
    def from_results(
        cls,
        results: str | os.PathLike[str],
        config: WorkflowConfig | str | os.PathLike[str],
        *,
        seeds: Sequence[int] | None = None,
        device: str | None = None,
        verbose: bool = False,
    ) -> Alerter:
        """The run of `config` (a config or its YAML file) in the workflow's results tree `results`.
        `seeds`: default every seed of `heads.seeds` (each must be trained)."""
        if not isinstance(config, WorkflowConfig):
            if not Path(config).is_file():
                raise PredictError(f"{config}: config file not found")
            try:
                config = load_config(config)
            except ConfigError as err:
                raise PredictError(one_line(err)) from None
        runs = [run_paths(config, results, s) for s in (config.heads.seeds if seeds is None else seeds)]
        for paths in runs:
            if problem := missing_run_file(paths, model_is_tiny=config.model.is_tiny):
                raise PredictError(problem)
        with library_output(verbose):
            predictor = Predictor.load(config, runs, device)
        return cls(predictor, Path(results), verbose=verbose)

    # ------------------------------------------------------------------ what it is

    @property
    def config(self) -> WorkflowConfig:
        """The workflow config the run was trained with (ticks, window, FSM, cache layers, ...)."""
        return self._predictor.cfg

    @property
    def run(self) -> str:
        return self._predictor.cfg.run

    @property
    def seeds(self) -> tuple[int, ...]:
        return self._predictor.seeds

    @property
    def device(self) -> str:
        return self._predictor.device

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    def __repr__(self) -> str:
        seeds = ", ".join(map(str, self.seeds))
        return (
            f"Alerter(run={self.run!r}, seeds=[{seeds}], source={str(self.source)!r}, device={self.device!r})"
        )

    # ------------------------------------------------------------------ prediction

    def iter_predict(
        self, videos: VideoArg, *, fps: float | None = None, progress: bool = False
    ) -> Iterator[ClipPrediction]:
        """Each clip's prediction in turn. Every clip is opened and checked (readable, at least one
        window long) before the VLM runs on the first; `fps` is the frame rate of frame folders."""
        clips = expand_videos(videos)
        with library_output(self.verbose):
            plans = [self._predictor.plan(v, fps) for v in clips]
        n = len(clips)
        for i, (video, plan) in enumerate(zip(clips, plans, strict=True), 1):
            desc = f"[{i}/{n}] {video.name}" if n > 1 else video.name
            with library_output(self.verbose):
                table = self._predictor.predict(video, plan, progress=progress, desc=desc)
            yield ClipPrediction(video, plan, table)

    def predict(self, videos: VideoArg, *, fps: float | None = None, progress: bool = False) -> pa.Table:
        """One row per tick of every clip (a path, a glob pattern or a list of either), with a `video`
        column first; see the module's docstring for the columns."""
        tables = []
        for clip in self.iter_predict(videos, fps=fps, progress=progress):
            column = pa.array([str(clip.video)] * clip.table.num_rows, pa.string())
            tables.append(clip.table.add_column(0, pa.field("video", pa.string(), nullable=False), column))
        return pa.concat_tables(tables)

    def write(
        self, clip: ClipPrediction, out_prefix: str | os.PathLike[str], fmt: OutputFormat = "parquet"
    ) -> PredictResult:
        """Write a clip's table (`{out_prefix}.{parquet|csv}`) and timeline (`{out_prefix}.png`)."""
        with library_output(self.verbose):
            return write_outputs(self._predictor, clip.video, clip.plan, clip.table, out_prefix, fmt)
