# SFT: LoRA on the VLM's language model (+ the belief/action token rows) over the benchmark's
# train ticks. Checkpoints go to sft/{run}/checkpoints/, which is deliberately not an output: a
# killed or failed job keeps them and the rerun resumes from the newest one with the same
# fingerprint. sft.nproc > 1 runs data-parallel ranks under torchrun (one per GPU, one node).

SFT = LAYOUT.sft
SFT_THREADS = max(2, CFG.sft.nproc * (CFG.sft.num_workers + 1))  # per rank: its loop and its loader workers


rule sft:
    input:
        unpack(lambda wildcards: LAYOUT.model_inputs(CFG.model)),
        train=LAYOUT.benchmark("train"),
        val=LAYOUT.benchmark("val"),
        frames=expand(LAYOUT.frames(), source=SOURCES),  # the ticks' windows, decoded once per clip
    output:
        # peft save_pretrained (the tokenizer is saved in the same directory)
        adapter_config=SFT.adapter_config,
        adapter_model=SFT.adapter_model,
        train_log=SFT.train_log,
        metrics=SFT.metrics,
    params:
        stage=stage_params(CFG, "sft"),
        untracked=stage_untracked(CFG, "sft"),
        model=VLM_DIR,
        code=code("sft"),
    log:
        LAYOUT.log("sft"),
    benchmark:
        LAYOUT.timing("sft")
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
