# The embedded demo corpus: synthetic clips written in each real source's own format.


rule demo_source:
    output:
        manifest=LAYOUT.demo_manifest(),
    params:
        stage=lambda wildcards: stage_params(CFG, "demo", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "demo", wildcards.source),
        code=code("make_demo"),
    log:
        LAYOUT.log("demo_source"),
    benchmark:
        LAYOUT.timing("demo_source")
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/make_demo.py"
