"""The relabel stage: one action, danger target and rule name per tick (DESIGN.md, "Ticks, windows, labels").

Each rule of the design lives in one small pure function below; `label_clip` composes them and
records in the `rule` column which branch decided each tick, so that any label in the benchmark
can be traced back to the sentence of the design that produced it.

Times are compared with a micro-second tolerance (`vlalert.ticks.TIME_EPS`): annotation times
such as 90 / 30 or 0.1 * 30 are not exact in binary, and a tick that lands exactly on a window
boundary must fall on the side the design says ("t_r <= t" is ALERT).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from vlalert.actions import Action
from vlalert.config import GateConfig, LabelsConfig, TicksConfig, WindowConfig, WorkflowConfig
from vlalert.schemas import table_from_rows
from vlalert.splits import PREFIX_SUFFIX
from vlalert.ticks import TIME_EPS, tick_times, window_frames

RULE_NEGATIVE = "negative"  # a negative clip: SILENT everywhere
RULE_BEFORE_WINDOW = "before-window"  # positive clip, t < t_r - observe_s: SILENT
RULE_OBSERVE = "observe-window"  # t_r - observe_s <= t < t_r: OBSERVE
RULE_ALERT = "alert-window"  # t_r <= t < t_r + alert_s: ALERT
RULE_POST_EVENT = "post-event"  # t >= min(t_r + alert_s, t_event): excluded (not trained on, not scored)
RULE_ALERT_NON_EGO = "alert->observe:non-ego"  # ego_involved is False: never ALERT the driver
RULE_ALERT_GATE_LOW = "alert->observe:gate-below-alert-min"
RULE_ALERT_GATE_MISSING = "alert->observe:gate-missing"  # gated, no gate score in the lookback interval
RULE_OBSERVE_GATE_LOW = "observe->silent:gate-below-observe-min"
RULE_OBSERVE_GATE_MISSING = "observe->silent:gate-missing"  # gated, no gate score at this tick
RULE_PREFIX = "prefix-negative"  # `{id}#prefix` clip cut from a positive clip's start

RULES: frozenset[str] = frozenset(
    {
        RULE_NEGATIVE,
        RULE_BEFORE_WINDOW,
        RULE_OBSERVE,
        RULE_ALERT,
        RULE_POST_EVENT,
        RULE_ALERT_NON_EGO,
        RULE_ALERT_GATE_LOW,
        RULE_ALERT_GATE_MISSING,
        RULE_OBSERVE_GATE_LOW,
        RULE_OBSERVE_GATE_MISSING,
        RULE_PREFIX,
    }
)


# ---------------------------------------------------------------- one function per rule


def effective_t_event(t_risky_s: float | None, t_event_s: float | None, labels: LabelsConfig) -> float | None:
    """The event time a clip is scored against: its own, else t_r + alert_s (DoTA without consensus)."""
    if t_event_s is not None:
        return t_event_s
    if t_risky_s is None:
        return None
    return t_risky_s + labels.alert_s


def alert_end(t_r: float, t_event: float | None, labels: LabelsConfig) -> float:
    """Where a positive clip's ALERT window ends: min(t_r + alert_s, t_event).

    An alert after the collision helps nobody, and real annotations often put the risky time less
    than alert_s before the collision (most DoTA consensus rows, many Nexar clips).
    """
    end = t_r + labels.alert_s
    return end if t_event is None else min(end, t_event)


def window_action(
    t: float, t_r: float, labels: LabelsConfig, t_event: float | None = None
) -> tuple[str, str, bool]:
    """The risky-time + 2 s rule for one tick of a positive clip: (action, rule, excluded).

    Ticks at or after `alert_end` (the collision, or t_r + alert_s if that comes first) are
    post-event: they keep the action SILENT (the column is not nullable) but are excluded, so no
    loss and no metric ever sees them.
    """
    if t >= alert_end(t_r, t_event, labels) - TIME_EPS:
        return Action.SILENT.name, RULE_POST_EVENT, True
    if t >= t_r - TIME_EPS:
        return Action.ALERT.name, RULE_ALERT, False
    if t >= t_r - labels.observe_s - TIME_EPS:
        return Action.OBSERVE.name, RULE_OBSERVE, False
    return Action.SILENT.name, RULE_BEFORE_WINDOW, False


def danger_target(
    t: float,
    t_r: float | None,
    ego_involved: bool | None,
    labels: LabelsConfig,
    t_event: float | None = None,
) -> float:
    """Danger regression target: 0 before t_r - observe_s, linear to 0.5 at t_r, to 1.0 at the alert end.

    The alert end is min(t_r + alert_s, t_event) (`alert_end`): the target reaches 1.0 at the
    collision when that comes first, and stays 1.0 after (those ticks are excluded anyway).
    `t_r` None means a negative clip (0 everywhere). Only a clip known not to involve the ego
    vehicle (ego_involved False) is capped at labels.non_ego_danger_cap; unknown involvement
    is not capped, the gate decides its actions instead.
    """
    if t_r is None:
        return 0.0
    start = t_r - labels.observe_s
    end = alert_end(t_r, t_event, labels)
    if t < start - TIME_EPS:
        d = 0.0
    elif t < t_r - TIME_EPS:
        d = 0.5 * (t - start) / labels.observe_s  # observe_s > 0 here, else this branch is empty
    elif t < end - TIME_EPS:
        d = 0.5 + 0.5 * (t - t_r) / (end - t_r)  # end > t_r here, else this branch is empty
    else:
        d = 1.0
    d = min(max(d, 0.0), 1.0)
    if ego_involved is False:
        d = min(d, labels.non_ego_danger_cap)
    return d


def _gate_at(gate: dict[float, float | None], t: float) -> float | None:
    for key, p in gate.items():
        if abs(key - t) <= TIME_EPS:
            return p
    return None


def gate_max(gate: dict[float, float | None], start: float, end: float) -> float | None:
    """Max non-null gate score with start <= t < end; None when the interval holds no score."""
    ps = [p for t, p in gate.items() if p is not None and start - TIME_EPS <= t < end - TIME_EPS]
    return max(ps) if ps else None


def gated_alert_rule(
    ego_involved: bool | None,
    gated: bool,
    gate: dict[float, float | None] | None,
    t_r: float,
    labels: LabelsConfig,
    gate_cfg: GateConfig,
) -> str | None:
    """Why a clip's ALERT ticks become OBSERVE, or None when they stay ALERT.

    Non-ego clips never ALERT the driver, gated or not (one rule name for both: the reason is the
    same). A gated clip ALERTs only if its max gate score over [t_r - lookback_s, t_r + alert_s)
    reaches gate.alert_min; when that interval holds no score at all (provider without evidence,
    e.g. a clip without consensus row), there is no evidence of an ego collision and the ALERT is
    downgraded as well, under its own rule name so the two cases can be counted apart.
    """
    if ego_involved is False:
        return RULE_ALERT_NON_EGO
    if not gated:
        return None
    best = gate_max(gate or {}, t_r - gate_cfg.lookback_s, t_r + labels.alert_s)
    if best is None:
        return RULE_ALERT_GATE_MISSING
    if best < gate_cfg.alert_min:
        return RULE_ALERT_GATE_LOW
    return None


def gated_observe_rule(p: float | None, gate_cfg: GateConfig) -> str | None:
    """Why an OBSERVE tick before t_r of a gated clip becomes SILENT, or None when it stays.

    A null score (no evidence at this tick) counts as below gate.observe_min, under its own rule name.
    """
    if p is None:
        return RULE_OBSERVE_GATE_MISSING
    if p < gate_cfg.observe_min:
        return RULE_OBSERVE_GATE_LOW
    return None


def prefix_cut(t_r: float, labels: LabelsConfig) -> float:
    """End of a positive clip's prefix negative: t_r - observe_s - prefix_gap_s."""
    return t_r - labels.observe_s - labels.prefix_gap_s


