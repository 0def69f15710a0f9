"""Run a trained run on any video: per-tick VLM generation, the heads, the FSM decoder, a timeline.

`vlalert predict VIDEO --run RESULTS_DIR` is the path from a finished workflow to a single new
clip, outside Snakemake. It must compute each tick exactly as the workflow did for the benchmark,
or its numbers would not mean what the report's numbers mean, so every step is the stage's own
code: tick times and windows (`vlalert.ticks`), the model + adapter + extractor as a cache shard
job builds them (`cache.stage.load_extractor`, greedy generation, z_t / r_t rounded to float16 as
the cache stores them), the heads as the score stage loads and runs them (`score.danger_scores`,
`fsm.rollout` with `heads.fsm` of the config), and `score.vlm_actions`' parsing for the VLM's own
action (here null when unparsable instead of SILENT: a prediction file should not invent one).

Where a run lives is the workflow's layout (vlalert.layout) under RESULTS_DIR (the `results:` key
is replaced by it, so a run can be used from wherever it was copied): the model (the demo model's
directory, else `model.name_or_path`), the adapter (this run's SFT adapter, none or a path, as
`cache.adapter` says) and the heads of the seed. A run exported with `vlalert export-run`
(vlalert.run_package) names the same pieces inside its own folder; `vlalert.alerter.Alerter`
reads either and goes through the same `Predictor` as `predict_video`, so both give one table.

Everything that can be wrong with the inputs (a run not trained yet, an unreadable video, a video
shorter than one window, heads that do not fit the model) is checked before the VLM is loaded and
raised as `PredictError` with a one-line message that names the path; the CLI turns it into exit
code 2.

Why one module of ~750 lines: it is the whole prediction path (check the run, read the video, run the
VLM and the heads, write the outputs and the figure, name several clips' outputs, keep the
libraries quiet) in the order a user reads it; each step is a function of its own section and the
stage code it reuses lives in cache/, heads/ and score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from vlalert.actions import ACTIONS, action_names
from vlalert.config import TicksConfig, WindowConfig, WorkflowConfig
from vlalert.layout import HeadFiles, Layout, adapter_config_file
from vlalert.predict_outputs import (
    OutputFormat,
    default_prefix,
    output_paths,
    save_figure,
    timeline_figure,
    write_predictions,
)
from vlalert.schemas import SCHEMAS
from vlalert.ticks import tick_times, window_frames
from vlalert.video import VideoError, VideoInfo, probe_video

if TYPE_CHECKING:
    import torch

PREDICTIONS = SCHEMAS["predictions"]  # one schema per file type: vlalert.schemas


class PredictError(Exception):
    """An input that cannot be predicted on; the message is one line and names the path."""


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunPaths:
    """Everything a prediction loads, resolved from the config and the results directory."""

    results: Path
    model: str  # a local directory or a hub id
    adapter: str | None
    danger: Path
    policy: Path
    seed: int


def run_paths(cfg: WorkflowConfig, results_dir: str | os.PathLike[str], seed: int | None = None) -> RunPaths:
    """Where the run of `cfg` keeps its model, adapter and heads of `seed` (default: the first configured)."""
    results = str(results_dir).rstrip("/") or "/"
    seed = cfg.heads.seeds[0] if seed is None else int(seed)
    layout = Layout(results, cfg.run)
    return RunPaths(
        results=Path(results),
        model=layout.model(cfg.model),
        adapter=layout.adapter(cfg.cache),
        danger=Path(layout.head("danger", seed).dir),
        policy=Path(layout.head("policy", seed).dir),
        seed=seed,
    )


TRAIN_HINT = "the run must be trained first with snakemake"


def rebuild_hint(rule: str) -> str:
    """How to rebuild a missing stage output, even when downstream files exist and `snakemake` alone
    would say "Nothing to be done" (a killed SFT leaves no adapter but the cache and heads of an
    earlier run in place)."""
    return (
        f"{TRAIN_HINT}: `snakemake --configfile <this config> --forcerun {rule}` rebuilds it and what "
        "depends on it (after a killed run: `snakemake --unlock` first)"
    )


def missing_run_file(paths: RunPaths, *, model_is_tiny: bool) -> str | None:
    """The first file of the run that is missing, as an error line, or None when all are there.

    A hub id (not a directory, not the tiny model) is not checked here: loading it finds it in the
    hub cache or says itself why it cannot.
    """
    if not paths.results.is_dir():
        return f"{paths.results}: results directory missing (--run must name the workflow's results/ folder)"
    needed: list[tuple[Path, str]] = []  # (file, the rule that writes it)
    if model_is_tiny or Path(paths.model).is_dir():
        needed.append((Path(paths.model) / "config.json", "tiny_model" if model_is_tiny else ""))
    if paths.adapter is not None:
        needed.append((Path(adapter_config_file(paths.adapter)), "sft"))
    for head_dir in (paths.danger, paths.policy):
        head = HeadFiles(str(head_dir))
        needed += [(Path(head.config), "heads"), (Path(head.model), "heads")]
    for path, rule in needed:
        if not path.is_file():
            what = "directory" if not path.parent.is_dir() else "file"
            shown = path.parent if what == "directory" else path
            hint = rebuild_hint(rule) if rule else "model.name_or_path must name a model directory"
            return f"{shown}: {what} missing; {hint}"
    return None


def load_heads(paths: RunPaths) -> tuple[Any, Any]:
    """(DangerHead, PolicyHead) of the run's seed, each checked to be the head it should be."""
    from vlalert.heads.train import load_head

    out = []
    for kind, head_dir in (("danger", paths.danger), ("policy", paths.policy)):
        try:
            model, config = load_head(head_dir)
        except Exception as err:  # torch, safetensors and json each raise their own kinds
            raise PredictError(f"{head_dir}: cannot load the {kind} head: {_first_line(err)}") from None
        if config["head"] != kind:
            raise PredictError(f"{head_dir}: expected a {kind} head, found {config['head']!r}")
        out.append(model)
    return out[0], out[1]


