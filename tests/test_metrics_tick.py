"""Tick-level metrics and the action-code boundary, with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlalert.actions import action_codes
from vlalert.metrics.tick import (
    action_balanced_accuracy,
    action_macro_f1,
    alert_ap,
    alert_auroc,
    tick_metrics,
)

S, OBS, A = "SILENT", "OBSERVE", "ALERT"


def test_action_codes_from_names_and_ints():
    assert action_codes([S, OBS, A, S]).tolist() == [0, 1, 2, 0]
    assert action_codes(np.array([2, 0, 1])).tolist() == [2, 0, 1]
    assert action_codes(np.array([S, A], dtype=object)).dtype == np.int8
    assert action_codes([]).size == 0


@pytest.mark.parametrize("bad", [["SILENT", "ALRET"], [0, 3], [-1], ["silent"]])
def test_unknown_actions_are_errors_not_silent(bad):
    with pytest.raises(ValueError):
        action_codes(bad)


def test_auroc_and_ap_of_alert_vs_rest():
    labels = [S, A, OBS, A]  # OBSERVE counts as "rest"
    p = [0.1, 0.3, 0.35, 0.8]
    # Positive/negative pairs: (.3,.1) ok, (.3,.35) wrong, (.8,.1) ok, (.8,.35) ok -> 3/4.
    assert alert_auroc(labels, p) == pytest.approx(0.75)
    # Ranked .8(A) .35(O) .3(A) .1(S): precision 1 at recall .5, 2/3 at recall 1 -> AP = 5/6.
    assert alert_ap(labels, p) == pytest.approx(5 / 6)


def test_single_class_input_gives_nan():
    assert math.isnan(alert_auroc([S, OBS, S], [0.1, 0.2, 0.3]))
    assert math.isnan(alert_ap([S, OBS, S], [0.1, 0.2, 0.3]))
    assert math.isnan(alert_auroc([A, A], [0.1, 0.2]))
    assert alert_ap([A, A], [0.1, 0.2]) == 1.0


def test_macro_f1_and_balanced_accuracy():
    labels = [S, S, OBS, A]
    pred = [S, OBS, OBS, A]
    # F1: SILENT P=1 R=.5 -> 2/3; OBSERVE P=.5 R=1 -> 2/3; ALERT 1.
    assert action_macro_f1(labels, pred) == pytest.approx(7 / 9)
    # Recalls .5, 1, 1.
    assert action_balanced_accuracy(labels, pred) == pytest.approx(5 / 6)


def test_class_absent_everywhere_is_left_out_but_a_false_class_counts():
    labels = [S, S, S, S]
    pred = [S, S, S, A]
    # SILENT P=1 R=.75 -> 6/7; ALERT predicted, never labelled -> 0; OBSERVE absent -> left out.
    assert action_macro_f1(labels, pred) == pytest.approx(3 / 7)
    assert action_balanced_accuracy(labels, pred) == pytest.approx(0.75)


def test_tick_metrics_bundle_and_counts():
    m = tick_metrics(np.array([0, 2, 1, 2]), np.array([0, 2, 1, 1]), np.array([0.1, 0.3, 0.35, 0.8]))
    assert m["tick_n"] == 4 and m["tick_n_alert"] == 2
    assert m["tick_auroc"] == pytest.approx(0.75)
    assert m["tick_balanced_acc"] == pytest.approx((1 + 1 + 0.5) / 3)
    empty = tick_metrics(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    assert empty["tick_n"] == 0 and all(math.isnan(empty[k]) for k in ("tick_auroc", "tick_macro_f1"))
    with pytest.raises(ValueError, match="length"):
        tick_metrics([S, A], [S], [0.1, 0.2])
