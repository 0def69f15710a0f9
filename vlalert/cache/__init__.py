"""The cache stage: per benchmark tick, the VLM's belief-span hidden states z_t and r_t.

Modules: `config` (pydantic `CacheConfig`, nested as `cache:` in the workflow config), `rows`
(which ticks a split caches, how they are cut into shards and chunks: pyarrow only), `paths`
(where the model, the adapter and the cache files are: for the rules, no torch),
`extract` (generation and hidden states of a batch of ticks: torch), `store` (atomic Parquet
writes, resumable chunks, shard merge, the split's index), `stage` (one shard job end to end:
load the model once, fused and with the SFT adapter, run the chunks that are not done yet).

Nothing heavy is imported here: the Snakefile reads `vlalert.cache.config` without torch.
"""
