"""Procedural dashcam frames: a scene state at time t becomes an HxWx3 uint8 image.

A pinhole camera 1.3 m above a flat road looks down the ego lane. Everything that does not
depend on the frame (sky, hills or buildings, road surface, kerbs, lane geometry, haze, the ego
hood) is computed once per (camera, look) and cached; a frame then costs a few boolean-mask
copies (lane dashes and verge stripes that scroll with the ego's travel, which is what makes
speed visible) plus a handful of rectangle fills per road user, drawn far to near. This keeps
the whole demo corpus (thousands of frames) to a few seconds on one core.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vlalert.synthetic.scenarios import LANE_W, Scenario, Track, agent_tracks

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Camera:
    """Pinhole dashcam; `back_m` is how far the camera sits behind the ego's front bumper."""

    width: int
    height: int
    horizon_frac: float = 0.42
    focal_frac: float = 0.85
    height_m: float = 1.3
    back_m: float = 2.0

    @classmethod
    def for_size(cls, width: int, height: int) -> Camera:
        """H.264 in yuv420p needs even sizes, so odd requests lose their last column/row."""
        return cls(width=width - width % 2, height=height - height % 2)

    @property
    def f(self) -> float:
        return self.focal_frac * self.width

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.horizon_frac * self.height


@dataclass(frozen=True)
class Look:
    """Colours and atmosphere of one clip (derived from the scenario's look_seed)."""

    road: str  # "highway" | "urban"
    sky_top: Color
    sky_horizon: Color
    asphalt: Color
    verge: Color  # grass (highway) or pavement (urban)
    fog_m: float  # distance at which haze covers 63 % of a colour
    seed: int

    @property
    def foggy(self) -> bool:
        return self.fog_m < 110.0


@dataclass(frozen=True)
class AgentView:
    """One road user as the renderer needs it at one instant."""

    kind: str  # "car" | "truck" | "pedestrian" | "post"
    x_m: float
    z_m: float  # gap from the ego's front bumper to the agent's near face
    width_m: float
    height_m: float
    color: Color
    accent: Color = (60, 60, 70)
    braking: bool = False
    oncoming: bool = False
    phase: float = 0.0  # walking cycle (radians)


def look_for(s: Scenario) -> Look:
    rng = np.random.default_rng(s.look_seed)
    j = rng.integers(-12, 13, size=6)
    fog = float(rng.uniform(85.0, 260.0))
    grey = int(rng.integers(82, 112))
    return Look(
        road=s.road,
        sky_top=_c(70 + j[0], 118 + j[1], 190 + j[2]),
        sky_horizon=_c(178 + j[3], 198 + j[3], 220 + j[3]),
        asphalt=(grey, grey, grey + 4),
        verge=_c(72 + j[4], 112 + j[5], 56)
        if s.road == "highway"
        else _c(158 + j[4], 156 + j[4], 150 + j[4]),
        fog_m=fog,
        seed=s.look_seed,
    )


def _c(r: int, g: int, b: int) -> Color:
    return (int(np.clip(r, 0, 255)), int(np.clip(g, 0, 255)), int(np.clip(b, 0, 255)))


# ---------------------------------------------------------------- static background


@dataclass(frozen=True)
class _Static:
    base: np.ndarray  # H x W x 3 uint8, everything that does not move
    zg_row: np.ndarray  # H: ground distance from the bumper per row (nan above the horizon)
    dash_mask: np.ndarray  # H x W: where dashed lane lines may appear
    dash_img: np.ndarray  # H x W x 3: hazed paint colour
    stripe_mask: np.ndarray  # H x W: verge (grass / pavement) whose stripes scroll
    stripe_img: np.ndarray
    patch_mask: np.ndarray  # H x W: asphalt that gets scrolling repair patches
    patch_img: np.ndarray
    hood_mask: np.ndarray
    hood_img: np.ndarray


def _haze(color: np.ndarray, dist: np.ndarray, look: Look) -> np.ndarray:
    k = (1.0 - np.exp(-np.maximum(dist, 0.0) / look.fog_m))[..., None]
    return color * (1.0 - k) + np.asarray(look.sky_horizon, float) * k