def check_head_widths(danger: Any, policy: Any, paths: RunPaths, z_width: int, r_width: int) -> None:
    """Heads trained on another model's (or layer list's) vectors cannot read this model's."""
    for head, have, want, name in (
        (danger, danger.z_dim, z_width, "z"),
        (policy, policy.r_dim, r_width, "r"),
    ):
        if have != want:
            where = paths.danger if head is danger else paths.policy
            raise PredictError(
                f"{where}: head reads {name} vectors {have} wide, but model {paths.model} with the "
                f"config's cache layers gives {want}: the config does not match this run"
            )


# ----------------------------------------------------------------------------- the video


@dataclass(frozen=True)
class TickPlan:
    """The ticks of one clip: times, indices and the frames each tick sees."""

    n_frames: int
    fps: float
    t_s: np.ndarray  # [T] float64
    frame_idx: list[list[int]]  # [T][window.frames]

    @property
    def n_ticks(self) -> int:
        return int(self.t_s.size)


def probe(video: str | os.PathLike[str], fps: float | None = None) -> VideoInfo:
    """Open the clip (mp4, ..., or a frame folder) end to end; a frame folder needs `fps`."""
    path = Path(video)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise PredictError(f"{path}: --fps must be a positive number, got {fps}")
    try:
        info = probe_video(path, fps_hint=fps)
    except VideoError as err:
        raise PredictError(_first_line(err)) from None
    if info.fps is None:
        raise PredictError(f"{path}: a frame folder has no frame rate of its own: pass --fps")
    return info


def plan_ticks(
    n_frames: int, fps: float, ticks: TicksConfig, window: WindowConfig, video: str | os.PathLike[str]
) -> TickPlan:
    """Tick times and windows as the workflow computes them; a clip without a tick is an error."""
    times = tick_times(n_frames, fps, ticks, window)
    if times.size == 0:
        first = np.ceil(window.span_s * ticks.hz - 1e-6) / ticks.hz
        raise PredictError(
            f"{video}: video too short: {n_frames / fps:.2f} s ({n_frames} frames at {fps:g} fps), but a "
            f"tick needs a full window of window.span_s = {window.span_s:g} s (the first tick is at "
            f"{first:g} s, so the video must show a frame at or after {first:g} s)"
        )
    idx = [window_frames(float(t), fps, n_frames, window) for t in times]
    return TickPlan(n_frames=n_frames, fps=float(fps), t_s=times, frame_idx=idx)


