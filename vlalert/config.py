"""One validated model of the whole workflow configuration.

Every config key is declared here once, with its type and its bounds, so that a typo or an
impossible value stops `snakemake` at parse time (before any job runs) with a message that
names the key, instead of failing hours later inside a job. The rules pass each stage only its
own slice of the config as `params`, so changing one stage's keys reruns that stage and its
dependants, never what is upstream.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

# Each stage's own config model lives beside its code; all are pydantic only (no torch at parse time).
from vlalert.badas.config import BadasConfig
from vlalert.cache.config import CacheConfig
from vlalert.download_config import DownloadConfig, download_config_errors
from vlalert.frames.config import FramesConfig
from vlalert.heads.config import HeadsTrainConfig
from vlalert.metrics.config import ScoringConfig
from vlalert.strict import StrictModel
from vlalert.vlm.config import SFTConfig, VLMConfig

SPLITS: tuple[str, ...] = ("train", "val", "test")
# The source kinds `sources.<name>.kind` accepts; each is a plugin in vlalert/sources/<kind>.py, and
# vlalert.sources.registry refuses to load unless its plugins are exactly these (the config is
# validated before any adapter is imported, so the names are written here).
SourceKindName = Literal["nexar", "dada2000", "dota", "dad"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKindName)
GATE_PROVIDERS: tuple[str, ...] = ("scene", "consensus", "scores_file", "badas")
GateProvider = Literal["scene", "consensus", "scores_file", "badas"]


def _as_chain(value: Any) -> Any:
    """A gate provider given as one name means a chain of one."""
    return [value] if isinstance(value, str) else value


def _valid_chain(chain: list[str] | None) -> list[str] | None:
    """A chain is tried in order per clip: it needs a provider, and naming one twice says nothing."""
    if chain is not None and (not chain or len(set(chain)) != len(chain)):
        raise ValueError(f"a gate provider chain must be non-empty and name each provider once, got {chain}")
    return chain


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names every offending key."""


class DemoConfig(StrictModel):
    """The embedded synthetic corpus, rendered into each real source's own format."""

    enabled: bool = True
    seed: int = 7
    width: int = Field(160, ge=32, le=1920)
    height: int = Field(96, ge=32, le=1080)
    max_duration_s: float = Field(12.0, gt=0, le=120)
    clips_per_source: int = Field(6, ge=4, le=500)
    faults: bool = True  # add one unreadable video and one self-contradicting annotation per source


class SourceConfig(StrictModel):
    """One public dataset as the user placed (or downloaded) it under `root`."""

    kind: SourceKindName
    enabled: bool = True
    root: str
    annotations: str | None = None  # DADA-2000 sheet / DoTA metadata JSON; None: the adapter's default name
    consensus: str | None = None  # BADAS consensus CSV; overrides the source's own times and ego flag
    # The clock (fps) the consensus CSV's times were written on: a time T is frame T * clock, i.e.
    # T * clock / fps seconds of the probed video. None: the kind's default, settled from real frames
    # (vlalert.sources.<kind>.CONSENSUS_CLOCK_FPS; README "Clocks").
    consensus_clock_fps: float | None = Field(None, gt=0)
    # Official split lists, e.g. DADA-2000's {train,val,test}_file.json; None: the adapter's own rule.
    split_files: dict[Literal["train", "val", "test"], str] | None = None
    # False: annotations only (no video files placed): ingest takes frame counts and fps from the
    # annotation and the run can go as far as the benchmark; stages that read frames refuse it.
    videos: bool = True
    scene_truth: str | None = (
        None  # synthetic clips only: the renderer's ground truth (gate provider `scene`)
    )
    # One provider, or a chain tried in order per clip: the first with evidence for a clip scores it
    # (e.g. [consensus, badas]: consensus rows cover only test clips).
    gate_provider: list[GateProvider] | None = None
    gate_scores: str | None = None  # for gate_provider scores_file
    prefix_negatives: bool = False
    split_map: dict[str, Literal["train", "val", "test", "hash", "trainval"]] = Field(default_factory=dict)

    chain_from_name = field_validator("gate_provider", mode="before")(_as_chain)
    chain_is_valid = field_validator("gate_provider")(_valid_chain)


class TicksConfig(StrictModel):
    hz: float = Field(1.0, gt=0, le=30)


class WindowConfig(StrictModel):
    frames: int = Field(8, ge=1, le=64)
    span_s: float = Field(2.0, gt=0, le=30)


