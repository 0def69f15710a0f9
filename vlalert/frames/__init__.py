"""The frames stage: each clip decoded once, its tick windows' frames stored at the model's resolution.

Modules: `config` (pydantic `FramesConfig`, nested as `frames:` in the workflow config; no torch,
the Snakefile reads it), `store` (which frames each clip's ticks need, the resumable writer and the
memory-mapped reader that SFT and the cache stage read windows from).
"""
