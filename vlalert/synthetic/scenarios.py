"""Traffic scenarios of the synthetic demo: kinematics and the ground truth derived from them.

One set of closed-form kinematics drives both the rendered frames and `scene_truth.json`, so
the gap, the closing speed and the time-to-collision that the `scene` gate provider and the rule
belief generator read are exactly what the pixels show. Every scenario is solved *backwards*
from its annotated times: the risky time (hazard onset) and the event time (contact) are drawn
first, on a 0.1 s grid so that every source's frame numbers divide back to the same seconds, and
the initial gaps are then chosen so that contact happens exactly at the event time.

Coordinates: the ego car drives along +z at constant speed; `z` of an agent is the longitudinal
gap from the ego's front bumper to the agent's nearest face (m), `x` its lateral offset from the
ego lane's centre (m, + right). After the event the scene is frozen (the ego stops on impact).

Why one module of ~580 lines: the kinematics and the ground truth derived from them must stay one
set of closed-form equations (the frames and scene_truth.json read the same functions), or the
scene gate and the rule beliefs could drift from what the pixels show.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

LANE_W = 3.5  # m; lanes centred at x = -3.5, 0, +3.5
EGO_W, EGO_L = 1.8, 4.5  # m
CAR_W, CAR_H, CAR_L = 1.8, 1.5, 4.5
PED_W, PED_H, PED_L = 0.5, 1.7, 0.5
TRUCK_W, TRUCK_H, TRUCK_L = 2.5, 3.4, 8.0
VIEW_M = 80.0  # beyond this an agent is too small to be described as visible
TRUTH_HZ = 10.0

SCENARIOS: tuple[str, ...] = (
    "cut-in",
    "pedestrian-crossing",
    "lead-braking",
    "other-collision",
    "negative-following",
    "negative-oncoming",
)
EGO_SCENARIOS = frozenset({"cut-in", "pedestrian-crossing", "lead-braking"})
POSITIVE_SCENARIOS = EGO_SCENARIOS | {"other-collision"}

CAR_COLORS: tuple[tuple[int, int, int], ...] = (
    (225, 225, 228),  # white
    (160, 164, 170),  # silver
    (45, 48, 55),  # black
    (170, 30, 35),  # red
    (35, 70, 150),  # blue
    (40, 95, 60),  # green
    (215, 170, 40),  # yellow
)
SHIRT_COLORS: tuple[tuple[int, int, int], ...] = (
    (200, 40, 40),
    (40, 90, 190),
    (230, 200, 40),
    (240, 240, 240),
)


@dataclass(frozen=True)
class Scenario:
    """One clip's scene: what happens, when, and the constants of its kinematics."""

    name: str
    fps: float
    n_frames: int
    t_risky_s: float | None
    t_event_s: float | None
    ego_speed_mps: float
    side: int  # +1: the hazard comes from the right, -1: from the left
    params: tuple[tuple[str, float], ...]  # scenario-specific constants (hashable)
    look_seed: int  # the renderer derives sky/road colours from it

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    @property
    def is_positive(self) -> bool:
        return self.name in POSITIVE_SCENARIOS

    @property
    def ego_involved(self) -> bool:
        return self.name in EGO_SCENARIOS

    @property
    def road(self) -> str:
        """'urban': two-way road with oncoming lane and kerbs; 'highway': three lanes one way."""
        return "urban" if self.name in ("pedestrian-crossing", "negative-oncoming") else "highway"

    def p(self, key: str) -> float:
        return dict(self.params)[key]

    def frame_times(self) -> np.ndarray:
        return np.arange(self.n_frames) / self.fps


