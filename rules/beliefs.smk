# Beliefs: one structured safety belief and analysis per trainable tick (rules or an LLM).


rule beliefs:
    input:
        unpack(beliefs_inputs),
    output:
        beliefs=LAYOUT.beliefs(),
    params:
        stage=lambda wildcards: stage_params(CFG, "beliefs", wildcards.source),
        untracked=lambda wildcards: stage_untracked(CFG, "beliefs", wildcards.source),
        code=code("beliefs"),
    log:
        LAYOUT.log("beliefs"),
    benchmark:
        LAYOUT.timing("beliefs")
    resources:
        # Requests in flight: the llm provider's concurrency; the run-wide total is bounded by the
        # global resource `llm_requests` (profiles/*/config.yaml), so jobs of all sources share it.
        llm_requests=CFG.beliefs.llm.max_concurrency if CFG.beliefs.provider == "llm" else 0,
        mem_mb=scaled(4000),
        # The llm provider waits on a remote endpoint for hours at full scale; rules take minutes.
        runtime=scaled(720 if CFG.beliefs.provider == "llm" else 30),
        cpus_per_task=1,
    conda:
        ENV
    script:
        "../workflow/scripts/beliefs.py"
