"""Each stage's slice of the workflow config, as a typed model: the one place that says what a stage reads.

`SLICES` maps every stage to its slice model. A model's fields are what the stage's script gets of the
config, typed with the config's own models, and its `of` builds it from the validated config. The
rules pass the slice as two params (vlalert.workflow.stage_params / stage_untracked):

- `stage`: `tracked()`, the fields Snakemake's params rerun-trigger compares, so a stage reruns
  exactly when one of them changes (changing `labels.alert_s` reruns relabel and what follows,
  never ingest);
- `untracked`: the fields named in the model's `UNTRACKED` (a pydantic exclude spec), handed to the
  script but recorded nowhere, each for one of three reasons, said beside it:
  *speed*: how fast or where the stage runs, not what it writes (`cache.batch_size`, `sft.nproc`);
  *unread*: the rest of a config model the stage hands on whole (ingest gets its `SourceConfig`,
  of which it reads the files' fields, not `prefix_negatives`);
  *upstream*: facts that reach the stage through its input or output files anyway (a source's kind
  reaches beliefs through ingest's videos table, whose params hold it; `results` and `run` name the
  output folders).

A script rebuilds its slice from those two params alone (vlalert.workflow.job_slice), never from the
whole config, and hands the slice, or its parts, to the library. Where a library function takes the
workflow config (`gate_scores`, `label_source`, `write_beliefs_job`, `build_benchmark`), the slice
has the same attribute names for what that function reads, so reading anything else fails.

Pydantic only (the Snakefile builds every slice at parse time).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel
from typing_extensions import Self

from vlalert.badas.config import BadasConfig
from vlalert.cache.config import SPEED_KEYS as CACHE_SPEED_KEYS
from vlalert.cache.config import CacheConfig
from vlalert.config import (
    BeliefsConfig,
    ConfigError,
    DemoConfig,
    GateConfig,
    GateProvider,
    LabelsConfig,
    SourceConfig,
    SourceKindName,
    SplitsConfig,
    TicksConfig,
    WindowConfig,
    WorkflowConfig,
    gate_chain,
)
from vlalert.download_config import DownloadConfig, download_for_source
from vlalert.frames.config import SPEED_KEYS as FRAMES_SPEED_KEYS
from vlalert.frames.config import FramesConfig
from vlalert.heads.config import HeadsTrainConfig
from vlalert.metrics.config import ScoringConfig
from vlalert.strict import StrictModel
from vlalert.vlm.config import SFT_RUNTIME_KEYS, SFTConfig, VLMConfig

Origin = Literal["demo", "hub", "hand"]

# Open-BADAS keys that change how fast the gate scores (or where its weights are cached), not the scores.
BADAS_SPEED_KEYS = frozenset({"progress", "batch_size", "cache_dir", "device"})
# What build_tiny_model reads of `model`: widths and seed, the prompt texts (tokenizer corpus), geometry.
TINY_MODEL_KEYS = frozenset(
    {"tiny", "system_prompt", "instruction", "image_height", "image_width", "patch_size"}
    | {"temporal_patch_size", "spatial_merge_size", "image_mean", "image_std"}
)


def _all_but(model: type[BaseModel], *kept: str) -> set[str]:
    """The fields of `model` other than `kept` (an exclude spec: everything but what a stage reads)."""
    unknown = set(kept) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
    return set(model.model_fields) - set(kept)


def _merged(tracked: Any, untracked: Any) -> Any:
    """The two params put back together: mappings key by key (a model both hold a part of, say)."""
    if isinstance(tracked, dict) and isinstance(untracked, dict):
        both = {**untracked, **tracked}
        return {
            k: _merged(tracked[k], untracked[k]) if k in tracked and k in untracked else both[k] for k in both
        }
    return untracked if tracked is None else tracked


class StageSlice(StrictModel):
    """A stage's slice of the config; the subclasses are the stages (SLICES)."""

    STAGE: ClassVar[str]
    # What one job of the stage is for: "source" (a configured source), "download" (a hub dataset), None.
    KEY: ClassVar[Literal["source", "download"] | None] = None
    UNTRACKED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        """By default a slice is whole sections of the config, named by its fields; a stage that takes
        parts of them (a source's, say) says how."""
        return cls(**{name: getattr(cfg, name) for name in cls.model_fields})

    def tracked(self) -> dict[str, Any]:
        """The `stage` param: what the params rerun-trigger compares (JSON types only)."""
        return self.model_dump(mode="json", exclude=self.UNTRACKED)

    def untracked(self) -> dict[str, Any]:
        """The `untracked` param's content: the fields of UNTRACKED."""
        return self.model_dump(mode="json", include=self.UNTRACKED)

    @classmethod
    def from_params(cls, tracked: Any, untracked: Any) -> Self:
        """The slice back from its two params; raises pydantic's ValidationError naming each bad field."""
        return cls.model_validate(_merged(tracked, untracked or {}))


