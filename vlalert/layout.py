"""Where every stage of a run writes: the results layout, spelled once (DESIGN.md "Data contracts").

`Layout(results, run)` names each file and folder under the `results:` folder: the rules declare
their inputs and outputs with it, and the library code that finds a run's files afterwards (the
cache shards' model and adapter, SFT's run directory, `vlalert predict`) asks it too. A method whose
file depends on a wildcard returns the Snakemake pattern by default and the concrete path when given
the value: `layout.labels()` is `results/labels/{source}.parquet`, `layout.labels("dad")` is
`results/labels/dad.parquet`. Paths are strings, joined with "/", exactly as the rules spell them.

The Snakefile builds one at parse time, so this module imports nothing beyond the standard library
(the model directory is asked of vlalert.vlm.config, itself light, when a rule needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vlalert.cache.config import CacheConfig
    from vlalert.vlm.config import VLMConfig

# Per rule: its log under logs/ and its Snakemake `benchmark:` file (wall time, memory) under
# benchmarks/, as "<folder>/<name>" with the rule's wildcards and `{run}` for the run's name.
# None: the rule keeps no timing.
JOB_FILES: dict[str, tuple[str, str | None]] = {
    "download_hub": ("download/{name}", "download/{name}"),
    "check_source": ("download/{source}.layout", "download/{source}.layout"),
    "demo_source": ("demo/{source}", "demo/{source}"),
    "ingest": ("ingest/{source}", "ingest/{source}"),
    "gate": ("gate/{source}", "gate/{source}"),
    "relabel": ("relabel/{source}", "relabel/{source}"),
    "beliefs": ("beliefs/{source}", "beliefs/{source}"),
    "frames": ("frames/{source}", "frames/{source}"),
    "benchmark": ("benchmark/benchmark", "benchmark/benchmark"),
    "tiny_model": ("models/tiny_model", "models/tiny_model"),
    "sft": ("sft/{run}", "sft/{run}"),
    "cache_shard": ("cache/{run}/{split}/part-{shard}", "cache/{run}/{split}_part-{shard}"),
    "cache_gather": ("cache/{run}/{split}/gather", None),
    "heads": ("heads/{run}/{head}_seed{seed}", "heads/{run}_{head}_seed{seed}"),
    "score": ("score/{run}_{split}", "score/{run}_{split}"),
    "summary": ("summary/{run}", "summary/{run}"),
    "report_figures": ("report/{run}", "report/{run}"),
    "report_data": ("report/{run}_data", "report/{run}_data"),
    "report_model": ("report/{run}_model", "report/{run}_model"),
}


class RunConfig(Protocol):
    """What a layout needs of a config (vlalert.config.WorkflowConfig has both)."""

    @property
    def results(self) -> str: ...

    @property
    def run(self) -> str: ...


def adapter_config_file(adapter_dir: str) -> str:
    """The config file peft's `save_pretrained` writes into an adapter directory."""
    return f"{adapter_dir}/adapter_config.json"


@dataclass(frozen=True)
class SFTFiles:
    """One SFT run's directory. `checkpoints/` and `job.json` are not rule outputs: a killed job
    keeps its checkpoints and the rerun resumes from them."""

    dir: str

    @property
    def adapter(self) -> str:
        """peft `save_pretrained` of the LoRA adapter, with the tokenizer."""
        return f"{self.dir}/adapter"

    @property
    def adapter_config(self) -> str:
        return adapter_config_file(self.adapter)

    @property
    def adapter_model(self) -> str:
        return f"{self.adapter}/adapter_model.safetensors"

    @property
    def train_log(self) -> str:
        return f"{self.dir}/train_log.parquet"

    @property
    def metrics(self) -> str:
        return f"{self.dir}/metrics.json"

    @property
    def checkpoints(self) -> str:
        return f"{self.dir}/checkpoints"

    @property
    def job(self) -> str:
        """The job description torchrun-launched ranks read."""
        return f"{self.dir}/job.json"


@dataclass(frozen=True)
class HeadFiles:
    """One trained head (one head kind, one seed)."""

    dir: str

    @property
    def model(self) -> str:
        return f"{self.dir}/model.safetensors"

    @property
    def config(self) -> str:
        return f"{self.dir}/config.json"

    @property
    def metrics(self) -> str:
        return f"{self.dir}/metrics.json"

    @property
    def train_log(self) -> str:
        return f"{self.dir}/train_log.parquet"


@dataclass(frozen=True)
class ReportFiles:
    """The report's own pages and figures (vlalert.report: data, training, beliefs), one file per
    kind so that each has its caption in the Snakemake report."""

    dir: str

    @property
    def overview(self) -> str:
        """Clips and ticks per source and split, rejected clips: the page the report's front page cites."""
        return f"{self.dir}/run_overview.html"

    @property
    def benchmark_counts(self) -> str:
        return f"{self.dir}/benchmark_counts.png"

    @property
    def rejected(self) -> str:
        return f"{self.dir}/rejected_by_reason.png"

    @property
    def sft_loss(self) -> str:
        return f"{self.dir}/sft_loss.png"

    def head_loss(self, head: str = "{head}") -> str:
        return f"{self.dir}/heads_loss_{head}.png"

    def belief_spans(self, source: str = "{source}") -> str:
        return f"{self.dir}/belief_spans_{source}.png"