@dataclass(frozen=True)
class Track:
    """One road user over a vector of times (arrays share the time axis)."""

    kind: str  # "car" | "truck" | "pedestrian"
    role: str  # "hazard" (the agent the truth describes) | "partner" | "traffic"
    width_m: float
    height_m: float
    length_m: float
    color: tuple[int, int, int]
    oncoming: bool
    x: np.ndarray
    z: np.ndarray
    vx: np.ndarray
    closing: np.ndarray  # -dz/dt: > 0 when the gap shrinks
    braking: np.ndarray  # brake lights on
    motion: np.ndarray | None = None  # hazard only: per-time motion label
    accent: tuple[int, int, int] = (60, 60, 70)  # pedestrians: shirt colour


def stable_rng(seed: int, kind: str, *stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, kind, stream): crc32, never Python's salted hash()."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(kind.encode("utf-8")), *stream])


def grid(t: float) -> float:
    """Snap to the 0.1 s grid, on which frame/fps gives back the same float for 10, 20 and 30 fps."""
    return round(t * 10.0) / 10.0


def draw_times(
    fps: float, rng: np.random.Generator, max_duration_s: float, positive: bool, long: bool = False
) -> tuple[int, float | None, float | None]:
    """(n_frames, t_risky_s, t_event_s) for one clip at `fps` (a source of fixed-length clips, DAD,
    takes its clip's times from its plugin instead: vlalert.sources.synthetic).

    `long` puts the event late in a maximal clip so that the risky time is >= 8.5 s, leaving room
    for a prefix negative (DESIGN: the part before t_r - observe_s - 0.5 s must hold >= 4 s).
    """
    cap = min(12.0, max_duration_s)
    if cap < 4.0:
        raise ValueError(f"demo.max_duration_s must be at least 4 s to hold a clip, got {max_duration_s}")
    dur = cap if long else rng.uniform(min(8.0, cap), cap)
    dur = math.floor(dur * 10.0 + 1e-9) / 10.0
    n_frames = int(round(dur * fps))
    if not positive:
        return n_frames, None, None
    hi = dur - 1.5
    lo = min(5.0, hi)
    t_e = grid(hi if long else rng.uniform(lo, hi))
    lead = grid(rng.uniform(1.5, 2.0) if long else rng.uniform(1.5, 3.0))
    lead = min(max(lead, 1.5), 3.0, t_e - 0.5)
    return n_frames, grid(t_e - lead), t_e