# ------------------------------------------------------------------------------- sources on disk


class DownloadSlice(StageSlice):
    """download_hub: one hub dataset (vlalert.download.hub_download)."""

    STAGE = "download"
    KEY = "download"
    # unread: whether and for which source it is fetched; speed: parallel file downloads
    UNTRACKED = {"download": {"enabled", "source", "max_workers"}}

    download: DownloadConfig

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(download=cfg.download[str(key)])


def source_origin(cfg: WorkflowConfig, source: str) -> Origin:
    """How a source's files get on disk: rendered by the demo, downloaded from the hub, or placed by hand."""
    if cfg.demo.enabled:
        return "demo"
    return "hub" if download_for_source(cfg.download, source) is not None else "hand"


class CheckSourceSlice(StageSlice):
    """check_source: the layout check and the file listing of one source (vlalert.download, source_files)."""

    STAGE = "check_source"
    KEY = "source"
    # unread: what the layout check and the listing do not look at
    UNTRACKED = {
        "source": _all_but(
            SourceConfig, "kind", "root", "annotations", "consensus", "gate_scores", "videos", "split_files"
        )
    }

    source: SourceConfig
    origin: Origin

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(source=cfg.sources[str(key)], origin=source_origin(cfg, str(key)))


class DemoSlice(StageSlice):
    """demo_source: one source's synthetic corpus (vlalert.sources.synthetic.make_demo_source)."""

    STAGE = "demo"
    KEY = "source"
    UNTRACKED = {"source": _all_but(SourceConfig, "kind", "root")}  # unread: the renderer needs kind and root

    source: SourceConfig
    demo: DemoConfig

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(source=cfg.sources[str(key)], demo=cfg.demo)


class IngestSlice(StageSlice):
    """ingest: one source read in its own format (vlalert.ingest.ingest_source)."""

    STAGE = "ingest"
    KEY = "source"
    # unread: the gate's, relabel's, beliefs' and the benchmark's fields of the source
    UNTRACKED = {
        "source": _all_but(
            SourceConfig,
            *("kind", "root", "annotations", "consensus", "consensus_clock_fps", "split_files", "videos"),
        )
    }

    source: SourceConfig
    strict: bool

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(source=cfg.sources[str(key)], strict=cfg.strict)


# ------------------------------------------------------------------------------ gate and labels


class GateSource(StrictModel):
    """What the gate providers read of a source (vlalert.gate's `src`); a file off the chain: None."""

    kind: SourceKindName  # the scene provider reads the renderer's truth in the kind's ids
    scene_truth: str | None = None
    gate_scores: str | None = None


class GateSettings(StrictModel):
    """What the gate providers read of `gate:` (vlalert.gate's `cfg.gate`); a provider off the chain: None."""

    consensus_ramp_s: float | None = None
    badas: BadasConfig | None = None


