"""Scoring: DAUS and the standard tick- and clip-level metrics, as pure functions.

- `vlalert.metrics.tick`: per-tick AUROC / AP of p_alert, macro-F1 and balanced accuracy of the
  decoded action, action onsets;
- `vlalert.metrics.clip`: a clip's series (`ClipSeries`, `clips_from_table`), AP, mTTA, TTA@R,
  R@k s, false ALERT episodes per hour;
- `vlalert.metrics.daus`: the deployment-aware utility score (`daus`, its U and P);
- `vlalert.metrics.suite`: all of them as one flat dict (`summarize`), per source, mean ± std over seeds;
- `vlalert.metrics.config`: `ScoringConfig`, the constants (no numpy).

Nothing is re-exported here: the workflow config nests `ScoringConfig`, so the Snakefile's parse
imports this package, and it must not pull numpy and pyarrow (74 ms) with it.
"""
