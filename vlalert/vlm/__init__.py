"""The VLM stage's model side: the tiny demo Qwen3-VL, its tokenizer, loading, and model inputs.

Modules: `config` (pydantic `VLMConfig`, nested as `model:` in the workflow config), `tokenizer`
(byte-level BPE trained locally, Qwen's special tokens), `tiny` (build the toy-width Qwen3-VL
directory), `loading` (`from_pretrained` for the tiny directory and real checkpoints alike),
`inputs` (frames -> pixel_values_videos without torchvision, prompt -> ids and labels, collate).

Nothing heavy is imported here: the Snakefile reads `vlalert.vlm.config` without torch or
transformers.
"""
