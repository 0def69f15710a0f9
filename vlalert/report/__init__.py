"""The run's report (`snakemake --report`): figures, tables and the facts its main page states.

- `evaluation`: the test split's clip timelines, per-source DAUS bars, reliability diagram, key metrics;
- `data`: the benchmark's clips and ticks per split x source x action, rejected clips by reason, and
  the run overview table (`facts` gives its numbers);
- `training`: SFT train/val loss, each head's train/val loss per seed;
- `beliefs`: the belief-span view (each tick's frame, generated belief text and actions);
- `facts`: the run's counts read from the benchmark manifest, standard library only, so that the
  Snakefile can label the report's items with them at report time without importing matplotlib.

Nothing is imported here, so that `vlalert.report.facts` stays light for the Snakefile: import from
the modules themselves.
"""