class GateSlice(StageSlice):
    """gate: one source's scores from its provider chain (vlalert.gate.gate_scores, the slice as `cfg`)."""

    STAGE = "gate"
    KEY = "source"
    UNTRACKED = {
        "source": {"kind"},  # upstream: ingest's params hold it, and its videos table is the gate's input
        "gate": {"badas": set(BADAS_SPEED_KEYS)},  # speed
    }

    provider: list[GateProvider]  # the chain, tried in order per clip
    source: GateSource
    gate: GateSettings
    ticks: TicksConfig
    window: WindowConfig

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        src, chain = cfg.sources[str(key)], cfg.gate_chain(str(key))
        return cls(
            provider=chain,
            source=GateSource(
                kind=src.kind,
                scene_truth=src.scene_truth if "scene" in chain else None,
                gate_scores=src.gate_scores if "scores_file" in chain else None,
            ),
            gate=GateSettings(
                consensus_ramp_s=cfg.gate.consensus_ramp_s if "consensus" in chain else None,
                badas=cfg.gate.badas if "badas" in chain else None,
            ),
            ticks=cfg.ticks,
            window=cfg.window,
        )


class RelabelSlice(StageSlice):
    """relabel: one source's tick labels (vlalert.labels.label_source, with the slice as `cfg`)."""

    STAGE = "relabel"
    KEY = "source"
    UNTRACKED = {
        "gate": {"provider", "badas", "consensus_ramp_s"},  # unread: the gate stage's own keys
        "sources": {"__all__": _all_but(SourceConfig, "prefix_negatives")},  # unread
    }

    labels: LabelsConfig
    gate: GateConfig  # the thresholds the label rule applies to the gate's scores
    ticks: TicksConfig
    window: WindowConfig
    sources: dict[str, SourceConfig]  # the job's source alone

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(
            labels=cfg.labels,
            gate=cfg.gate,
            ticks=cfg.ticks,
            window=cfg.window,
            sources={str(key): cfg.sources[str(key)]},
        )


class BeliefsSlice(StageSlice):
    """beliefs: one source's beliefs (vlalert.beliefs.stage.write_beliefs_job, with the slice as `cfg`)."""

    STAGE = "beliefs"
    KEY = "source"
    # upstream: the kind (ingest's params; the scene truth's ids are read in it); unread: the rest
    UNTRACKED = {"source": _all_but(SourceConfig, "scene_truth")}

    beliefs: BeliefsConfig
    labels: LabelsConfig
    window: WindowConfig
    source: SourceConfig

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        return cls(beliefs=cfg.beliefs, labels=cfg.labels, window=cfg.window, source=cfg.sources[str(key)])


class BenchmarkSlice(StageSlice):
    """benchmark: the labels split and joined (vlalert.benchmark.build_benchmark, the slice as `cfg`).

    The manifest records the label, gate, tick and source keys the tables were built with: they reach
    the benchmark through its inputs (relabel's, gate's and ingest's params hold them).
    """

    STAGE = "benchmark"
    UNTRACKED = {
        # upstream: the tables are shared by the runs of one results folder; the manifest names its run
        "run": True,
        **dict.fromkeys(("ticks", "window", "labels", "gate"), True),  # upstream
        "sources": {"__all__": _all_but(SourceConfig, "enabled", "split_map")},  # upstream
    }

    run: str
    strict: bool
    splits: SplitsConfig
    ticks: TicksConfig
    window: WindowConfig
    labels: LabelsConfig
    gate: GateConfig
    sources: dict[str, SourceConfig]  # every configured source (the manifest records them all)

    def gate_chain(self, source: str) -> list[str]:
        return gate_chain(self.sources[source], self.gate)


class FramesSlice(StageSlice):
    """frames: one source's frames store (vlalert.frames.store.write_store), at the model's image size."""

    STAGE = "frames"
    KEY = "source"
    UNTRACKED = {
        "frames": set(FRAMES_SPEED_KEYS),  # speed
        "model": _all_but(VLMConfig, "image_height", "image_width"),  # unread
    }

    frames: FramesConfig
    model: VLMConfig


