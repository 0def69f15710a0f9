"""Action codes, onsets, and the tick-level metrics.

Inside the metrics package an action is an int8 code SILENT=0 < OBSERVE=1 < ALERT=2: the order is
the escalation order, so "at OBSERVE or above" is `codes >= OBSERVE` and onsets are a comparison of
neighbours. Strings (as in the Parquet files) and ints are converted once, at the boundary, by
`to_action_codes`.

Tick-level metrics are computed over the ticks the caller passes: the caller removes excluded
(post-event) ticks first, since those have no label that a model could be held to.
"""

from __future__ import annotations

import warnings

import numpy as np

from vlalert.actions import Action, action_codes


def onsets(actions: np.ndarray, level: int) -> np.ndarray:
    """Mask of ticks where the action rises to >= `level` from below.

    The level before a clip is SILENT, so a clip that starts at or above `level` has an onset at its
    first tick: an alerter that is already alerting when the clip begins has still raised an alert.
    """
    above = np.asarray(actions) >= level
    prev = np.concatenate(([False], above[:-1]))
    return above & ~prev


def alert_auroc(labels: np.ndarray, p_alert: np.ndarray) -> float:
    """AUROC of p_alert for ALERT vs rest; NaN when the ticks hold only one of the two classes."""
    y = action_codes(labels) == Action.ALERT
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score  # on use: parsing the Snakefile imports this package

    return float(roc_auc_score(y, np.asarray(p_alert, dtype=np.float64)))


def alert_ap(labels: np.ndarray, p_alert: np.ndarray) -> float:
    """Average precision of p_alert for ALERT vs rest; NaN when there is no ALERT tick (undefined).

    With only ALERT ticks AP is 1 for any score, which is true but says nothing; it is kept.
    """
    y = action_codes(labels) == Action.ALERT
    if not y.any():
        return float("nan")
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, np.asarray(p_alert, dtype=np.float64)))


def action_macro_f1(labels: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the three actions; a class absent from both labels and predictions is left out.

    Leaving it out (zero_division=NaN) keeps a subset without, say, ALERT labels (a negatives-only
    source) from being capped at 2/3 for a class nobody could get right; a class that is predicted
    but never labelled still counts with F1 = 0. NaN when there are no ticks.
    """
    y, yhat = action_codes(labels), action_codes(pred)
    _same_length(y, yhat)
    if y.size == 0:
        return float("nan")
    from sklearn.metrics import f1_score

    return float(
        f1_score(
            y,
            yhat,
            average="macro",
            labels=[Action.SILENT, Action.OBSERVE, Action.ALERT],
            zero_division=np.nan,
        )
    )


def action_balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the action classes present in the labels; NaN when there are no ticks."""
    y, yhat = action_codes(labels), action_codes(pred)
    _same_length(y, yhat)
    if y.size == 0:
        return float("nan")
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # Predicting a class that is never labelled is legitimate here; sklearn only warns about it.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(balanced_accuracy_score(y, yhat))


def tick_metrics(labels: np.ndarray, pred: np.ndarray, p_alert: np.ndarray) -> dict[str, float]:
    """All tick-level metrics of one set of (non-excluded) ticks, with the counts that explain a NaN."""
    y = action_codes(labels)
    p = np.asarray(p_alert, dtype=np.float64)
    _same_length(y, p)
    return {
        "tick_n": float(y.size),
        "tick_n_alert": float(np.count_nonzero(y == Action.ALERT)),
        "tick_auroc": alert_auroc(y, p),
        "tick_ap": alert_ap(y, p),
        "tick_macro_f1": action_macro_f1(y, pred),
        "tick_balanced_acc": action_balanced_accuracy(y, pred),
    }


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} labels vs {len(b)} values")