def make_scenario(
    name: str,
    fps: float,
    n_frames: int,
    t_risky_s: float | None,
    t_event_s: float | None,
    rng: np.random.Generator,
) -> Scenario:
    """Draw the constants of `name`'s kinematics; the gaps are solved later from the times."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if (name in POSITIVE_SCENARIOS) != (t_event_s is not None and t_risky_s is not None):
        raise ValueError(f"scenario {name!r}: positives need both times, negatives neither")
    color = float(rng.integers(len(CAR_COLORS)))
    params: dict[str, float] = {"color": color}
    side = 1 if rng.random() < 0.5 else -1
    if name == "lead-braking":
        speed = rng.uniform(12.0, 16.0)
        params["decel"] = rng.uniform(6.5, 9.0)
    elif name == "cut-in":
        speed = rng.uniform(12.0, 16.0)
        params["v_rel0"] = rng.uniform(0.5, 1.5)
        params["decel"] = rng.uniform(3.0, 5.0)
    elif name == "pedestrian-crossing":
        speed = rng.uniform(9.0, 12.0)
        params["x0"] = rng.uniform(5.6, 7.0)
        params["shirt"] = float(rng.integers(len(SHIRT_COLORS)))
    elif name == "other-collision":
        speed = rng.uniform(11.0, 15.0)
        side = -1  # the truck is in the left lane
        params["gap_b"] = rng.uniform(14.0, 22.0)
        params["truck_dv"] = rng.uniform(6.0, 9.0)  # the truck is this much slower than the traffic
        params["color_b"] = float((int(color) + 1 + rng.integers(len(CAR_COLORS) - 1)) % len(CAR_COLORS))
    elif name == "negative-following":
        speed = rng.uniform(12.0, 16.0)
        params["gap"] = rng.uniform(18.0, 30.0)
        params["weave_period"] = rng.uniform(4.0, 7.0)
        params["pass_z0"] = rng.uniform(30.0, 45.0)
        params["pass_v"] = rng.uniform(2.5, 4.5)
        params["color_b"] = float((int(color) + 3) % len(CAR_COLORS))
    else:  # negative-oncoming
        speed = rng.uniform(10.0, 14.0)
        side = -1  # right-hand traffic: oncoming cars use the left lane
        params["v_oncoming"] = rng.uniform(10.0, 15.0)
        params["spacing"] = rng.uniform(45.0, 75.0)
        params["z0"] = rng.uniform(20.0, 60.0)
    return Scenario(
        name=name,
        fps=fps,
        n_frames=n_frames,
        t_risky_s=t_risky_s,
        t_event_s=t_event_s,
        ego_speed_mps=float(speed),
        side=side,
        params=tuple(sorted((k, float(v)) for k, v in params.items())),
        look_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------- kinematics


def _brake(tau: np.ndarray, v0: float, decel: float) -> tuple[np.ndarray, np.ndarray]:
    """Closing speed and closed distance `tau` s after a car ahead brakes from v0 (follower keeps v0)."""
    tau = np.maximum(tau, 0.0)
    t_stop = v0 / decel
    closing = np.minimum(decel * tau, v0)
    closed = np.where(tau <= t_stop, 0.5 * decel * tau**2, v0**2 / (2 * decel) + v0 * (tau - t_stop))
    return closing, closed


def _decel_from(tau: np.ndarray, c0: float, decel: float, cmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Like `_brake`, but the closing speed starts at c0 (the agent was already slower)."""
    tau = np.maximum(tau, 0.0)
    t_sat = max(cmax - c0, 0.0) / decel
    closing = np.minimum(c0 + decel * tau, cmax)
    closed = np.where(
        tau <= t_sat,
        c0 * tau + 0.5 * decel * tau**2,
        c0 * t_sat + 0.5 * decel * t_sat**2 + cmax * (tau - t_sat),
    )
    return closing, closed


def _labels(t: np.ndarray, edges: list[tuple[float, str]], first: str) -> np.ndarray:
    """Piecewise-constant labels: `first` before the first edge, then each edge's label from its time."""
    out = np.full(t.shape, first, dtype=object)
    for t0, label in edges:
        out[t >= t0 - 1e-9] = label
    return out


def _car(role: str, color: tuple[int, int, int], **arrays: Any) -> Track:
    return Track(kind="car", role=role, width_m=CAR_W, height_m=CAR_H, length_m=CAR_L, color=color, **arrays)


def _lead_braking(s: Scenario, t: np.ndarray) -> list[Track]:
    v, a = s.ego_speed_mps, s.p("decel")
    tb, te = float(s.t_risky_s), float(s.t_event_s)  # type: ignore[arg-type]
    _, g0 = _brake(np.array(te - tb), v, a)
    tf = np.minimum(t, te)
    closing, closed = _brake(tf - tb, v, a)
    after = t >= te - 1e-9
    closing = np.where(after, 0.0, closing)
    stop_t = tb + v / a
    motion = _labels(t, [(tb, "braking"), (min(stop_t, te), "stopped")], "none")
    zeros = np.zeros_like(t)
    return [
        _car(
            "hazard",
            CAR_COLORS[int(s.p("color"))],
            oncoming=False,
            x=zeros,
            z=np.maximum(float(g0) - closed, 0.0),
            vx=zeros,
            closing=closing,
            braking=t >= tb,
            motion=motion,
        )
    ]


