# Sources on disk: hub datasets fetched at a pinned commit (with a completion marker), the sources
# that cannot be downloaded checked where the user placed them (every missing item named at once).
# Both run where snakemake itself runs (localrules): cluster nodes often have no internet access.

from vlalert.download_config import download_for_source

HUB_DOWNLOADS = [name for name, dl in CFG.download.items() if dl.enabled]
MANUAL_SOURCES = [s for s in SOURCES if download_for_source(CFG.download, s) is None]


localrules:
    download_hub,
    check_source,
    download,


# `snakemake download`: every hub dataset, and in a real run the layout of every source placed by hand.
rule download:
    input:
        expand(LAYOUT.download_marker(), name=HUB_DOWNLOADS),
        expand(LAYOUT.source_manifest(), source=[] if CFG.demo.enabled else MANUAL_SOURCES),


rule download_hub:
    output:
        marker=LAYOUT.download_marker(),
    params:
        stage=lambda wildcards: stage_params(CFG, "download", wildcards.name),
        untracked=lambda wildcards: stage_untracked(CFG, "download", wildcards.name),
        code=code("download_hub"),
    log:
        LAYOUT.log("download_hub"),
    benchmark:
        LAYOUT.timing("download_hub")
    wildcard_constraints:
        name="|".join(HUB_DOWNLOADS) or "(?!)",
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(720),
        cpus_per_task=2,
    conda:
        ENV
    script:
        "../workflow/scripts/download_hub.py"


# Every source, however it got on disk: checks a hand-placed layout (failing with every missing item),
# and writes the source manifest that ingest depends on. `files` is the fingerprint of the source's
# files as they are when the DAG is built (vlalert/source_files.py): an edited annotation or a
# replaced video changes it, so this job, ingest and everything after rerun; otherwise nothing does.
rule check_source:
    input:
        unpack(source_upstream),
    output:
        layout=LAYOUT.source_manifest(),
    params:
        stage=lambda wildcards: stage_params(CFG, "check_source", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "check_source", wildcards.source),
        files=lambda wildcards: source_fingerprint(source_cfg(wildcards)),
        code=code("check_source"),
    log:
        LAYOUT.log("check_source"),
    benchmark:
        LAYOUT.timing("check_source")
    resources:
        mem_mb=scaled(1000),
        runtime=scaled(10),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/check_source.py"