class LabelsConfig(StrictModel):
    """The risky-time + 2 s rule (DESIGN.md, "Ticks, windows, labels")."""

    alert_s: float = Field(2.0, gt=0)
    observe_s: float = Field(4.0, ge=0)
    prefix_gap_s: float = Field(0.5, ge=0)
    prefix_min_extra_s: float = Field(2.0, ge=0)  # a prefix must hold window.span_s + this
    non_ego_danger_cap: float = Field(0.5, ge=0, le=1)
    gated_sources: list[str] = Field(default_factory=lambda: ["dota"])


class GateConfig(StrictModel):
    provider: list[GateProvider] = Field(default_factory=lambda: ["scene"])  # default chain of every source
    badas: BadasConfig = Field(default_factory=BadasConfig)  # provider badas: weights, device, windows
    alert_min: float = Field(0.5, ge=0, le=1)
    observe_min: float = Field(0.3, ge=0, le=1)
    lookback_s: float = Field(1.0, ge=0)  # the alert check looks at [t_r - lookback_s, t_r + alert_s)
    consensus_ramp_s: float = Field(
        4.0, gt=0
    )  # consensus provider: score ramps 0 -> 0.5 over this before t_alert

    chain_from_name = field_validator("provider", mode="before")(_as_chain)
    chain_is_valid = field_validator("provider")(_valid_chain)

    @model_validator(mode="after")
    def _ordered(self) -> GateConfig:
        if self.observe_min > self.alert_min:
            raise ValueError("gate.observe_min must not exceed gate.alert_min")
        return self


class SplitsConfig(StrictModel):
    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    salt: str = "vlalert-v1"

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(SPLITS):
            raise ValueError(f"splits.fractions must have exactly the keys {list(SPLITS)}, got {sorted(v)}")
        if any(x < 0 for x in v.values()):
            raise ValueError("splits.fractions must be non-negative")
        if not math.isclose(sum(v.values()), 1.0, abs_tol=1e-6):
            raise ValueError(f"splits.fractions must sum to 1, got {sum(v.values()):.6f}")
        return v


class LLMConfig(StrictModel):
    """An OpenAI-compatible chat endpoint (GPT-4o, or a local vLLM/Ollama server)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-2024-08-06"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from config
    max_concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    max_cost_usd: float = Field(50.0, ge=0)
    usd_per_1k_input_tokens: float = Field(0.0025, ge=0)
    usd_per_1k_output_tokens: float = Field(0.01, ge=0)
    jpeg_quality: int = Field(85, ge=1, le=100)
    max_image_side: int = Field(512, ge=32)
    image_detail: Literal["low", "high", "auto"] = "low"  # OpenAI vision detail; "low" is 85 tokens a frame
    temperature: float = Field(0.0, ge=0, le=2)
    max_output_tokens: int = Field(600, ge=16, le=16384)
    cache_dir: str = "results/beliefs/llm_cache"
    # online: one chat request per tick, max_concurrency in flight. batch: the OpenAI-compatible Batch
    # API (JSONL upload, create, poll, download) at batch_price_factor of the prices, resumable by
    # batch id; re-asks of rejected replies and requests the batch did not answer go online.
    mode: Literal["online", "batch"] = "online"
    batch_price_factor: float = Field(0.5, gt=0, le=1)
    batch_max_requests: int = Field(50_000, ge=1)  # per batch (the API's limit)
    batch_max_bytes: int = Field(200_000_000, ge=1024)  # per batch input file (the API's limit)
    batch_poll_s: float = Field(30.0, gt=0)
    batch_completion_window: Literal["24h"] = "24h"


# How the `rules` provider words its analyses: "varied" picks each slot's wording by a hash of the
# tick (several phrasings per meaning, as an LLM writes them); "plain" always the first (one text per
# meaning: what the demo's tiny VLM can learn from a few hundred ticks, see vlalert.beliefs.rules).
Phrasing = Literal["varied", "plain"]


class BeliefsConfig(StrictModel):
    provider: Literal["rules", "llm"] = "rules"
    phrasing: Phrasing = "varied"  # of the rules provider, and of its fallbacks under the llm provider
    progress: bool = True  # tqdm bar with done / cached / failed counts (llm provider)
    llm: LLMConfig = Field(default_factory=LLMConfig)


def gate_chain(src: SourceConfig, gate: GateConfig) -> list[str]:
    """A source's gate providers, in the order they are tried for each clip: its own, else `gate.provider`."""
    return list(src.gate_provider or gate.provider)