# ---------------------------------------------------------------- clips


def _row(clip: dict[str, Any], video_id: str, tick: int, t: float, window: WindowConfig) -> dict[str, Any]:
    return {
        "video_id": video_id,
        "source": clip["source"],
        "tick": tick,
        "t_s": float(t),
        "frame_idx": window_frames(float(t), float(clip["fps"]), int(clip["n_frames"]), window),
        "parent_id": None,
    }


def _risky_time(clip: dict[str, Any]) -> float | None:
    if not clip["is_positive"]:
        return None
    if clip.get("t_risky_s") is None:
        raise ValueError(
            f"clip {clip['video_id']} ({clip.get('source')}): positive clip without t_risky_s; "
            "ingest must reject such clips"
        )
    return float(clip["t_risky_s"])


def label_clip(
    clip: dict[str, Any],
    gate: dict[float, float | None] | None,
    gated: bool,
    labels: LabelsConfig,
    gate_cfg: GateConfig,
    ticks: TicksConfig,
    window: WindowConfig,
) -> list[dict[str, Any]]:
    """LABELS rows of one clip (a videos.parquet row as a dict), one per tick.

    `gate` maps tick time to p_collision (None: no score); it is only read when `gated` is true,
    and None there means "no gate scores at all" (every gated check then fails as gate-missing).
    ALERT ends at min(t_r + alert_s, t_event) (`alert_end`); a clip without event time uses
    t_r + alert_s (`effective_t_event`).
    """
    t_r = _risky_time(clip)
    t_e = effective_t_event(t_r, clip.get("t_event_s"), labels) if t_r is not None else None
    ego = clip.get("ego_involved")
    times = tick_times(int(clip["n_frames"]), float(clip["fps"]), ticks, window)
    alert_rule = gated_alert_rule(ego, gated, gate, t_r, labels, gate_cfg) if t_r is not None else None
    rows = []
    for i, t in enumerate(times):
        t = float(t)
        row = _row(clip, clip["video_id"], i, t, window)
        if t_r is None:
            action, rule, excluded = Action.SILENT.name, RULE_NEGATIVE, False
        else:
            action, rule, excluded = window_action(t, t_r, labels, t_e)
            if action == Action.ALERT.name and alert_rule is not None:
                action, rule = Action.OBSERVE.name, alert_rule
            elif action == Action.OBSERVE.name and gated:
                why = gated_observe_rule(_gate_at(gate or {}, t), gate_cfg)
                if why is not None:
                    action, rule = Action.SILENT.name, why
        danger = danger_target(t, t_r, ego, labels, t_e)
        row.update(action=action, rule=rule, excluded=excluded, danger=danger)
        rows.append(row)
    return rows