def _cut_in(s: Scenario, t: np.ndarray) -> list[Track]:
    v, c0, a = s.ego_speed_mps, s.p("v_rel0"), s.p("decel")
    tr, te = float(s.t_risky_s), float(s.t_event_s)  # type: ignore[arg-type]
    tc = max(tr - 0.3, 0.1)  # the lane change starts just before a human would flag it
    d_lat = min(1.6, 0.7 * (te - tc))  # in the ego lane before contact
    _, closed_total = _decel_from(np.array(te - tc), c0, a, v)
    g0 = c0 * tc + float(closed_total)
    tf = np.minimum(t, te)
    closing, closed = _decel_from(tf - tc, c0, a, v)
    gap = g0 - c0 * np.minimum(tf, tc) - closed
    closing = np.where(tf < tc, c0, closing)
    after = t >= te - 1e-9
    closing = np.where(after, 0.0, closing)
    u = np.clip((tf - tc) / d_lat, 0.0, 1.0)
    x = s.side * LANE_W * (1.0 - (3 * u**2 - 2 * u**3))
    vx = np.where((u > 0) & (u < 1) & ~after, -s.side * LANE_W * 6 * u * (1 - u) / d_lat, 0.0)
    motion = _labels(t, [(tc, "cutting-in"), (tc + d_lat, "braking"), (te, "stopped")], "none")
    return [
        _car(
            "hazard",
            CAR_COLORS[int(s.p("color"))],
            oncoming=False,
            x=x,
            z=np.maximum(gap, 0.0),
            vx=vx,
            closing=closing,
            braking=t >= tc,
            motion=motion,
        )
    ]


def _pedestrian(s: Scenario, t: np.ndarray) -> list[Track]:
    v, x0 = s.ego_speed_mps, s.p("x0")
    tr, te = float(s.t_risky_s), float(s.t_event_s)  # type: ignore[arg-type]
    tw = max(tr - 0.3, 0.1)  # steps off the kerb just before the risky time
    vp = x0 / (te - tw)
    tf = np.minimum(t, te)
    after = t >= te - 1e-9
    x = s.side * vp * (te - np.maximum(tf, tw))
    vx = np.where((t >= tw) & ~after, -s.side * vp, 0.0)
    z = v * (te - tf)
    closing = np.where(after, 0.0, v)
    motion = _labels(t, [(tw, "crossing"), (te, "stopped")], "none")
    return [
        Track(
            kind="pedestrian",
            role="hazard",
            width_m=PED_W,
            height_m=PED_H,
            length_m=PED_L,
            color=(50, 50, 70),
            oncoming=False,
            x=x,
            z=z,
            vx=vx,
            closing=closing,
            braking=np.zeros(t.shape, bool),
            motion=motion,
            accent=SHIRT_COLORS[int(s.p("shirt"))],
        )
    ]


def _other_collision(s: Scenario, t: np.ndarray) -> list[Track]:
    """The lead car B changes into the left lane and rear-ends slow truck A there; the ego is not involved.

    B keeps the ego's speed at a constant gap and moves *away* from the ego's path, and the truck
    stays in the other lane, so the ego is never on a collision course with either (ttc null).
    The truck is tall, so it stays visible above B once B is in front of it.
    """
    dv, gap_b = s.p("truck_dv"), s.p("gap_b")
    tr, te = float(s.t_risky_s), float(s.t_event_s)  # type: ignore[arg-type]
    tc = max(tr - 0.3, 0.1)
    d_lat = min(1.5, 0.6 * (te - tc))
    tf = np.minimum(t, te)
    after = t >= te - 1e-9
    u = np.clip((tf - tc) / d_lat, 0.0, 1.0)
    zeros = np.zeros_like(t)
    car_b = _car(
        "partner",
        CAR_COLORS[int(s.p("color_b"))],
        oncoming=False,
        x=-LANE_W * (3 * u**2 - 2 * u**3),
        z=np.full(t.shape, gap_b),
        vx=np.where((u > 0) & (u < 1) & ~after, -LANE_W * 6 * u * (1 - u) / d_lat, 0.0),
        closing=zeros,
        braking=(t >= te - 0.3),
    )
    truck = Track(
        kind="truck",
        role="hazard",
        width_m=TRUCK_W,
        height_m=TRUCK_H,
        length_m=TRUCK_L,
        color=CAR_COLORS[int(s.p("color"))],
        oncoming=False,
        x=np.full(t.shape, -LANE_W),
        z=gap_b + CAR_L + dv * (te - tf),
        vx=zeros,
        closing=np.where(after, 0.0, dv),
        braking=np.zeros(t.shape, bool),
        motion=_labels(t, [(te, "stopped")], "approaching"),
    )
    return [truck, car_b]


