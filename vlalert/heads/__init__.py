"""The heads stage: DangerHead, PolicyHead, the FSM action decoder, and their Arrow data path.

Modules: `config` (pydantic configs), `fsm` (numpy decoder + autoregressive rollout), `danger` and
`policy` (torch modules and losses), `data` (cache Parquet -> padded clip batches without per-row
Python objects), `train` (seeded, deterministic training of one head for one seed).

This package file imports nothing heavy on purpose: the Snakefile and the decoder import
`vlalert.heads.config` / `vlalert.heads.fsm` without pulling torch in.
"""