def prefix_negative(
    clip: dict[str, Any], labels: LabelsConfig, ticks: TicksConfig, window: WindowConfig
) -> list[dict[str, Any]]:
    """Rows of the negative clip `{video_id}#prefix` cut from a positive clip's start, or [].

    The BADAS practice for sources without negative clips: the driving before
    t_r - observe_s - prefix_gap_s is normal driving. Emitted only when that prefix holds at least
    window.span_s + prefix_min_extra_s seconds; its ticks are the parent's ticks (same times and
    tick indices) whose last frame time is at or before the cut, all SILENT, danger 0.
    """
    t_r = _risky_time(clip)
    if t_r is None:
        return []
    cut = prefix_cut(t_r, labels)
    if cut < window.span_s + labels.prefix_min_extra_s - TIME_EPS:
        return []
    vid = clip["video_id"] + PREFIX_SUFFIX
    rows = []
    times = tick_times(int(clip["n_frames"]), float(clip["fps"]), ticks, window)
    for i, t in enumerate(times):
        if t > cut + TIME_EPS:
            break
        row = _row(clip, vid, i, float(t), window)
        row.update(
            action=Action.SILENT.name,
            rule=RULE_PREFIX,
            excluded=False,
            danger=0.0,
            parent_id=clip["video_id"],
        )
        rows.append(row)
    return rows


def gate_by_clip(gate: pa.Table) -> dict[str, dict[float, float | None]]:
    """GATE table -> {video_id: {t_s: p_collision}}."""
    out: dict[str, dict[float, float | None]] = {}
    cols = (gate.column(c).to_pylist() for c in ("video_id", "t_s", "p_collision"))
    for vid, t, p in zip(*cols, strict=True):
        out.setdefault(vid, {})[t] = p
    return out


def is_gated(clip: dict[str, Any], source_name: str, labels: LabelsConfig) -> bool:
    """BADAS gating applies to the configured sources and to any clip without ego ground truth."""
    return source_name in labels.gated_sources or clip.get("ego_involved") is None


def label_source(videos: pa.Table, gate: pa.Table | None, source_name: str, cfg: WorkflowConfig) -> pa.Table:
    """LABELS table of one source: every clip's ticks, plus prefix negatives when the source asks for them.

    Rows are sorted by video_id, tick; a prefix clip sorts right after its parent. A source with
    gated clips but no gate table is an error (the gate stage was skipped), not a silent
    "no evidence" for every clip.
    """
    src = cfg.sources[source_name]
    clips = sorted(videos.to_pylist(), key=lambda c: c["video_id"])
    gated = {c["video_id"]: is_gated(c, source_name, cfg.labels) for c in clips}
    if gate is None and any(gated.values()):
        some = [v for v, g in gated.items() if g][:5]
        raise ValueError(f"source {source_name}: clips {some} need BADAS gating but no gate table was given")
    scores = gate_by_clip(gate) if gate is not None else {}
    rows: list[dict[str, Any]] = []
    for clip in clips:
        clip = {**clip, "source": source_name}
        vid = clip["video_id"]
        rows += label_clip(clip, scores.get(vid, {}), gated[vid], cfg.labels, cfg.gate, cfg.ticks, cfg.window)
        if src.prefix_negatives:
            rows += prefix_negative(clip, cfg.labels, cfg.ticks, cfg.window)
    return table_from_rows("labels", rows)
