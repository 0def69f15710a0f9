# Gate: a collision score p_collision(t) per tick from the configured provider.


rule gate:
    input:
        unpack(gate_inputs),
    output:
        gate=f"{R}/gate/{{source}}.parquet",
    params:
        stage=lambda wildcards: stage_params(CFG, "gate", wildcards.source),
    log:
        f"{R}/logs/gate/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/gate/{{source}}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/gate.py"
