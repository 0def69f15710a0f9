"""The three actions an alerter shows the driver, defined once for the whole project.

An action is an `Action` (an IntEnum): its int is its escalation rank, SILENT = 0 < OBSERVE = 1 <
ALERT = 2, so "at OBSERVE or above" is `codes >= Action.OBSERVE` and an onset is a comparison of
neighbours; its name is what the Parquet files (labels, benchmark, scores) and the model's text
hold. Names and codes are converted at the boundaries with `action_codes` and `action_names`, which
refuse anything else, so a misspelt action never counts as SILENT.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np


class Action(IntEnum):
    SILENT = 0
    OBSERVE = 1
    ALERT = 2


ACTIONS: tuple[str, ...] = tuple(a.name for a in Action)  # the names, in code order
ACTION_CODES: dict[str, int] = {a.name: int(a) for a in Action}  # name -> code, for lookups in a query


def action_codes(actions: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Actions as names (SILENT/OBSERVE/ALERT) or ints 0/1/2 -> int8 codes; ValueError on anything else."""
    arr = np.asarray(actions)
    if arr.ndim != 1:
        raise ValueError(f"actions must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int8)
    if arr.dtype.kind in "iu":
        if arr.min() < Action.SILENT or arr.max() > Action.ALERT:
            raise ValueError(f"action codes must be 0, 1 or 2, got {sorted(set(arr.tolist()) - {0, 1, 2})}")
        return arr.astype(np.int8)
    if arr.dtype.kind in "UO":
        names, inverse = np.unique(arr.astype(str), return_inverse=True)
        bad = [n for n in names if n not in ACTION_CODES]
        if bad:
            raise ValueError(f"unknown actions {bad}, allowed {list(ACTIONS)}")
        lut = np.array([ACTION_CODES[n] for n in names], dtype=np.int8)
        return lut[inverse.reshape(-1)]
    raise ValueError(f"actions must be names or integer codes, got dtype {arr.dtype}")


def action_names(codes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Codes 0/1/2 as an object array of names (what a Parquet action column holds)."""
    return np.asarray(ACTIONS, dtype=object)[action_codes(np.asarray(codes, dtype=np.int64))]