class WorkflowConfig(StrictModel):
    run: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$")
    # Every output of the run lives here; unset: results/<run>, so two runs never share tables.
    results: str = ""
    strict: bool = False  # True: the first rejected clip stops the run instead of going to rejected.parquet
    demo: DemoConfig = Field(default_factory=DemoConfig)
    sources: dict[str, SourceConfig]
    ticks: TicksConfig = Field(default_factory=TicksConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    download: dict[str, DownloadConfig] = Field(default_factory=dict)  # hub datasets (real runs only)
    beliefs: BeliefsConfig = Field(default_factory=BeliefsConfig)
    model: VLMConfig = Field(default_factory=VLMConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    heads: HeadsTrainConfig = Field(default_factory=HeadsTrainConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    frames: FramesConfig = Field(default_factory=FramesConfig)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("at least one source is required")
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"source name {name!r} may only hold letters, digits, '_' and '-'")
        return v

    @model_validator(mode="before")
    @classmethod
    def _results_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("results"):
            data = {**data, "results": f"results/{data.get('run') or 'demo'}"}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> WorkflowConfig:
        if self.scoring.observe_s != self.labels.observe_s:
            raise ValueError(
                f"scoring.observe_s ({self.scoring.observe_s}) must equal labels.observe_s "
                f"({self.labels.observe_s}): DAUS credits OBSERVE where the labels ask for it"
            )
        if not self.demo.enabled:
            roots = {n: s.root for n, s in self.sources.items() if s.enabled}
            errors = download_config_errors(self.download, roots)
            if errors:
                raise ValueError("; ".join(errors))
        # The default names DoTA; a config without a DoTA source is not wrong for keeping the default.
        gated = self.labels.gated_sources if "gated_sources" in self.labels.model_fields_set else []
        for name in gated:
            if name not in self.sources:
                raise ValueError(f"labels.gated_sources names unknown source {name!r}")
        for name, src in self.sources.items():
            demo_root = f"{self.results}/demo/{name}"
            if self.demo.enabled and src.enabled and src.root.rstrip("/") != demo_root:
                raise ValueError(
                    f"sources.{name}.root must be {demo_root!r} while demo.enabled is true "
                    "(the demo renders each source there); set demo.enabled: false for real data"
                )
            chain = self.gate_chain(name)
            if "scores_file" in chain and not src.gate_scores:
                raise ValueError(f"sources.{name}.gate_scores is required with gate provider scores_file")
            if "consensus" in chain and not src.consensus:
                raise ValueError(f"sources.{name}.consensus is required with gate provider consensus")
            if "badas" in chain and (problem := self.gate.badas.check_weights_source()):
                raise ValueError(f"sources.{name}: {problem}")
            if "badas" in chain and not src.videos:
                raise ValueError(f"sources.{name}: gate provider badas reads frames, but videos is false")
            if "scene" in chain and not src.scene_truth:
                raise ValueError(f"sources.{name}.scene_truth is required with gate provider scene")
            if src.split_files is not None and src.kind != "dada2000":
                raise ValueError(
                    f"sources.{name}.split_files: official split lists are read for kind dada2000 only "
                    f"(the other kinds carry their split in their own files), not {src.kind}"
                )
        return self

    def enabled_sources(self) -> list[str]:
        return [name for name, src in self.sources.items() if src.enabled]

    def gate_chain(self, source: str) -> list[str]:
        """The gate providers of a source, in the order they are tried for each clip."""
        return gate_chain(self.sources[source], self.gate)

    def uses_badas(self, source: str) -> bool:
        return "badas" in self.gate_chain(source)

    def frame_sources(self) -> list[str]:
        """Enabled sources whose videos are placed (the stages after the benchmark read frames)."""
        return [name for name in self.enabled_sources() if self.sources[name].videos]


def _model_in(tp: Any) -> type[BaseModel] | None:
    """The pydantic model `tp` is, or holds (Optional[M], dict[str, M], list[M]), else None."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        if (model := _model_in(arg)) is not None:
            return model
    return None


def valid_keys(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The keys the config accepts at `path` (e.g. ("sources", "nexar") -> SourceConfig's fields)."""
    cur: Any = model
    for part in path:
        m = _model_in(cur)
        if m is None:
            return []
        if get_origin(cur) in (dict, list, tuple):  # `part` is a key or an index: step into the values
            cur = m
            continue
        field = m.model_fields.get(str(part))
        if field is None:
            return []
        cur = field.annotation
    m = _model_in(cur)
    return list(m.model_fields) if m is not None else []


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            keys = valid_keys(WorkflowConfig, e["loc"][:-1])
            if near := difflib.get_close_matches(str(e["loc"][-1]), keys, n=1):
                msg += f" (did you mean {near[0]!r}?)"
        lines.append(f"  {key}: {msg}" if key else f"  {msg}")
    return "invalid config:\n" + "\n".join(lines)


def validate_config(raw: dict[str, Any]) -> WorkflowConfig:
    """Validate a raw config mapping (as Snakemake holds it) into the typed model."""
    try:
        return WorkflowConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(path: str | Path) -> WorkflowConfig:
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
