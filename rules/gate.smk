# Gate: a collision score p_collision(t) per tick from the configured provider.


rule gate:
    input:
        unpack(gate_inputs),
    output:
        gate=LAYOUT.gate(),
    params:
        stage=lambda wildcards: stage_params(CFG, "gate", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "gate", wildcards.source),
        code=code("gate"),
    log:
        LAYOUT.log("gate"),
    benchmark:
        LAYOUT.timing("gate")
    resources:
        # Only the badas provider runs a model (V-JEPA2 ViT-L, GPU); the others read tables.
        gpu=for_badas(1, 0),
        mem_mb=scaled(4000, badas=32000),
        runtime=scaled(30, badas=480),
        cpus_per_task=for_badas(8, 1),
    conda:
        ENV
    script:
        "../workflow/scripts/gate.py"