def _following(s: Scenario, t: np.ndarray) -> list[Track]:
    """A lead car at a constant gap (a gentle weave inside its lane) and a slower car being passed."""
    period = s.p("weave_period")
    w = 2 * math.pi / period
    x = 0.2 * np.sin(w * t)
    lead = _car(
        "hazard",
        CAR_COLORS[int(s.p("color"))],
        oncoming=False,
        x=x,
        z=np.full(t.shape, s.p("gap")),
        vx=0.2 * w * np.cos(w * t),
        closing=np.zeros_like(t),
        braking=np.zeros(t.shape, bool),
        motion=np.full(t.shape, "none", dtype=object),
    )
    passed = _car(
        "traffic",
        CAR_COLORS[int(s.p("color_b"))],
        oncoming=False,
        x=np.full(t.shape, s.side * LANE_W),
        z=s.p("pass_z0") - s.p("pass_v") * t,
        vx=np.zeros_like(t),
        closing=np.full(t.shape, s.p("pass_v")),
        braking=np.zeros(t.shape, bool),
    )
    return [lead, passed]


def _oncoming(s: Scenario, t: np.ndarray) -> list[Track]:
    """A stream of oncoming cars in the left lane; each passes the ego without a collision course."""
    c = s.ego_speed_mps + s.p("v_oncoming")
    spacing = s.p("spacing")
    n_cars = int(math.ceil((c * s.duration_s + VIEW_M) / spacing)) + 1
    tracks = []
    for k in range(n_cars):
        tracks.append(
            _car(
                "hazard",
                CAR_COLORS[(int(s.p("color")) + 2 * k) % len(CAR_COLORS)],
                oncoming=True,
                x=np.full(t.shape, -LANE_W),
                z=s.p("z0") + k * spacing - c * t,
                vx=np.zeros_like(t),
                closing=np.full(t.shape, c),
                braking=np.zeros(t.shape, bool),
                motion=np.full(t.shape, "oncoming", dtype=object),
            )
        )
    return tracks


_TRACKS = {
    "lead-braking": _lead_braking,
    "cut-in": _cut_in,
    "pedestrian-crossing": _pedestrian,
    "other-collision": _other_collision,
    "negative-following": _following,
    "negative-oncoming": _oncoming,
}


def agent_tracks(s: Scenario, t: np.ndarray) -> list[Track]:
    """Every road user of `s` at the times `t` (seconds from the first frame)."""
    return _TRACKS[s.name](s, np.asarray(t, dtype=float))


# ---------------------------------------------------------------- ground truth


def course_ttc(
    gap: np.ndarray,
    closing: np.ndarray,
    x: np.ndarray,
    vx: np.ndarray,
    half_band: float,
    overlap_len: float,
) -> np.ndarray:
    """Time until the ego and an agent touch if both keep their current motion; NaN if they never do.

    Longitudinally the boxes overlap during [gap / c, (gap + overlap_len) / c] (c: closing speed).
    Laterally the agent must be inside the ego's path (|x| <= half_band) or moving toward it, and
    an agent that enters the path is taken to stay there (a lane change ends in the lane, a
    pedestrian who steps in front of the car does not vanish): contact is at the later of the two
    entry times, if that is before the longitudinal overlap ends. Traffic in other lanes that
    does not drift toward the ego (oncoming cars, a car being passed) is never on a collision course.
    """
    gap, closing, x, vx = (np.asarray(a, dtype=float) for a in (gap, closing, x, vx))
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = closing > 1e-9
        touching = gap <= 1e-9
        l0 = np.where(pos, gap / closing, np.where(touching, 0.0, np.inf))
        l1 = np.where(pos, (gap + overlap_len) / closing, np.where(touching, np.inf, -np.inf))
        inside = np.abs(x) <= half_band
        toward = (x * vx) < 0
        lat0 = np.where(inside, 0.0, np.where(toward, (np.abs(x) - half_band) / np.abs(vx), np.inf))
    start = np.maximum(l0, lat0)
    ok = np.isfinite(start) & (start <= l1)
    return np.where(ok, start, np.nan)