# ----------------------------------------------------------------------------- inference


def vlm_vectors(
    ex: Any,
    video: str | os.PathLike[str],
    plan: TickPlan,
    cfg: WorkflowConfig,
    *,
    batch_size: int,
    on_batch: Callable[[int], Any] | None = None,
) -> list[Any]:
    """`cache.extract.TickVectors` of every tick, generated greedily as in the cache stage.

    Frames are read batch by batch from one opened clip, so a long, large video never holds more
    than one batch of full-size frames in memory.
    """
    from vlalert.cache.extract import run_examples
    from vlalert.video import VideoFrames
    from vlalert.vlm.inputs import build_example

    out: list[Any] = []
    name = Path(video).name
    with VideoFrames(video) as clip:
        for a in range(0, plan.n_ticks, batch_size):
            ticks = range(a, min(a + batch_size, plan.n_ticks))
            wanted = sorted({i for k in ticks for i in plan.frame_idx[k]})
            try:
                frames = clip.read(wanted)
            except VideoError as err:
                raise PredictError(_first_line(err)) from None
            pos = {f: j for j, f in enumerate(wanted)}
            examples = []
            for k in ticks:
                row = {"video_id": name, "tick": k, "frame_idx": plan.frame_idx[k], "fps": plan.fps}
                tick_frames = frames[[pos[i] for i in plan.frame_idx[k]]]
                examples.append(build_example(row, tick_frames, ex.tokenizer, cfg.model, with_target=False))
            out += run_examples(ex, examples, batch_size, False)
            if on_batch is not None:
                on_batch(len(ticks))
    return out


def as_cached(vectors: Sequence[Any], attr: str) -> np.ndarray:
    """z or r of every tick as the heads saw them in training: rounded through the cache's float16."""
    from vlalert.cache.store import to_float16

    mat, _ = to_float16(np.stack([getattr(v, attr) for v in vectors]))
    return mat.astype(np.float32)


