"""Join every source's labels into video-level train/val/test splits and write the manifest."""

from vlalert.benchmark import build_benchmark, finalize_manifest, write_manifest
from vlalert.schemas import read_table, write_table
from vlalert.stage_config import BenchmarkSlice
from vlalert.workflow import job_logging, job_slice

snakemake = globals()["snakemake"]
with job_logging(snakemake.log[0]) as log:
    job = job_slice(snakemake, BenchmarkSlice)
    sources = snakemake.params.sources
    labels = {s: read_table("labels", p) for s, p in zip(sources, snakemake.input.labels, strict=True)}
    videos = {s: read_table("videos", p) for s, p in zip(sources, snakemake.input.videos, strict=True)}
    rejected = {s: read_table("rejected", p) for s, p in zip(sources, snakemake.input.rejected, strict=True)}
    beliefs = {s: read_table("beliefs", p) for s, p in zip(sources, snakemake.input.beliefs, strict=True)}
    consensus = {
        s: read_table("consensus", p) for s, p in zip(sources, snakemake.input.consensus, strict=True)
    }
    tables, manifest = build_benchmark(labels, videos, rejected, job, beliefs, consensus)
    for warning in manifest["warnings"]:
        log.warning("%s", warning)
    for source, moved in manifest["moved_to_test"].items():
        log.warning("%s: %d clip(s) peers evaluate on moved to test: %s", source, len(moved), moved)
    paths = {split: write_table("benchmark", tables[split], snakemake.output[split]) for split in tables}
    manifest = finalize_manifest(manifest, paths)
    write_manifest(manifest, snakemake.output.manifest)
    log.info("benchmark: %s", {split: t.num_rows for split, t in tables.items()})