def where_label(x: float, z: float) -> str:
    if z < 0.5 and abs(x) > LANE_W / 2:
        return "left" if x < 0 else "right"
    if abs(x) <= LANE_W / 2:
        return "ahead"
    return "ahead-left" if x < 0 else "ahead-right"


def _hazard_at(tracks: list[Track], i: int) -> Track | None:
    """The hazard-role track to describe at sample i (oncoming cars: the nearest one ahead in view)."""
    cands = [tr for tr in tracks if tr.role == "hazard" and (not tr.oncoming or 0.0 <= tr.z[i] <= VIEW_M)]
    return min(cands, key=lambda tr: float(tr.z[i]), default=None)


def timeline(s: Scenario) -> dict[str, list[Any]]:
    """The 10 Hz per-instant truth: ttc (s or None), gap to the hazard (m or None), where, motion."""
    n = int(round(s.duration_s * TRUTH_HZ))
    t = np.arange(n) / TRUTH_HZ
    tracks = agent_tracks(s, t)
    ttc = np.full(n, np.nan)
    for tr in tracks:
        band = EGO_W / 2 + tr.width_m / 2
        ttc = np.fmin(ttc, course_ttc(tr.z, tr.closing, tr.x, tr.vx, band, EGO_L + tr.length_m))
    gaps: list[float | None] = []
    wheres: list[str] = []
    motions: list[str] = []
    for i in range(n):
        hz = _hazard_at(tracks, i)
        if hz is None:
            gaps.append(None)
            wheres.append("none")
            motions.append("none")
            continue
        z, x = float(hz.z[i]), float(hz.x[i])
        gaps.append(round(max(z, 0.0), 2))
        visible = z <= VIEW_M
        wheres.append(where_label(x, z) if visible else "none")
        motions.append(str(hz.motion[i]) if (visible and hz.motion is not None) else "none")
    return {
        "t_s": [round(float(v), 1) for v in t],
        "ttc_s": [None if math.isnan(v) else round(float(v), 3) for v in ttc],
        "gap_m": gaps,
        "where": wheres,
        "motion": motions,
    }


def truth_entry(s: Scenario) -> dict[str, Any]:
    """One clip's entry of scene_truth.json (format vlalert-scene-truth/1).

    The top-level hazard/where/motion describe the hazard at the risky time; negatives have no
    risky time and say "none". The per-instant `where`/`motion` lists always describe the salient
    road user in view (a negative's steady lead car is "ahead"/"none", an oncoming car
    "ahead-left"/"oncoming"), so a belief can say what is seen without calling it a hazard;
    `ttc_s` is what tells a hazard from traffic.
    """
    tl = timeline(s)
    if s.is_positive:
        t_r = float(s.t_risky_s)  # type: ignore[arg-type]
        tracks = agent_tracks(s, np.array([t_r]))
        hz = next(tr for tr in tracks if tr.role == "hazard")
        hazard = "pedestrian" if hz.kind == "pedestrian" else "vehicle"
        where = where_label(float(hz.x[0]), float(hz.z[0]))
        motion = str(hz.motion[0]) if hz.motion is not None else "other"
    else:
        hazard, where, motion = "none", "none", "none"
    return {
        "scenario": s.name,
        "hazard": hazard,
        "where": where,
        "motion": motion,
        "ego_involved": s.ego_involved,
        "t_risky_s": s.t_risky_s,
        "t_event_s": s.t_event_s,
        "duration_s": s.duration_s,
        "timeline": tl,
    }