# ----------------------------------------------------------------------------------- the model


class TinyModelSlice(StageSlice):
    """tiny_model: the demo's tiny Qwen3-VL (vlalert.vlm.tiny.build_tiny_model)."""

    STAGE = "tiny_model"
    UNTRACKED = {  # unread by build_tiny_model
        "model": _all_but(VLMConfig, *TINY_MODEL_KEYS),
        "beliefs": _all_but(BeliefsConfig, "phrasing"),
    }

    model: VLMConfig
    window: WindowConfig  # the pretraining windows have a tick's frames and span
    beliefs: BeliefsConfig  # the captions are worded as the rules provider words its targets


class _RunFolders(StageSlice):
    """A stage whose files lie in the run's folders (vlalert.layout.Layout.of(slice))."""

    UNTRACKED = {"results": True, "run": True}  # upstream: they name the output folders

    results: str
    run: str


class SFTSlice(_RunFolders):
    """sft: LoRA SFT of the VLM (vlalert.vlm.sft.SFTJob)."""

    STAGE = "sft"
    UNTRACKED = {**_RunFolders.UNTRACKED, "sft": set(SFT_RUNTIME_KEYS)}  # speed (SFTConfig.result_keys)

    model: VLMConfig
    sft: SFTConfig


class CacheSlice(_RunFolders):
    """cache_shard and cache_gather: the VLM's hidden states (vlalert.cache.stage.run_shard, whose chunk
    fingerprints hold `tracked()`)."""

    STAGE = "cache"
    UNTRACKED = {**_RunFolders.UNTRACKED, "cache": set(CACHE_SPEED_KEYS)}  # speed

    model: VLMConfig
    cache: CacheConfig

    @classmethod
    def of(cls, cfg: WorkflowConfig, key: str | None = None) -> Self:
        # The tiny model's depth is known now: bad layer lists stop the run at parse time.
        if cfg.model.is_tiny and (problem := cfg.cache.layer_problem(cfg.model.tiny.num_hidden_layers)):
            raise ConfigError(problem)
        return super().of(cfg, key)


# ------------------------------------------------------------------------------ heads and scores


class HeadsSlice(StageSlice):
    """heads: one head and seed trained on the cache (vlalert.heads.train.train_head)."""

    STAGE = "heads"

    heads: HeadsTrainConfig


class ScoreSlice(_RunFolders):
    """score: every policy of a split through the FSM (vlalert.score.score_split; heads by the layout)."""

    STAGE = "score"

    heads: HeadsTrainConfig


class SummarySlice(StageSlice):
    """summary and the report rules (report_figures, report_data, report_model): the test split's
    metrics and the report (vlalert.summary, vlalert.report)."""

    STAGE = "summary"

    scoring: ScoringConfig
    ticks: TicksConfig


# The one table: stage -> its slice model.
SLICES: dict[str, type[StageSlice]] = {
    m.STAGE: m
    for m in (
        DownloadSlice,
        CheckSourceSlice,
        DemoSlice,
        IngestSlice,
        GateSlice,
        RelabelSlice,
        BeliefsSlice,
        FramesSlice,
        BenchmarkSlice,
        TinyModelSlice,
        SFTSlice,
        CacheSlice,
        HeadsSlice,
        ScoreSlice,
        SummarySlice,
    )
}


def slice_of(cfg: WorkflowConfig, stage: str, key: str | None = None) -> StageSlice:
    """`stage`'s slice of `cfg`; `key` names the job's source or hub dataset where the stage has one."""
    if stage not in SLICES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(SLICES)}")
    model = SLICES[stage]
    keys = {"source": cfg.sources, "download": cfg.download}.get(model.KEY or "", {})
    if (key is None) != (model.KEY is None) or (key is not None and key not in keys):
        raise ValueError(f"stage {stage} takes {model.KEY or 'no key'}, got {key!r}")
    return model.of(cfg, key)