@lru_cache(maxsize=32)
def _static(cam: Camera, look: Look) -> _Static:
    h, w = cam.height, cam.width
    rng = np.random.default_rng(look.seed + 1)
    v = np.arange(h) + 0.5
    u = np.arange(w) + 0.5
    dv = v - cam.cy
    ground = dv > 0.25
    zc = np.where(ground, cam.f * cam.height_m / np.where(ground, dv, 1.0), np.inf)  # camera distance
    zg = np.where(ground, zc - cam.back_m, np.nan)
    xg = (u[None, :] - cam.cx) * np.where(ground, zc, 0.0)[:, None] / cam.f  # lateral metres on the road
    zc2 = np.broadcast_to(zc[:, None], (h, w))
    img = np.zeros((h, w, 3), float)

    # sky: vertical gradient, then hills (highway) or a city skyline (urban)
    s = np.clip(v / max(cam.cy, 1.0), 0.0, 1.0)[:, None, None]
    sky = np.asarray(look.sky_top, float) * (1 - s) + np.asarray(look.sky_horizon, float) * s
    img[:] = np.broadcast_to(sky, (h, 1, 3))
    above = ~ground[:, None] & np.ones((1, w), bool)
    if look.road == "highway":
        ph = rng.uniform(0, 2 * math.pi, size=2)
        prof = cam.cy * (0.10 + 0.06 * np.sin(u / w * 5.0 + ph[0]) + 0.04 * np.sin(u / w * 13.0 + ph[1]))
        far = np.asarray((96, 130, 108), float) * 0.55 + np.asarray(look.sky_horizon, float) * 0.45
        sil = above & (v[:, None] >= cam.cy - prof[None, :])
        img[sil] = far
    else:
        heights = np.zeros(w)
        colors = np.zeros((w, 3))
        col = 0
        while col < w:
            bw = int(rng.integers(max(2, w // 24), max(3, w // 8)))
            heights[col : col + bw] = cam.cy * rng.uniform(0.12, 0.55)
            colors[col : col + bw] = rng.integers(110, 175) + rng.integers(-8, 9, size=3)
            col += bw
        haze_sky = np.asarray(look.sky_horizon, float)
        colors = colors * 0.6 + haze_sky * 0.4
        sil = above & (v[:, None] >= cam.cy - heights[None, :])
        img[sil] = np.broadcast_to(colors[None, :, :], (h, w, 3))[sil]

    # ground: asphalt, markings, verge
    half_px = 0.6 * zc2 / cam.f  # half a pixel, in metres, at each row
    ax = np.abs(xg)
    if look.road == "highway":
        road = ground[:, None] & (ax <= 5.25)
        shoulder = ground[:, None] & (ax > 5.25) & (ax <= 6.4)
        edge = road & (np.abs(ax - 5.05) <= np.maximum(0.08, half_px))
        dash = road & (np.abs(ax - LANE_W / 2) <= np.maximum(0.07, half_px))
        centre = np.zeros_like(road)
    else:
        road = ground[:, None] & (xg >= -5.25) & (xg <= 3.5)
        shoulder = ground[:, None] & (((xg > 3.5) & (xg <= 3.75)) | ((xg < -5.25) & (xg >= -5.5)))  # kerbs
        edge = road & (np.abs(xg - 1.9) <= np.maximum(0.07, half_px))
        dash = np.zeros_like(road)
        centre = road & (np.abs(xg + LANE_W / 2) <= np.maximum(0.09, half_px))
    verge = ground[:, None] & ~road & ~shoulder
    asphalt = np.asarray(look.asphalt, float)
    far_dark = np.clip(zc2 / 60.0, 0, 1)[..., None] * 6.0  # asphalt is slightly lighter far away
    img[road] = (asphalt + far_dark)[road]
    img[shoulder] = (150.0, 146.0, 138.0) if look.road == "highway" else (190.0, 188.0, 182.0)
    img[verge] = look.verge
    img[edge] = (225.0, 225.0, 220.0)
    img[centre] = (215.0, 180.0, 40.0)
    ground_hw = ground[:, None] & np.ones((1, w), bool)
    img[ground_hw] = _haze(img, zc2, look)[ground_hw]

    white = np.broadcast_to(np.asarray((228.0, 228.0, 224.0)), (h, w, 3))
    dash_img = _haze(white, zc2, look)
    stripe_img = _haze(np.asarray(look.verge, float) * 0.88, zc2, look)
    patch_img = _haze(asphalt * 0.86, zc2, look)

    # ego hood: a dark curved band at the bottom of the frame
    hood_top = h * (1 - 0.075 + 0.035 * ((u - cam.cx) / cam.cx) ** 2)
    hood = v[:, None] >= hood_top[None, :]
    hood_img = np.broadcast_to(np.asarray((38.0, 40.0, 48.0)), (h, w, 3)).copy()
    rim = hood & (v[:, None] < hood_top[None, :] + 1.0)
    hood_img[rim] = (95.0, 98.0, 108.0)
    return _Static(
        base=np.clip(img, 0, 255).astype(np.uint8),
        zg_row=zg,
        dash_mask=dash,
        dash_img=np.clip(dash_img, 0, 255).astype(np.uint8),
        stripe_mask=verge,
        stripe_img=np.clip(stripe_img, 0, 255).astype(np.uint8),
        patch_mask=road & ~edge & ~dash & ~centre,
        patch_img=np.clip(patch_img, 0, 255).astype(np.uint8),
        hood_mask=hood,
        hood_img=np.clip(hood_img, 0, 255).astype(np.uint8),
    )


# ---------------------------------------------------------------- road users


def _fill(
    img: np.ndarray, u0: float, u1: float, v0: float, v1: float, color: Color, min1: bool = False
) -> None:
    h, w = img.shape[:2]
    a, b, c, d = int(round(u0)), int(round(u1)), int(round(v0)), int(round(v1))
    if min1:
        b, d = max(b, a + 1), max(d, c + 1)
    a, b, c, d = max(a, 0), min(b, w), max(c, 0), min(d, h)
    if a < b and c < d:
        img[c:d, a:b] = color


def _mix(color: Sequence[float], zr: float, look: Look, gain: float = 1.0) -> Color:
    k = 1.0 - math.exp(-max(zr, 0.0) / look.fog_m)
    out = [min(255.0, c * gain) * (1 - k) + hzn * k for c, hzn in zip(color, look.sky_horizon, strict=True)]
    return (int(out[0]), int(out[1]), int(out[2]))


def _project(cam: Camera, a: AgentView) -> tuple[float, float, float, float, float] | None:
    zr = a.z_m + cam.back_m
    if zr < 0.8:
        return None
    s = cam.f / zr
    u0 = cam.cx + (a.x_m - a.width_m / 2) * s
    u1 = cam.cx + (a.x_m + a.width_m / 2) * s
    v1 = cam.cy + cam.height_m * s
    v0 = cam.cy + (cam.height_m - a.height_m) * s
    if u1 < 0 or u0 > cam.width or v0 > cam.height:
        return None
    return u0, u1, v0, v1, zr


def _draw_car(img: np.ndarray, cam: Camera, look: Look, a: AgentView) -> None:
    p = _project(cam, a)
    if p is None:
        return
    u0, u1, v0, v1, zr = p
    w, h = u1 - u0, v1 - v0
    uc = (u0 + u1) / 2
    body = _mix(a.color, zr, look)
    _fill(img, u0 - 0.05 * w, u1 + 0.05 * w, v1 - 0.04 * h, v1 + 0.06 * h, _mix((30, 30, 32), zr, look))
    _fill(img, u0, u1, v0 + 0.42 * h, v1 - 0.08 * h, body, min1=True)
    _fill(img, u0 + 0.08 * w, u1 - 0.08 * w, v0, v0 + 0.42 * h, _mix(a.color, zr, look, 0.9), min1=True)
    if a.oncoming:
        _fill(img, u0 + 0.13 * w, u1 - 0.13 * w, v0 + 0.06 * h, v0 + 0.40 * h, _mix((95, 115, 135), zr, look))
        lamp = _mix((240, 238, 205), zr, look)
        _fill(img, uc - 0.2 * w, uc + 0.2 * w, v0 + 0.52 * h, v0 + 0.64 * h, _mix((28, 28, 30), zr, look))
    else:
        _fill(img, u0 + 0.15 * w, u1 - 0.15 * w, v0 + 0.08 * h, v0 + 0.37 * h, _mix((48, 58, 72), zr, look))
        lamp = _mix((255, 35, 30) if a.braking else (125, 22, 22), zr, look, 1.0)
        _fill(
            img, uc - 0.11 * w, uc + 0.11 * w, v0 + 0.64 * h, v0 + 0.76 * h, _mix((228, 228, 212), zr, look)
        )
    _fill(img, u0 + 0.03 * w, u0 + 0.2 * w, v0 + 0.46 * h, v0 + 0.6 * h, lamp)
    _fill(img, u1 - 0.2 * w, u1 - 0.03 * w, v0 + 0.46 * h, v0 + 0.6 * h, lamp)
    _fill(img, u0, u1, v1 - 0.17 * h, v1 - 0.07 * h, _mix(a.color, zr, look, 0.6))
    tyre = _mix((22, 22, 24), zr, look)
    _fill(img, u0 + 0.02 * w, u0 + 0.2 * w, v1 - 0.08 * h, v1, tyre)
    _fill(img, u1 - 0.2 * w, u1 - 0.02 * w, v1 - 0.08 * h, v1, tyre)
    if a.braking and not a.oncoming:  # third brake light
        _fill(img, uc - 0.12 * w, uc + 0.12 * w, v0 + 0.02 * h, v0 + 0.06 * h, lamp)


def _draw_truck(img: np.ndarray, cam: Camera, look: Look, a: AgentView) -> None:
    """Rear of a box truck: tall cargo box with doors, bumper bar, lamps low at the corners."""
    p = _project(cam, a)
    if p is None:
        return
    u0, u1, v0, v1, zr = p
    w, h = u1 - u0, v1 - v0
    uc = (u0 + u1) / 2
    _fill(img, u0 - 0.04 * w, u1 + 0.04 * w, v1 - 0.03 * h, v1 + 0.04 * h, _mix((30, 30, 32), zr, look))
    _fill(img, u0, u1, v0, v1 - 0.2 * h, _mix(a.color, zr, look), min1=True)
    _fill(
        img,
        uc - 0.01 * w - 0.5,
        uc + 0.01 * w + 0.5,
        v0 + 0.05 * h,
        v1 - 0.22 * h,
        _mix((60, 60, 64), zr, look),
    )
    _fill(img, u0 + 0.04 * w, u1 - 0.04 * w, v1 - 0.2 * h, v1 - 0.12 * h, _mix((40, 40, 44), zr, look))
    lamp = _mix((255, 35, 30) if a.braking else (140, 25, 22), zr, look)
    _fill(img, u0 + 0.02 * w, u0 + 0.14 * w, v1 - 0.3 * h, v1 - 0.22 * h, lamp)
    _fill(img, u1 - 0.14 * w, u1 - 0.02 * w, v1 - 0.3 * h, v1 - 0.22 * h, lamp)
    tyre = _mix((22, 22, 24), zr, look)
    _fill(img, u0 + 0.05 * w, u0 + 0.3 * w, v1 - 0.12 * h, v1, tyre)
    _fill(img, u1 - 0.3 * w, u1 - 0.05 * w, v1 - 0.12 * h, v1, tyre)


def _draw_pedestrian(img: np.ndarray, cam: Camera, look: Look, a: AgentView) -> None:
    p = _project(cam, a)
    if p is None:
        return
    u0, u1, v0, v1, zr = p
    w, h = u1 - u0, v1 - v0
    uc = (u0 + u1) / 2
    _fill(img, u0 - 0.2 * w, u1 + 0.2 * w, v1 - 0.02 * h, v1 + 0.03 * h, _mix((35, 35, 38), zr, look))
    swing = 0.28 * w * math.sin(a.phase)
    pants = _mix(a.color, zr, look)
    _fill(img, uc - 0.42 * w + swing, uc - 0.04 * w + swing, v0 + 0.52 * h, v1, pants, min1=True)
    _fill(img, uc + 0.04 * w - swing, uc + 0.42 * w - swing, v0 + 0.52 * h, v1, pants, min1=True)
    _fill(
        img, u0 + 0.04 * w, u1 - 0.04 * w, v0 + 0.16 * h, v0 + 0.54 * h, _mix(a.accent, zr, look), min1=True
    )
    _fill(img, uc - 0.24 * w, uc + 0.24 * w, v0, v0 + 0.16 * h, _mix((226, 186, 152), zr, look), min1=True)
    _fill(img, uc - 0.24 * w, uc + 0.24 * w, v0, v0 + 0.05 * h, _mix((58, 40, 30), zr, look))


def _posts(cam: Camera, look: Look, travel_m: float) -> list[AgentView]:
    """Roadside posts every `period` metres: they stream past and show the ego's speed."""
    period, xs, height, color = (
        (25.0, (-6.0, 6.0), 1.1, (235, 235, 235))
        if look.road == "highway"
        else (32.0, (-5.9, 4.2), 5.0, (95, 98, 104))
    )
    first = period - (travel_m % period)
    posts = []
    for k in range(8):
        z = first + k * period - cam.back_m * 0.5
        for x in xs:
            posts.append(AgentView("post", x, z, 0.16 if height < 2 else 0.22, height, color))
    return posts


def _draw_post(img: np.ndarray, cam: Camera, look: Look, a: AgentView) -> None:
    p = _project(cam, a)
    if p is None:
        return
    u0, u1, v0, v1, zr = p
    _fill(img, u0, u1, v0, v1, _mix(a.color, zr, look), min1=True)
    if a.height_m < 2:  # delineator: black band
        h = v1 - v0
        _fill(img, u0, u1, v0 + 0.15 * h, v0 + 0.3 * h, _mix((20, 20, 20), zr, look))


_DRAW = {"car": _draw_car, "truck": _draw_truck, "pedestrian": _draw_pedestrian, "post": _draw_post}


def render_frame(
    cam: Camera,
    look: Look,
    travel_m: float,
    agents: Sequence[AgentView],
    shake: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """One frame: road scrolled by the ego's travel, road users drawn far to near, then the hood."""
    st = _static(cam, look)
    img = st.base.copy()
    zg = np.nan_to_num(st.zg_row, nan=-1e3) + travel_m
    dash_on = (zg % 12.0) < 4.0
    m = st.dash_mask & dash_on[:, None]
    img[m] = st.dash_img[m]
    m = st.stripe_mask & ((zg % 8.0) < 4.0)[:, None]
    img[m] = st.stripe_img[m]
    m = st.patch_mask & ((zg % 9.7) < 0.7)[:, None]
    img[m] = st.patch_img[m]
    items = list(agents) + _posts(cam, look, travel_m)
    for a in sorted(items, key=lambda a: -a.z_m):
        _DRAW[a.kind](img, cam, look, a)
    img[st.hood_mask] = st.hood_img[st.hood_mask]
    if shake != (0, 0):
        img = np.roll(img, shift=shake, axis=(0, 1))
    return img


# ---------------------------------------------------------------- clips


def views_at(tracks: Sequence[Track], i: int) -> list[AgentView]:
    return [
        AgentView(
            kind=tr.kind,
            x_m=float(tr.x[i]),
            z_m=float(tr.z[i]),
            width_m=tr.width_m,
            height_m=tr.height_m,
            color=tr.color,
            accent=tr.accent,
            braking=bool(tr.braking[i]),
            oncoming=tr.oncoming,
            phase=float(tr.x[i]) / 0.3 * math.pi / 2,
        )
        for tr in tracks
    ]


def ego_travel(s: Scenario, t: np.ndarray) -> np.ndarray:
    """Metres driven by the ego; it stops dead at the event (the scene freezes after impact)."""
    stop = s.t_event_s if s.is_positive else None
    return s.ego_speed_mps * (np.minimum(t, stop) if stop is not None else t)


def _shake(s: Scenario, t: float, cam: Camera) -> tuple[int, int]:
    """Post-impact camera jolt: a few pixels, decaying over a second (deterministic)."""
    if not s.is_positive or t <= float(s.t_event_s):  # type: ignore[arg-type]
        return (0, 0)
    dt = t - float(s.t_event_s)  # type: ignore[arg-type]
    amp = max(cam.height / 40.0, 1.0) * math.exp(-2.0 * dt) * (3.0 if s.ego_involved else 1.0)
    return (int(round(amp * math.sin(37.0 * t))), int(round(amp * math.cos(23.0 * t))))


def render_clip(s: Scenario, cam: Camera, with_agents: bool = True) -> Iterator[np.ndarray]:
    """Every frame of the clip, in order (a generator: encoders consume it without a frame stack)."""
    t = s.frame_times()
    tracks = agent_tracks(s, t) if with_agents else []
    travel = ego_travel(s, t)
    look = look_for(s)
    for i in range(s.n_frames):
        yield render_frame(cam, look, float(travel[i]), views_at(tracks, i), _shake(s, float(t[i]), cam))


def render_clip_frames(s: Scenario, cam: Camera, idx: Sequence[int], with_agents: bool = True) -> np.ndarray:
    """Frames `idx` alone, [len(idx), H, W, 3] (what those frames of `render_clip` are): a tick's window
    without rendering the clip, or one frame to compare with a decoded video."""
    t = s.frame_times()[list(idx)]
    tracks = agent_tracks(s, t) if with_agents else []
    travel = ego_travel(s, t)
    look = look_for(s)
    frames = [
        render_frame(cam, look, float(travel[j]), views_at(tracks, j), _shake(s, float(t[j]), cam))
        for j in range(len(t))
    ]
    return np.stack(frames)


def render_clip_frame(s: Scenario, cam: Camera, i: int, with_agents: bool = True) -> np.ndarray:
    """Frame i alone (what frame i of `render_clip` is), e.g. to compare with a decoded video."""
    return render_clip_frames(s, cam, [i], with_agents)[0]
