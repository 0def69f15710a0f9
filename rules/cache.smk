# Cache: per benchmark tick, the VLM's belief-span hidden states z_t / r_t (vlalert.cache).
# Each split is scattered into cache.shards jobs (one GPU each on a cluster; a killed job resumes
# from its last complete chunk) and gathered into index.json, which is what later stages depend on.
# Paths come from the layout (vlalert/layout.py), the shards' inputs from vlalert.cache.paths; the tiny demo model runs on CPU, a real VLM
# asks for one GPU per shard.

from vlalert.cache.paths import part_files, shard_inputs, summary_files

CACHE_GPU = int(not CFG.model.is_tiny and CFG.cache.device != "cpu")
CACHE_THREADS = 8 if CACHE_GPU else 2


wildcard_constraints:
    shard=r"\d{5}",


localrules:
    cache_gather,


rule cache_shard:
    input:
        unpack(lambda wildcards: shard_inputs(CFG, wildcards.split)),
        frames=expand(LAYOUT.frames(), source=SOURCES),  # the ticks' windows, decoded once per clip
    output:
        part=LAYOUT.cache_part(),
        summary=LAYOUT.cache_part_summary(),
    params:
        stage=lambda wildcards: stage_params(CFG, "cache"),
        untracked=lambda wildcards: stage_untracked(CFG, "cache"),
        code=code("cache_shard"),
    log:
        LAYOUT.log("cache_shard"),
    benchmark:
        LAYOUT.timing("cache_shard")
    threads: CACHE_THREADS
    resources:
        gpu=CACHE_GPU,
        mem_mb=scaled(48000 if CACHE_GPU else 4000),
        runtime=scaled(360 if CACHE_GPU else 60),
        cpus_per_task=CACHE_THREADS,
    conda:
        ENV
    script:
        "../workflow/scripts/cache_shard.py"


rule cache_gather:
    input:
        parts=lambda wildcards: part_files(CFG, wildcards.split),
        summaries=lambda wildcards: summary_files(CFG, wildcards.split),
    output:
        index=LAYOUT.cache_index(),
    params:
        stage=lambda wildcards: stage_params(CFG, "cache"),
        untracked=lambda wildcards: stage_untracked(CFG, "cache"),
        code=code("cache_gather"),
    log:
        LAYOUT.log("cache_gather"),
    conda:
        ENV
    script:
        "../workflow/scripts/cache_gather.py"