def head_outputs(
    danger: torch.nn.Module, policy: torch.nn.Module, z: np.ndarray, r: np.ndarray, fsm_cfg: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_danger [T], probs [T, 3], decoded actions [T]) of one clip, as the score stage computes them."""
    import torch

    from vlalert.heads import fsm
    from vlalert.score import danger_scores

    p_danger = danger_scores(danger, z, np.arange(z.shape[0]))
    probs, actions = fsm.rollout(policy, torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)), fsm_cfg)
    return p_danger, probs.astype(np.float64), actions


def vlm_action_names(texts: Sequence[str]) -> list[str | None]:
    """The action the VLM wrote in each generation, None where none can be parsed."""
    from vlalert.beliefs.text import parse_generation

    return [parse_generation(t).action for t in texts]


def predictions_table(
    plan: TickPlan,
    texts: Sequence[str],
    belief_parsed: Sequence[bool],
    p_danger: np.ndarray,
    probs: np.ndarray,
    actions: np.ndarray,
) -> pa.Table:
    """The PREDICTIONS table: one row per tick in time order."""
    n = plan.n_ticks
    if not (len(texts) == len(belief_parsed) == len(p_danger) == len(probs) == len(actions) == n):
        raise ValueError(f"{n} ticks but outputs of lengths {[len(texts), len(p_danger), len(probs)]}")
    cols = {
        "t_s": pa.array(plan.t_s, pa.float64()),
        "tick": pa.array(np.arange(n, dtype=np.int32)),
        "frame_idx": pa.array(plan.frame_idx, pa.list_(pa.int32())),
        "generated_text": pa.array(list(texts), pa.string()),
        "belief_parsed": pa.array([bool(b) for b in belief_parsed], pa.bool_()),
        "p_danger": pa.array(np.asarray(p_danger, dtype=np.float64)),
        "p_silent": pa.array(np.asarray(probs[:, 0], dtype=np.float64)),
        "p_observe": pa.array(np.asarray(probs[:, 1], dtype=np.float64)),
        "p_alert": pa.array(np.asarray(probs[:, 2], dtype=np.float64)),
        "action": pa.array(action_names(actions).tolist(), pa.string()),
        "vlm_action": pa.array(vlm_action_names(texts), pa.string()),
    }
    return pa.Table.from_pydict(cols, schema=PREDICTIONS)


# ----------------------------------------------------------------------------- the loaded run


@dataclass(frozen=True)
class SeedHeads:
    """The DangerHead and PolicyHead of one seed, loaded from `paths`."""

    paths: RunPaths
    danger: Any
    policy: Any

    @property
    def seed(self) -> int:
        return self.paths.seed


class Predictor:
    """A run ready to predict: its config, the heads of one or more seeds (loaded and checked against
    the model's config) and, from the first clip on, the VLM with its adapter.

    The one inference path of vlalert: `predict_video` (a seed of the workflow's results tree) and
    `vlalert.alerter.Alerter` (an exported run, or the results tree with every seed) both build one
    with `Predictor.load` and call `predict` per clip. With several seeds, each seed's PolicyHead is
    rolled out through the FSM on its own (as the score stage scores it); the table holds the mean
    p_danger and action probabilities over the seeds, and `action` is the FSM's decoding of those
    mean probabilities (for one seed, exactly that seed's rollout).
    """

    def __init__(self, cfg: WorkflowConfig, heads: Sequence[SeedHeads], device: str) -> None:
        if not heads:
            raise ValueError("a Predictor needs the heads of at least one seed")
        self.cfg = cfg
        self.heads = tuple(heads)
        self.device = device
        self._extractor: Any = None

    @classmethod
    def load(cls, cfg: WorkflowConfig, runs: Sequence[RunPaths], device: str | None = None) -> Predictor:
        """The heads of every seed of `runs` (one model and adapter), checked against the model's
        config and layer lists, and the device resolved; the VLM itself is loaded by the first clip.
        `device`: "auto" / "cpu" / "cuda"; default: `cache.device` of the config."""
        from vlalert.cache.stage import check_layers, read_model_spec
        from vlalert.devices import resolve_device

        if not runs:
            raise ValueError("no seed to predict with")
        if len({(r.model, r.adapter) for r in runs}) != 1:
            raise ValueError("the seeds of one Predictor must share the model and the adapter")
        heads = [SeedHeads(paths, *load_heads(paths)) for paths in runs]
        model = runs[0].model
        try:
            spec = read_model_spec(model, cfg.model.revision)
        except (OSError, ValueError) as err:
            raise PredictError(f"{model}: cannot read the model config: {_first_line(err)}") from None
        try:
            check_layers(cfg.cache, spec)
        except ValueError as err:
            raise PredictError(f"{model}: {err}") from None
        for h in heads:
            check_head_widths(
                h.danger, h.policy, h.paths, cfg.cache.z_width(spec.hidden_size), spec.hidden_size
            )
        try:
            dev = resolve_device(device or cfg.cache.device, "--device" if device else "cache.device")
        except RuntimeError as err:  # cuda asked for, no GPU here
            raise PredictError(str(err)) from None
        return cls(cfg, heads, dev)

    @property
    def paths(self) -> RunPaths:
        """The first seed's files (the model and the adapter are every seed's)."""
        return self.heads[0].paths

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(h.seed for h in self.heads)

    def plan(self, video: str | os.PathLike[str], fps: float | None = None) -> TickPlan:
        """Open the clip and lay out its ticks; a PredictError before anything heavy runs."""
        info = probe(video, fps)
        return plan_ticks(info.n_frames, float(info.fps), self.cfg.ticks, self.cfg.window, video)

    def extractor(self) -> Any:
        """The VLM with its adapter, as a cache shard job builds it: loaded once, on first use."""
        if self._extractor is None:
            from vlalert.cache.stage import load_extractor

            self._extractor, _ = load_extractor(self.paths.model, self.paths.adapter, self.cfg, self.device)
        return self._extractor

    def release(self) -> None:
        """Drop the VLM (the next clip loads it again)."""
        self._extractor = None

    def predict(
        self,
        video: str | os.PathLike[str],
        plan: TickPlan,
        *,
        progress: bool = False,
        desc: str | None = None,
    ) -> pa.Table:
        """The VLM on every tick of `video`, then every seed's heads and the FSM: the PREDICTIONS table."""
        from tqdm import tqdm

        ex = self.extractor()
        bar = tqdm(
            total=plan.n_ticks, unit="tick", disable=not progress, desc=desc or Path(video).name, leave=False
        )
        try:
            vectors = vlm_vectors(
                ex, video, plan, self.cfg, batch_size=self.cfg.cache.batch_size, on_batch=bar.update
            )
        finally:
            bar.close()
        z, r = as_cached(vectors, "z"), as_cached(vectors, "r")
        outs = [head_outputs(h.danger, h.policy, z, r, self.cfg.heads.fsm) for h in self.heads]
        if len(outs) == 1:
            p_danger, probs, actions = outs[0]
        else:
            from vlalert.heads import fsm

            p_danger = np.mean([o[0] for o in outs], axis=0)
            probs = np.mean([o[1] for o in outs], axis=0)
            actions = fsm.decode(probs, self.cfg.heads.fsm)
        texts = [v.generated_text for v in vectors]
        return predictions_table(plan, texts, [v.belief_parsed for v in vectors], p_danger, probs, actions)

    def metadata(self, video: str | os.PathLike[str], plan: TickPlan) -> dict[str, Any]:
        """What a prediction file records of its inputs (Parquet schema metadata)."""
        cfg, paths = self.cfg, self.paths
        one = len(self.heads) == 1
        return {
            "video": str(video),
            "fps": plan.fps,
            "n_frames": plan.n_frames,
            "run": cfg.run,
            "seed": paths.seed if one else None,
            "seeds": list(self.seeds),
            "model": paths.model,
            "adapter": paths.adapter,
            "danger_head": str(paths.danger) if one else None,
            "policy_head": str(paths.policy) if one else None,
            "heads": {
                str(h.seed): {"danger": str(h.paths.danger), "policy": str(h.paths.policy)}
                for h in self.heads
            },
            "tick_hz": cfg.ticks.hz,
            "window": cfg.window.model_dump(),
            "fsm": cfg.heads.fsm.model_dump(),
        }

    def title(self, video: str | os.PathLike[str], plan: TickPlan) -> str:
        seeds = (
            f"seed {self.seeds[0]}"
            if len(self.seeds) == 1
            else f"mean of seeds {', '.join(map(str, self.seeds))}"
        )
        ticks = f"{plan.n_ticks} ticks at {self.cfg.ticks.hz:g} Hz"
        return f"{Path(video).name}: run {self.cfg.run}, {seeds} ({ticks})"


# ----------------------------------------------------------------------------- the whole thing


@dataclass(frozen=True)
class PredictResult:
    table_path: Path
    png_path: Path
    table: pa.Table
    paths: RunPaths
    fps: float
    n_frames: int
    device: str
    seeds: tuple[int, ...] = ()


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def one_line(err: BaseException) -> str:
    """A multi-line error (a config's list of keys) as one line: "head: a; b"."""
    parts = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not parts:
        return type(err).__name__
    if parts[0].endswith(":") and len(parts) > 1:
        return f"{parts[0]} {'; '.join(parts[1:])}"
    return "; ".join(parts)


def write_outputs(
    predictor: Predictor,
    video: str | os.PathLike[str],
    plan: TickPlan,
    table: pa.Table,
    out_prefix: str | os.PathLike[str],
    fmt: OutputFormat = "parquet",
) -> PredictResult:
    """Write one clip's PREDICTIONS table (`{prefix}.{fmt}`) and its timeline (`{prefix}.png`)."""
    table_path, png_path = output_paths(out_prefix, fmt)
    write_predictions(table, table_path, fmt, predictor.metadata(video, plan))
    save_figure(timeline_figure(table, predictor.cfg.ticks.hz, predictor.title(video, plan)), png_path)
    return PredictResult(
        table_path=table_path,
        png_path=png_path,
        table=table,
        paths=predictor.paths,
        fps=plan.fps,
        n_frames=plan.n_frames,
        device=predictor.device,
        seeds=predictor.seeds,
    )


def predict_video(
    video: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    cfg: WorkflowConfig,
    *,
    seed: int | None = None,
    out_prefix: str | os.PathLike[str] | None = None,
    fmt: OutputFormat = "parquet",
    fps: float | None = None,
    device: str | None = None,
    progress: bool = False,
) -> PredictResult:
    """Predict every tick of `video` with the run of `cfg` under `results_dir`; write table and PNG.

    Inputs are checked cheapest first (the run's files, the video, its length, the heads against
    the model's config) before the VLM is loaded. `device`: "auto" / "cpu" / "cuda"; default:
    `cache.device` of the config.
    """
    prefix = out_prefix if out_prefix is not None else default_prefix(video)
    output_paths(prefix, fmt)  # an unknown format fails before anything runs
    paths = run_paths(cfg, results_dir, seed)
    if problem := missing_run_file(paths, model_is_tiny=cfg.model.is_tiny):
        raise PredictError(problem)
    info = probe(video, fps)
    plan = plan_ticks(info.n_frames, float(info.fps), cfg.ticks, cfg.window, video)
    predictor = Predictor.load(cfg, [paths], device)
    table = predictor.predict(video, plan, progress=progress)
    return write_outputs(predictor, video, plan, table, prefix, fmt)


# ----------------------------------------------------------------------------- several videos


_GLOB_CHARS = frozenset("*?[")


def expand_videos(items: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The clips named by `items`: paths as given, and each glob pattern that names no existing path
    expanded (sorted; `**` reaches into folders). A pattern that matches nothing is an error; a clip
    named twice is predicted once."""
    import glob

    if isinstance(items, (str, os.PathLike)):
        items = [items]
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if not os.path.exists(text) and _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise PredictError(f"{text}: no file matches this pattern")
            out += [Path(m) for m in matches]
        else:
            out.append(Path(text))
    if not out:
        raise PredictError("no video given")
    return list(dict.fromkeys(out))


def output_prefixes(
    videos: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Each clip's output prefix: `out` for a single clip, else `{out_dir or .}/{name}.vlalert`;
    two clips that would write the same files are an error before anything runs."""
    if out is not None and out_dir is not None:
        raise PredictError("--out and --out-dir exclude each other: --out names one clip's files")
    if out is not None:
        if len(videos) != 1:
            raise PredictError(
                f"--out names the files of one clip, but {len(videos)} videos were given: use --out-dir"
            )
        return [Path(out)]
    prefixes = [default_prefix(v) for v in videos]
    if out_dir is not None:
        prefixes = [Path(out_dir) / p.name for p in prefixes]
    seen: dict[Path, str] = {}
    for video, prefix in zip(videos, prefixes, strict=True):
        if prefix in seen:
            raise PredictError(
                f"{video}: would overwrite the outputs of {seen[prefix]} ({prefix}.*): "
                "give the clips different names or predict them separately"
            )
        seen[prefix] = str(video)
    return prefixes


# ----------------------------------------------------------------------------- the terminal


@contextmanager
def library_output(verbose: bool = False) -> Iterator[None]:
    """Keep the libraries' own chatter (Python warnings, transformers / peft / hub log lines and
    weight-loading progress bars) out of the terminal unless `verbose`; restored on exit."""
    if verbose:
        yield
        return
    import logging
    import warnings

    loggers = [
        logging.getLogger(n) for n in ("transformers", "peft", "huggingface_hub", "accelerate", "torch")
    ]
    levels = [lg.level for lg in loggers]
    tf_logging = None
    try:
        from transformers.utils import logging as tf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    tf_state = (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()) if tf_logging else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        if tf_logging is not None:
            tf_logging.set_verbosity_error()
            tf_logging.disable_progress_bar()
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            if tf_logging is not None and tf_state is not None:
                tf_logging.set_verbosity(tf_state[0])
                if tf_state[1]:
                    tf_logging.enable_progress_bar()


def summary_line(result: PredictResult | pa.Table) -> str:
    """What the CLI prints: ticks, how many of each decoded action, the first ALERT."""
    table = result.table if isinstance(result, PredictResult) else result
    actions = table.column("action").to_pylist()
    counts = ", ".join(f"{a} {actions.count(a)}" for a in ACTIONS)
    t = table.column("t_s").to_pylist()
    first = next((ts for ts, a in zip(t, actions, strict=True) if a == "ALERT"), None)
    alert = f"first ALERT at {first:g} s" if first is not None else "no ALERT"
    return f"{len(actions)} ticks ({counts}); {alert}"
