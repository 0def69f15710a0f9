# SFT: LoRA on the VLM's language model (+ the belief/action token rows) over the benchmark's
# train ticks. Checkpoints go to sft/{run}/checkpoints/, which is deliberately not an output: a
# killed or failed job keeps them and the rerun resumes from the newest one with the same
# fingerprint. sft.nproc > 1 runs data-parallel ranks under torchrun (one per GPU, one node).

SFT_DIR = f"{R}/sft/{CFG.run}"
SFT_THREADS = max(2, CFG.sft.nproc * (CFG.sft.num_workers + 1))  # per rank: its loop and its loader workers


rule sft:
    input:
        unpack(lambda wildcards: model_inputs(CFG.model, R)),
        train=f"{R}/benchmark/train.parquet",
        val=f"{R}/benchmark/val.parquet",
    output:
        # peft save_pretrained (the tokenizer is saved in the same directory)
        adapter_config=f"{SFT_DIR}/adapter/adapter_config.json",
        adapter_model=f"{SFT_DIR}/adapter/adapter_model.safetensors",
        train_log=f"{SFT_DIR}/train_log.parquet",
        metrics=f"{SFT_DIR}/metrics.json",
    params:
        stage=stage_params(CFG, "sft"),
        model=VLM_DIR,
        code=code("sft"),
    log:
        f"{R}/logs/sft/{CFG.run}.log",
    benchmark:
        f"{R}/benchmarks/sft/{CFG.run}.tsv"
    threads: SFT_THREADS
    resources:
        gpu=CFG.sft.gpus(CFG.model.is_tiny),
        mem_mb=scaled(4000 if CFG.model.is_tiny else 64000 * CFG.sft.nproc),
        runtime=scaled(30 if CFG.model.is_tiny else 2880),
        cpus_per_task=SFT_THREADS,
    conda:
        ENV
    script:
        "../workflow/scripts/sft.py"
