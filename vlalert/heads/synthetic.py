"""Synthetic heads data in the cache and benchmark formats, for tests and benchmarks/heads_epoch.py.

`synthetic_split` gives (cache table, benchmark labels table) whose vectors carry the labels along
fixed random directions, so a head can learn them without a VLM. It is not part of the heads stage
(the stage's code fingerprint leaves it out: editing the label rule does not rerun a trained head
for its sake); its labels come from the label stage's own rule, never a copy of it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vlalert.actions import ACTIONS, Action, action_names
from vlalert.config import LabelsConfig
from vlalert.labels import danger_target, window_action

LABELS = LabelsConfig()  # the label stage's defaults: alert_s 2 s, observe_s 4 s


def _vector_array(mat: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(mat, dtype=np.float16).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])


def synthetic_split(
    n_clips: int,
    hidden: int,
    seed: int,
    *,
    split: str = "train",
    min_ticks: int = 6,
    max_ticks: int = 20,
    positive_frac: float = 0.5,
    prefix: bool = True,
    signal: float = 1.5,
    direction_seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """(cache table, benchmark labels table) of n_clips synthetic clips at width `hidden`.

    Labels are the label stage's own (`labels.window_action`, `labels.danger_target`, default
    LabelsConfig) at 1 Hz with the event at t_r + alert_s: OBSERVE 4 ticks before t_r, ALERT at t_r and
    t_r + 1, excluded after, danger ramp 0 -> 0.5 -> 1. Positive clips with room before the
    observe window also get a `{id}#prefix` clip (parent_id set). The vectors carry the labels
    along fixed random directions plus unit noise, so a head can learn them: z along the danger
    target, r along the action. The directions depend on `direction_seed` only, so splits drawn
    with different `seed`s share them (a head trained on one split transfers to another).
    """
    directions = np.random.default_rng(direction_seed)
    dir_z = directions.standard_normal(4 * hidden).astype(np.float32)
    dir_r = directions.standard_normal((3, hidden)).astype(np.float32)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {
        k: [] for k in ("vid", "tick", "action", "danger", "excl", "parent", "pos", "tr")
    }
    for c in range(n_clips):
        vid = f"syn{seed}_{c:05d}"
        n = int(rng.integers(min_ticks, max_ticks + 1))
        positive = bool(rng.random() < positive_frac) and n >= 4
        t_r = int(rng.integers(2, n - 1)) if positive else None
        before = t_r - int(LABELS.observe_s) if positive else 0  # ticks before the observe window
        for clip_vid, parent, ticks in [(vid, None, range(n))] + (
            [(f"{vid}#prefix", vid, range(before))] if positive and prefix and before >= 3 else []
        ):
            is_prefix = parent is not None
            for t in ticks:
                if positive and not is_prefix:
                    name, _, excl = window_action(float(t), float(t_r), LABELS, t_event=t_r + LABELS.alert_s)
                    act = Action[name]
                    dng = danger_target(float(t), float(t_r), True, LABELS, t_event=t_r + LABELS.alert_s)
                else:
                    act, dng, excl = Action.SILENT, 0.0, False
                rows["vid"].append(clip_vid)
                rows["tick"].append(t)
                rows["action"].append(act)
                rows["danger"].append(dng)
                rows["excl"].append(excl)
                rows["parent"].append(parent)
                rows["pos"].append(positive and not is_prefix)
                rows["tr"].append(float(t_r) if positive and not is_prefix else None)
    n_rows = len(rows["vid"])
    action = np.asarray(rows["action"], dtype=np.int64)
    danger = np.asarray(rows["danger"], dtype=np.float32)
    z = rng.standard_normal((n_rows, 4 * hidden), dtype=np.float32) + signal * danger[:, None] * dir_z
    r = rng.standard_normal((n_rows, hidden), dtype=np.float32) + signal * dir_r[action]
    ticks = pa.array(rows["tick"], pa.int32())
    cache = pa.table(
        {
            "video_id": pa.array(rows["vid"], pa.string()),
            "tick": ticks,
            "z": _vector_array(z),
            "r": _vector_array(r),
            "generated_text": pa.array([f"<|ACTION|> {ACTIONS[a]} <|/ACTION|>" for a in action]),
        }
    )
    frame_idx = pa.ListArray.from_arrays(
        pa.array(np.arange(n_rows + 1, dtype=np.int32) * 8),
        pa.array((np.asarray(rows["tick"], dtype=np.int32)[:, None] * 30 + np.arange(8) * 8).reshape(-1)),
    )
    names = action_names(action)
    labels = pa.table(
        {
            "video_id": cache.column("video_id"),
            "source": pa.array(["synthetic"] * n_rows),
            "tick": ticks,
            "t_s": pa.array(np.asarray(rows["tick"], dtype=np.float64) + 2.0),
            "frame_idx": frame_idx,
            "action": pa.array(names.tolist(), pa.string()),
            "danger": pa.array(danger),
            "rule": pa.array(["synthetic"] * n_rows),
            "excluded": pa.array(rows["excl"], pa.bool_()),
            "parent_id": pa.array(rows["parent"], pa.string()),
            "split": pa.array([split] * n_rows),
            "path": pa.array([f"synthetic/{v.split('#')[0]}.mp4" for v in rows["vid"]]),
            "fps": pa.array(np.full(n_rows, 30.0)),
            "n_frames": pa.array(np.full(n_rows, 900, dtype=np.int32)),
            "is_positive": pa.array(rows["pos"], pa.bool_()),
            "t_risky_s": pa.array(rows["tr"], pa.float64()),
            "t_event_s": pa.array([None if t is None else t + 2.0 for t in rows["tr"]], pa.float64()),
            "ego_involved": pa.array(rows["pos"], pa.bool_()),
            "event_type": pa.array([None] * n_rows, pa.string()),
            "meta": pa.array(["{}"] * n_rows),
            # no beliefs stage behind synthetic labels: the belief columns are null
            "analysis": pa.nulls(n_rows, pa.string()),
            "belief": pa.nulls(n_rows, pa.string()),
            "belief_text": pa.nulls(n_rows, pa.string()),
            "belief_provider": pa.nulls(n_rows, pa.string()),
        }
    )
    return cache, labels
