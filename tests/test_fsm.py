"""The FSM decoder: each transition rule pinned by a hand-made probability sequence."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from vlalert.actions import Action
from vlalert.heads.config import FSMConfig
from vlalert.heads.fsm import decode, init_state, step

S, O, A = Action.SILENT, Action.OBSERVE, Action.ALERT  # noqa: E741 (O reads as OBSERVE beside S and A)

# Thresholds chosen so every probability row below is unambiguous:
# climb to OBSERVE at p_o + p_a >= 0.5, fall below 0.3; climb to ALERT at p_a >= 0.6, fall below 0.4;
# SILENT -> ALERT in one tick only at p_a >= 0.9.
CFG = FSMConfig(
    observe_enter=0.5,
    observe_exit=0.3,
    alert_enter=0.6,
    alert_exit=0.4,
    alert_direct=0.9,
    k_enter=2,
    min_dwell=2,
    cooldown=2,
)

Q = (1.0, 0.0, 0.0)  # quiet: below every threshold
H = (0.4, 0.6, 0.0)  # p_o + p_a = 0.6: above observe_enter
M = (0.6, 0.4, 0.0)  # p_o + p_a = 0.4: between observe_exit and observe_enter
L = (0.8, 0.2, 0.0)  # p_o + p_a = 0.2: below observe_exit
R = (0.1, 0.2, 0.7)  # p_a = 0.7: above alert_enter, below alert_direct
X = (0.05, 0.07, 0.88)  # p_a = 0.88: just below alert_direct
D = (0.02, 0.03, 0.95)  # p_a = 0.95: above alert_direct
W = (0.3, 0.4, 0.3)  # p_a = 0.3 below alert_exit, but p_o + p_a = 0.7 above observe_enter


def run(seq, cfg=CFG) -> list[int]:
    return decode(np.array(seq, dtype=np.float64), cfg).tolist()


def test_k_consecutive_ticks_before_observe():
    # one tick above, a break, then two in a row: only the second of the pair enters OBSERVE
    assert run([Q, H, Q, H, H, H]) == [S, S, S, S, O, O]
    assert run([H, H], CFG.model_copy(update={"k_enter": 3})) == [S, S]
    assert run([H, H, H], CFG.model_copy(update={"k_enter": 3})) == [S, S, O]


def test_min_dwell_holds_observe():
    # OBSERVE entered at tick 1 is held for min_dwell ticks although the evidence vanished at tick 2
    assert run([H, H, Q, Q, Q]) == [S, O, O, S, S]
    assert run([H, H, Q, Q, Q], CFG.model_copy(update={"min_dwell": 3})) == [S, O, O, O, S]


def test_min_dwell_holds_alert():
    assert run([D, Q, Q, Q]) == [A, A, O, O]
    assert run([D, Q, Q, Q], CFG.model_copy(update={"min_dwell": 3})) == [A, A, A, O]


def test_hysteresis_exit_is_lower_than_enter():
    # between exit and enter: OBSERVE stays, SILENT does not climb
    assert run([H, H, M, M, M, L]) == [S, O, O, O, O, S]
    assert run([M, M, M, M]) == [S, S, S, S]
    # ALERT: p_a 0.5 (between 0.4 and 0.6) keeps ALERT, 0.3 releases it
    keep = (0.2, 0.3, 0.5)
    assert run([D, keep, keep, keep, W]) == [A, A, A, A, O]


def test_observe_to_alert_climbs_through_observe_below_direct_threshold():
    # p_a = 0.7 is an ALERT-level probability but below alert_direct: SILENT -> OBSERVE -> ALERT
    assert run([R, R, R, R]) == [S, O, A, A]


def test_direct_alert_only_above_high_threshold():
    assert run([Q, D, D]) == [S, A, A]
    assert run([Q, X, X, X]) == [S, S, O, A]  # 0.88 < 0.9: no jump
    assert run([Q, X, X, X], CFG.model_copy(update={"alert_direct": 0.88})) == [S, A, A, A]


def test_alert_descends_through_observe_to_silent():
    # never ALERT -> SILENT in one tick; OBSERVE is held for min_dwell on the way down
    assert run([D, D, D, Q, Q, Q, Q]) == [A, A, A, O, O, S, S]


@pytest.mark.parametrize(("cooldown", "first_realert"), [(0, 4), (2, 5), (3, 6)])
def test_cooldown_blocks_realert(cooldown, first_realert):
    # ALERT left at tick 2; then ALERT-level evidence from tick 3 on
    cfg = CFG.model_copy(update={"cooldown": cooldown})
    out = run([D, D, W, D, D, D, D, D], cfg)
    assert out[:3] == [A, A, O]
    assert out.index(A, 3) == first_realert
    assert out[3:first_realert] == [O] * (first_realert - 3)


def test_cooldown_also_blocks_direct_alert_from_silent():
    cfg = CFG.model_copy(update={"cooldown": 5})
    # ALERT left at tick 2 -> ALERT blocked at ticks 3..7; the D ticks climb through OBSERVE instead
    assert run([D, Q, Q, Q, Q, D, D, D, D], cfg) == [A, A, O, O, S, S, O, O, A]


def test_step_api_single_and_batch_agree_with_decode():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(5, 30))
    batch = decode(probs, CFG)
    assert batch.shape == (5, 30)
    for b in range(5):
        state = init_state()
        seq = []
        for t in range(30):
            state, act = step(state, probs[b, t], CFG)
            assert act.shape == ()
            seq.append(int(act))
        assert seq == batch[b].tolist() == decode(probs[b], CFG).tolist()
    assert set(np.unique(batch)) <= {S, O, A}


def test_step_rejects_wrong_shape():
    with pytest.raises(ValueError, match="does not match"):
        step(init_state((2,)), np.ones((3, 3)) / 3, CFG)


@pytest.mark.parametrize(
    "bad",
    [{"observe_exit": 0.6, "observe_enter": 0.5}, {"alert_exit": 0.7}, {"alert_direct": 0.55}],
)
def test_config_enforces_hysteresis_and_direct_threshold(bad):
    with pytest.raises(ValidationError):
        FSMConfig(**{**CFG.model_dump(), **bad})