@dataclass(frozen=True)
class Layout:
    """The files of run `run` under the folder `results` (the config's `results:` and `run:`)."""

    results: str
    run: str

    @classmethod
    def of(cls, cfg: RunConfig) -> Layout:
        return cls(cfg.results, cfg.run)

    # ---------------------------------------------------------------- sources on disk

    def download_marker(self, name: str = "{name}") -> str:
        """The completion marker of a hub download (its pinned commit and files)."""
        return f"{self.results}/download/{name}.json"

    def source_manifest(self, source: str = "{source}") -> str:
        """The manifest check_source writes of a source's files, on which ingest depends."""
        return f"{self.results}/download/{source}.layout.json"

    def demo_manifest(self, source: str = "{source}") -> str:
        """The manifest of the clips the demo renders for a source."""
        return f"{self.results}/demo/{source}/demo_manifest.json"

    # ---------------------------------------------------------------- the data half

    def ingest_videos(self, source: str = "{source}") -> str:
        return f"{self.results}/ingest/{source}/videos.parquet"

    def ingest_rejected(self, source: str = "{source}") -> str:
        return f"{self.results}/ingest/{source}/rejected.parquet"

    def ingest_consensus(self, source: str = "{source}") -> str:
        return f"{self.results}/ingest/{source}/consensus.parquet"

    def gate(self, source: str = "{source}") -> str:
        return f"{self.results}/gate/{source}.parquet"

    def labels(self, source: str = "{source}") -> str:
        return f"{self.results}/labels/{source}.parquet"

    def beliefs(self, source: str = "{source}") -> str:
        return f"{self.results}/beliefs/{source}.parquet"

    def frames(self, source: str = "{source}") -> str:
        """The source's frames store: its ticks' window frames at model resolution (vlalert.frames)."""
        return f"{self.results}/frames/{source}.arrow"

    def benchmark(self, split: str = "{split}") -> str:
        return f"{self.results}/benchmark/{split}.parquet"

    @property
    def benchmark_manifest(self) -> str:
        return f"{self.results}/benchmark/manifest.json"

    # ---------------------------------------------------------------- the model half (per run)

    def model(self, model: VLMConfig) -> str:
        """The directory or hub id the stages load (the locally built demo model for `tiny-qwen3vl`)."""
        from vlalert.vlm.config import model_location

        return model_location(model, self.results)

    def model_inputs(self, model: VLMConfig) -> dict[str, str]:
        """Inputs of a rule that loads the model: the directory's config.json, none for a hub id."""
        from vlalert.vlm.config import model_inputs

        return model_inputs(model, self.results)

    @property
    def sft(self) -> SFTFiles:
        return SFTFiles(f"{self.results}/sft/{self.run}")

    def adapter(self, cache: CacheConfig) -> str | None:
        """The peft adapter attached to the model (`cache.adapter`): this run's SFT adapter, a
        directory of the user's, or None (`cache.adapter: none`)."""
        mode = cache.adapter_mode()
        if mode == "none":
            return None
        if mode == "sft":
            return self.sft.adapter
        return cache.adapter

    def cache_dir(self, split: str = "{split}") -> str:
        return f"{self.results}/cache/{self.run}/{split}"

    def cache_part(self, split: str = "{split}", shard: str = "{shard}") -> str:
        return f"{self.cache_dir(split)}/part-{shard}.parquet"

    def cache_part_summary(self, split: str = "{split}", shard: str = "{shard}") -> str:
        return f"{self.cache_dir(split)}/part-{shard}.summary.json"

    def cache_index(self, split: str = "{split}") -> str:
        """The gathered index of a split's parts: what the stages after the cache depend on."""
        return f"{self.cache_dir(split)}/index.json"

    def head(self, head: str = "{head}", seed: int | str = "{seed}") -> HeadFiles:
        return HeadFiles(f"{self.results}/heads/{self.run}/{head}/seed{seed}")

    def scores(self, split: str = "{split}") -> str:
        return f"{self.results}/scores/{self.run}/{split}.parquet"

    @property
    def eval_dir(self) -> str:
        return f"{self.results}/eval/{self.run}"

    @property
    def eval_summary(self) -> str:
        return f"{self.eval_dir}/summary.parquet"

    @property
    def eval_summary_table(self) -> str:
        """The summary as text, for the Snakemake report."""
        return f"{self.eval_dir}/summary.txt"

    @property
    def eval_figures(self) -> str:
        return f"{self.eval_dir}/figures"

    @property
    def eval_tables(self) -> str:
        return f"{self.eval_dir}/tables"

    def eval_figure(self, name: str) -> str:
        """A figure of the evaluation (vlalert.report.evaluation.figure_names) in `eval_figures`."""
        return f"{self.eval_figures}/{name}"

    @property
    def report(self) -> ReportFiles:
        return ReportFiles(f"{self.eval_dir}/report")

    # ---------------------------------------------------------------- job logs and timings

    def log(self, rule: str) -> str:
        """A rule's log pattern (its wildcards left as they are)."""
        return f"{self.results}/logs/{self._job_name(rule, 0)}.log"

    def timing(self, rule: str) -> str:
        """A rule's `benchmark:` pattern: Snakemake's wall time and memory of each job."""
        return f"{self.results}/benchmarks/{self._job_name(rule, 1)}.tsv"

    def _job_name(self, rule: str, which: int) -> str:
        name = JOB_FILES[rule][which]
        if name is None:
            raise KeyError(f"rule {rule} keeps no timing")
        return name.replace("{run}", self.run)
