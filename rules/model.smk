# The VLM. The demo's tiny Qwen3-VL is built here, its tokenizer trained on the benchmark's train
# targets; a real model (model.name_or_path: a hub id or a local directory) is loaded as it is,
# so no rule builds it and a local directory is an input of the rules that load it.

VLM_DIR = LAYOUT.model(CFG.model)
TINY_THREADS = 2 if CFG.model.tiny.pretrain.enabled else 1  # pretraining trains the model; else a build


if CFG.model.is_tiny:

    rule tiny_model:
        input:
            train=LAYOUT.benchmark("train"),
        output:
            config=f"{VLM_DIR}/config.json",
            weights=f"{VLM_DIR}/model.safetensors",
            tokenizer=f"{VLM_DIR}/tokenizer.json",
        params:
            stage=stage_params(CFG, "tiny_model"),
            untracked=stage_untracked(CFG, "tiny_model"),
            code=code("tiny_model"),
        log:
            LAYOUT.log("tiny_model"),
        benchmark:
            LAYOUT.timing("tiny_model")
        threads: TINY_THREADS
        resources:
            mem_mb=scaled(4000),
            runtime=scaled(15),
            cpus_per_task=TINY_THREADS,
        conda:
            ENV
        script:
            "../workflow/scripts/tiny_model.py"
