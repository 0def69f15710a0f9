"""The embedded demo: synthetic clips written *in each real source's own format*.

`make_demo_source` renders a handful of dashcam clips for one source kind and writes exactly
what a real user of that source would have placed under its root (videos or frame folders,
annotation CSV / xlsx / JSON in the native layout), so the demo runs the very adapters a real
run does. Next to them go `scene_truth.json` (the renderer's ground truth, for the `scene` gate
provider and the rule belief generator), a BADAS consensus CSV where BADAS has one, and finally
`demo_manifest.json`, written last and atomically: it is the Snakemake output that says the
source is complete.

With `demo.faults` each source also gets one clip whose video cannot be read and one whose
annotation contradicts itself, so that every demo run exercises the rejection path.

Everything is a pure function of (seed, kind): `plan_demo` decides ids, splits, scenarios,
times and native annotation records; `make_demo_source` only renders and writes. What differs per
source kind is one `DemoKind` in `DEMOS`, which names the kind's plugin (vlalert.sources.<kind>) for
every fact of the format (fps, file names, columns, the consensus clock).

Why one module of ~580 lines: the plan (ids, splits, native records) and the writer of each kind
must read the same `DemoKind` and the same random streams, in the same order, or the demo's bytes
would depend on which module was imported first; split, the four kinds' planners and writers
would each need the other half's private record shapes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlalert.atomic import write_json_atomic
from vlalert.config import DemoConfig
from vlalert.sources import consensus, dad, dada2000, dota, nexar
from vlalert.sources.plugin import SourceKind
from vlalert.sources.registry import KINDS
from vlalert.synthetic import writers as W
from vlalert.synthetic.render import Camera, look_for, render_clip
from vlalert.synthetic.scenarios import (
    POSITIVE_SCENARIOS,
    Scenario,
    draw_times,
    make_scenario,
    stable_rng,
    truth_entry,
)
from vlalert.synthetic.truth import SCENE_TRUTH_FORMAT

MANIFEST = "demo_manifest.json"
SCENE_TRUTH = "scene_truth.json"
MARKER = ".vlalert-demo"  # only a directory holding this file (or an empty one) is ever wiped

# DADA-2000 categories 1-18 are the ego-involved group; others are not.
DADA_TYPES: dict[str, tuple[int, ...]] = {
    "pedestrian-crossing": (1, 2),
    "cut-in": (10, 12),
    "lead-braking": (11, 13),
    "other-collision": (37, 39, 43),
    "negative-following": (52, 55),
    "negative-oncoming": (58, 61),
}
DADA_TEXTS: dict[str, tuple[str, str, str]] = {
    "lead-braking": (
        "the vehicle ahead brakes suddenly and the ego car crashes into its rear",
        "the leading vehicle braked hard while the ego car was following too closely",
        "keep a safe following distance and react to the brake lights of the vehicle ahead",
    ),
    "cut-in": (
        "a car in the {side} lane cuts into the ego lane and the ego car hits it",
        "the vehicle changed lanes abruptly without signalling and slowed down in front of the ego car",
        "slow down and leave room when a vehicle in the adjacent lane drifts toward the ego lane",
    ),
    "pedestrian-crossing": (
        "a pedestrian runs across the road from the {side} and is hit by the ego car",
        "the pedestrian crossed suddenly away from a crosswalk",
        "slow down near pedestrians at the roadside and be ready to brake",
    ),
    "other-collision": (
        "the car ahead changes into the {side} lane and crashes into the rear of a slow truck there; "
        "the ego car is not involved",
        "the car changed lanes without checking the speed of the truck ahead in the target lane",
        "keep distance from vehicles that change lanes abruptly and watch for slow trucks",
    ),
    "negative-following": (
        "the ego car follows a vehicle at a steady distance; no accident occurs",
        "no accident",
        "no measure needed",
    ),
    "negative-oncoming": (
        "oncoming vehicles pass in the opposite lane; no accident occurs",
        "no accident",
        "no measure needed",
    ),
}
DOTA_CLASSES: dict[str, str] = {
    "lead-braking": "ego: moving_ahead_or_waiting",
    "cut-in": "ego: lateral",
    "pedestrian-crossing": "ego: pedestrian",
    "other-collision": "other: lateral",
}


@dataclass(frozen=True)
class DemoClip:
    """One planned clip: its scenario, where its video goes and its native annotation record."""

    video_id: str
    scenario: Scenario
    video_rel: str  # relative to the source root: an mp4, or a frame folder
    layout: str  # "mp4" | "frames"
    frame_pattern: str | None  # frame folders: file name pattern, e.g. "{:04d}.jpg"
    frame_start: int
    split: str | None
    annotation: dict[str, Any]  # the native record (CSV row, sheet row, metadata entry); {} for DAD
    consensus: dict[str, Any] | None  # the BADAS consensus row, when this clip has one
    fault: str | None = None  # truncated | zero-length | empty-folder | corrupt-jpeg | contradiction
    fault_note: str = ""


def _scenarios(kind: str, demo: DemoConfig) -> list[tuple[Scenario, str | None]]:
    spec = DEMOS[kind]
    specs: list[tuple[str, str | None]] = [
        (spec.cycle[i % len(spec.cycle)], None) for i in range(demo.clips_per_source)
    ]
    if demo.faults:
        specs += list(spec.faults)
    fps = spec.source.FPS
    out = []
    for i, (name, fault) in enumerate(specs):
        rng = stable_rng(demo.seed, kind, i)
        positive = name in POSITIVE_SCENARIOS
        if spec.times is not None:
            n_frames, t_r, t_e = spec.times(positive)
        else:
            # The first clip of the sources with prefix negatives is long, with a late event.
            long = spec.long_first and i == 0
            n_frames, t_r, t_e = draw_times(fps, rng, demo.max_duration_s, positive, long)
        out.append((make_scenario(name, fps, n_frames, t_r, t_e, rng), fault))
    return out


def _consensus_row(
    clip_id: str, source: type[SourceKind], s: Scenario, rng: np.random.Generator
) -> dict[str, Any]:
    """A second human annotation: alert time within +-0.3 s of the risky time, same collision time.

    Written as BADAS writes it: on the consensus file's own clock (the kind's CONSENSUS_CLOCK_FPS,
    30 fps for DAD whose clips play at 20 fps), so the demo exercises the same clock conversion.
    """
    clock = source.CONSENSUS_CLOCK_FPS
    scale = source.FPS / clock if clock else 1.0  # seconds of the clip -> seconds on the clock
    t_r, t_e = float(s.t_risky_s), float(s.t_event_s)  # type: ignore[arg-type]
    alert_s = min(max(t_r + rng.uniform(-0.3, 0.3), 0.0), t_e - 0.2)
    alert, collision = round(alert_s * scale, 2), round(t_e * scale, 2)
    return {
        consensus.ID: f"{clip_id}.mp4",
        "batch": None,
        "Event-type": "Collision",
        consensus.EGO: "yes" if s.ego_involved else "no",
        "min_support": int(rng.integers(5, 8)),
        consensus.ALERT: alert,
        consensus.COLLISION: collision,
        "Diff": round(collision - alert, 2),
        consensus.CATEGORY: "pos-ego" if s.ego_involved else "pos-not-ego",
    }


def _nexar(demo: DemoConfig, scns: list[tuple[Scenario, str | None]]) -> list[DemoClip]:
    ids = stable_rng(demo.seed, "nexar").choice(np.arange(1, 3000), size=len(scns), replace=False)
    clips = []
    for i, (s, fault) in enumerate(scns):
        vid = f"{int(ids[i]):05d}"
        split = "test-public" if (fault == "contradiction" or (fault is None and i % 3 == 1)) else "train"
        label = "positive" if s.is_positive else "negative"
        row = {
            "id": vid,
            "time_of_event": s.t_event_s,
            "time_of_alert": s.t_risky_s,
            "target": 1 if s.is_positive else 0,
        }
        rel = f"{split}/{label}/{vid}.mp4"
        note = ""
        if fault == "contradiction":
            row["time_of_alert"] = round(float(s.t_event_s) + 1.0, 1)  # type: ignore[arg-type]
            note = (
                f"{nexar.split_file(split)}: time_of_alert {row['time_of_alert']} s is after "
                f"time_of_event {s.t_event_s} s"
            )
        elif fault == "truncated":
            note = f"unreadable video: {rel} is cut to 40% of its bytes (no moov atom)"
        clips.append(DemoClip(vid, s, rel, "mp4", None, 0, split, row, None, fault, note))
    return clips


def _dada_row(s: Scenario, typ: int, video: int, rng: np.random.Generator) -> dict[str, Any]:
    n = s.n_frames
    side = "left" if s.side < 0 else "right"
    texts, causes, measures = (x.format(side=side) for x in DADA_TEXTS[s.name])
    row: dict[str, Any] = {
        "video": video,
        "weather(sunny,rainy,snowy,foggy)1-4": 4 if look_for(s).foggy else 1,
        "light(day,night)1-2": 1,
        "scenes(highway,tunnel,mountain,urban,rural)1-5": 4 if s.road == "urban" else 1,
        "linear(arterials,curve,intersection,t-junction,ramp) 1-5": 3
        if s.name == "pedestrian-crossing"
        else 1,
        "type": typ,
        "whether an accident occurred (1/0)": 1 if s.is_positive else 0,
        "total frames": n,
        "texts": texts,
        "causes": causes,
        "measures": measures,
    }
    if s.is_positive:
        tai = int(round(float(s.t_risky_s) * s.fps))  # type: ignore[arg-type]
        tco = int(round(float(s.t_event_s) * s.fps))  # type: ignore[arg-type]
        tae = min(n, tco + int(rng.integers(20, 46)))
    else:
        tai = tco = tae = -1
    row.update(_dada_frames(tai, tco, tae, n))
    return row


def _dada_frames(tai: int, tco: int, tae: int, n: int) -> dict[str, int]:
    if tai < 0:
        return {
            "abnormal start frame": -1,
            "accident frame": -1,
            "abnormal end frame": -1,
            "[0,tai]": n,
            "[tai,tco]": 0,
            "[tai,tae]": 0,
            "[tco,tae]": 0,
            "[tae,end]": 0,
        }
    return {
        "abnormal start frame": tai,
        "accident frame": tco,
        "abnormal end frame": tae,
        "[0,tai]": tai,
        "[tai,tco]": tco - tai,
        "[tai,tae]": tae - tai,
        "[tco,tae]": tae - tco,
        "[tae,end]": n - tae,
    }


def _dada2000(demo: DemoConfig, scns: list[tuple[Scenario, str | None]]) -> list[DemoClip]:
    krng = stable_rng(demo.seed, "dada2000")
    videos = krng.choice(np.arange(1, max(400, len(scns) + 1)), size=len(scns), replace=False)
    clips = []
    for i, (s, fault) in enumerate(scns):
        rng = stable_rng(demo.seed, "dada2000", i, 1)
        typ = int(rng.choice(DADA_TYPES[s.name]))
        video = int(videos[i])
        vid = f"{typ}_{video:03d}"
        row = _dada_row(s, typ, video, rng)
        rel = f"{typ}/{video:03d}/images"
        note = ""
        if fault == "contradiction":
            tco, tae = row["accident frame"], row["abnormal end frame"]
            row.update(_dada_frames(tco + 30, tco, max(tae, tco + 45), s.n_frames))
            note = (
                f"{DADA_SHEET}: abnormal start frame {row['abnormal start frame']} is after "
                f"accident frame {tco}"
            )
        elif fault == "empty-folder":
            note = f"unreadable video: frame folder {rel} is empty"
        clips.append(DemoClip(vid, s, rel, "frames", "{:04d}.jpg", 1, None, row, None, fault, note))
    return clips


def _dota(demo: DemoConfig, scns: list[tuple[Scenario, str | None]]) -> list[DemoClip]:
    krng = stable_rng(demo.seed, "dota")
    start = int(krng.integers(100, 400))
    clips = []
    for i, (s, fault) in enumerate(scns):
        rng = stable_rng(demo.seed, "dota", i, 1)
        n = s.n_frames
        video_start = start
        name = f"SYN{demo.seed:02d}_demo_{video_start:06d}"
        start += n + int(krng.integers(40, 900))
        subset = "val" if (fault == "contradiction" or (fault is None and i % 3 == 1)) else "train"
        a_start = int(round(float(s.t_risky_s) * s.fps))  # type: ignore[arg-type]
        a_event = int(round(float(s.t_event_s) * s.fps))  # type: ignore[arg-type]
        entry = {
            "video_start": video_start,
            "video_end": video_start + n - 1,
            "anomaly_start": a_start,
            "anomaly_end": min(n, a_event + int(rng.integers(3, 11))),
            "anomaly_class": DOTA_CLASSES[s.name],
            "num_frames": n,
            "subset": subset,
        }
        rel = f"frames/{name}"
        note = ""
        if fault == "contradiction":
            entry["anomaly_start"], entry["anomaly_end"] = n + 12, n + 20
            note = f"{dota.metadata_file(subset)}: anomaly_start {n + 12} is past the clip's {n} frames"
        elif fault == "corrupt-jpeg":
            note = f"unreadable video: every image in {rel} is corrupt (no JPEG data)"
        clips.append(DemoClip(name, s, rel, "frames", "{:06d}.jpg", 0, subset, entry, None, fault, note))
    return clips


def _dad(demo: DemoConfig, scns: list[tuple[Scenario, str | None]]) -> list[DemoClip]:
    pool = np.arange(1, max(621, len(scns) + 1))  # real DAD numbers run to about 000620
    numbers = stable_rng(demo.seed, "dad").choice(pool, size=len(scns), replace=False)
    clips = []
    for i, (s, fault) in enumerate(scns):
        folder = "testing" if (fault == "truncated" or (fault is None and i % 3 == 1)) else "training"
        label = "positive" if s.is_positive else "negative"
        num = f"{int(numbers[i]):06d}"
        rel = f"videos/{folder}/{label}/{num}.mp4"
        note = ""
        if fault == "truncated":
            note = f"unreadable video: {rel} is cut to 40% of its bytes (no moov atom)"
        elif fault == "zero-length":
            note = f"unreadable video: {rel} is an empty (zero-byte) file"
        clips.append(
            DemoClip(f"{folder}-{label}-{num}", s, rel, "mp4", None, 0, folder, {}, None, fault, note)
        )
    return clips


def _dad_times(positive: bool) -> tuple[int, float | None, float | None]:
    """Every DAD clip has DAD's length, and a positive its accident at DAD's frame (max_duration_s aside)."""
    t_r, t_e = dad.default_times() if positive else (None, None)
    return dad.N_FRAMES, t_r, t_e


def _with_consensus(kind: str, demo: DemoConfig, clips: list[DemoClip]) -> list[DemoClip]:
    """Consensus rows for some positives, never all: the test-split positives except the first (DoTA,
    DAD); every third positive of a source without official splits, DADA-2000 (a consensus row moves
    its clip to test, so rows for all of them would leave train without a DADA-2000 positive)."""
    spec = DEMOS[kind]
    if spec.consensus_file is None:
        return clips
    if all(c.split is None for c in clips):
        positives = [i for i, c in enumerate(clips) if c.fault is None and c.scenario.is_positive]
        chosen = set(positives[1::3])
    else:
        test_split = spec.source.PEER_TEST_SPLITS[0]
        cands = [
            i
            for i, c in enumerate(clips)
            if c.fault is None and c.scenario.is_positive and c.split == test_split
        ]
        chosen = set(cands[1:] if len(cands) >= 2 else cands)
    out = []
    for i, c in enumerate(clips):
        if i in chosen:
            row = _consensus_row(
                spec.consensus_id(c), spec.source, c.scenario, stable_rng(demo.seed, kind, i, 2)
            )
            c = replace(c, consensus=row)
        out.append(c)
    return out


def plan_demo(kind: str, demo: DemoConfig) -> list[DemoClip]:
    """Every clip of one source's demo (faults last): a pure function of (demo config, kind)."""
    if kind not in DEMOS:
        raise ValueError(f"unknown source kind {kind!r}; known: {', '.join(DEMOS)}")
    clips = DEMOS[kind].plan(demo, _scenarios(kind, demo))
    return _with_consensus(kind, demo, clips)


def scene_truth(kind: str, clips: list[DemoClip]) -> dict[str, Any]:
    """scene_truth.json for the clips that are not faults (format vlalert-scene-truth/1)."""
    return {
        "format": SCENE_TRUTH_FORMAT,
        "source": kind,
        "fps": DEMOS[kind].source.FPS,
        "clips": {c.video_id: truth_entry(c.scenario) for c in clips if c.fault is None},
    }


# ---------------------------------------------------------------- I/O


def _prepare(out: Path) -> None:
    """Empty `out` for a rebuild, but only if it is empty or one of ours (never a user's dataset)."""
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    if entries and not (out / MARKER).exists():
        names = ", ".join(p.name for p in entries[:5])
        raise FileExistsError(
            f"{out} is not empty and holds no {MARKER} marker, so it was not written by the demo "
            f"renderer; refusing to overwrite it (found: {names}). Point the demo source's root elsewhere."
        )
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    (out / MARKER).write_text("written by vlalert.sources.synthetic.make_demo_source; wiped on rebuild\n")


def _write_video(out: Path, c: DemoClip, cam: Camera) -> list[Path]:
    path = out / c.video_rel
    s = c.scenario
    if c.fault == "zero-length":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return [path]
    if c.fault == "empty-folder":
        path.mkdir(parents=True, exist_ok=True)
        return []
    if c.fault == "corrupt-jpeg":
        path.mkdir(parents=True, exist_ok=True)
        files = [path / c.frame_pattern.format(c.frame_start + k) for k in range(s.n_frames)]  # type: ignore[union-attr]
        for k, p in enumerate(files):
            p.write_bytes(f"corrupt frame {k}: no JPEG data\n".encode())
        return files
    frames = render_clip(s, cam)
    if c.layout == "mp4":
        W.write_mp4(path, frames, s.fps, cam.width, cam.height)
        if c.fault == "truncated":
            W.truncate_file(path, 0.4)
        return [path]
    return W.write_jpeg_frames(path, frames, c.frame_pattern or "{:06d}.jpg", c.frame_start)


def _nexar_files(out: Path, clips: list[DemoClip]) -> list[Path]:
    files = []
    for split in ("train", "test-public"):
        rows = [c.annotation for c in clips if c.split == split]
        if rows:
            W.write_csv(out / nexar.split_file(split), nexar.COLUMNS, rows)
            files.append(out / nexar.split_file(split))
    return files


def _dada2000_files(out: Path, clips: list[DemoClip]) -> list[Path]:
    legend = [
        ["DADA-2000 video annotations (synthetic demo written by vlalert)"],
        ["the annotation table is on the second sheet; one row per clip {type}/{video:03d}"],
        ["weather: 1 sunny, 2 rainy, 3 snowy, 4 foggy; light: 1 day, 2 night"],
        ["scenes: 1 highway, 2 tunnel, 3 mountain, 4 urban, 5 rural"],
        ["linear: 1 arterials, 2 curve, 3 intersection, 4 t-junction, 5 ramp"],
        ["frames: abnormal start (tai), accident (tco), abnormal end (tae); -1: none"],
    ]
    W.write_xlsx_table(out / DADA_SHEET, dada2000.COLUMNS, [c.annotation for c in clips], legend)
    return [out / DADA_SHEET]


def _dota_files(out: Path, clips: list[DemoClip]) -> list[Path]:
    files = []
    for subset in dota.SUBSETS:
        entries = {
            c.video_id: c.annotation for c in sorted(clips, key=lambda c: c.video_id) if c.split == subset
        }
        W.write_json(out / dota.metadata_file(subset), entries)
        files.append(out / dota.metadata_file(subset))
    return files


def _dad_files(out: Path, clips: list[DemoClip]) -> list[Path]:
    return []  # DAD has no annotation file: labels are the folder names


def make_demo_source(kind: str, out_dir: str | Path, demo: DemoConfig) -> dict:
    """Render and write one source's demo corpus under `out_dir`; returns the manifest."""
    out = Path(out_dir)
    clips = plan_demo(kind, demo)
    _prepare(out)
    cam = Camera.for_size(demo.width, demo.height)
    files: list[Path] = [out / MARKER]
    for c in clips:
        files += _write_video(out, c, cam)
    spec = DEMOS[kind]
    files += spec.write_annotations(out, clips)
    if spec.consensus_file is not None:
        path = out / spec.consensus_file
        W.write_csv(path, consensus.COLUMNS, [c.consensus for c in clips if c.consensus])
        files.append(path)
    W.write_json(out / SCENE_TRUTH, scene_truth(kind, clips), indent=None)
    files.append(out / SCENE_TRUTH)
    manifest = {
        "kind": kind,
        "seed": demo.seed,
        "files": sorted(p.relative_to(out).as_posix() for p in files),
        "clips": {c.video_id: c.scenario.name for c in clips if c.fault is None},
        "faults": {c.video_id: c.fault_note for c in clips if c.fault is not None},
    }
    write_json_atomic(manifest, out / MANIFEST, indent=1)
    return manifest


# ---------------------------------------------------------------- the kinds


@dataclass(frozen=True)
class DemoKind:
    """How the demo renders and writes one source kind; the format's facts are its plugin's (`source`)."""

    source: type[SourceKind]
    cycle: tuple[str, ...]  # the scenarios of the clips, in turn
    faults: tuple[tuple[str, str], ...]  # (scenario, fault) of the extra clips when demo.faults is on
    plan: Callable[[DemoConfig, list[tuple[Scenario, str | None]]], list[DemoClip]]  # ids, splits, records
    write_annotations: Callable[[Path, list[DemoClip]], list[Path]]  # the native annotation files
    consensus_file: str | None = None  # the BADAS consensus CSV, where BADAS publishes one for the kind
    consensus_id: Callable[[DemoClip], str] = lambda c: c.video_id  # the clip's `id` there, less `.mp4`
    long_first: bool = False  # the first clip is maximal with a late event (room for a prefix negative)
    times: Callable[[bool], tuple[int, float | None, float | None]] | None = None  # fixed (n, t_r, t_e)


DADA_SHEET = dada2000.DEFAULT_FILES[0]  # the demo writes the xlsx, as published
# Deterministic cycles: with 6 clips every source gets >= 3 positive kinds, and a negative where the
# source has negatives (DoTA has none); DoTA and DADA-2000 also get a collision between two other road users.
DEMOS: dict[str, DemoKind] = {
    d.source.KIND: d
    for d in (
        DemoKind(
            nexar.Nexar,
            cycle=(
                "lead-braking",
                "cut-in",
                "pedestrian-crossing",
                "negative-following",
                "negative-oncoming",
            ),
            faults=(("lead-braking", "truncated"), ("cut-in", "contradiction")),
            plan=_nexar,
            write_annotations=_nexar_files,
        ),
        DemoKind(
            dada2000.Dada2000,
            cycle=(
                "lead-braking",
                "cut-in",
                "pedestrian-crossing",
                "negative-following",
                "other-collision",
                "negative-oncoming",
            ),
            faults=(("cut-in", "empty-folder"), ("lead-braking", "contradiction")),
            plan=_dada2000,
            write_annotations=_dada2000_files,
            consensus_file="badas_consensus_dada_test.csv",
            long_first=True,
        ),
        DemoKind(
            dota.Dota,
            cycle=("lead-braking", "cut-in", "pedestrian-crossing", "other-collision"),
            faults=(("pedestrian-crossing", "corrupt-jpeg"), ("lead-braking", "contradiction")),
            plan=_dota,
            write_annotations=_dota_files,
            consensus_file="badas_consensus_dota_test.csv",
            long_first=True,
        ),
        DemoKind(
            dad.Dad,
            cycle=(
                "lead-braking",
                "cut-in",
                "pedestrian-crossing",
                "negative-following",
                "negative-oncoming",
            ),
            faults=(("lead-braking", "truncated"), ("negative-following", "zero-length")),
            plan=_dad,
            write_annotations=_dad_files,
            consensus_file="badas_consensus_dad_test.csv",
            consensus_id=lambda c: Path(c.video_rel).stem,  # DAD's consensus names the file: NNNNNN.mp4
            times=_dad_times,
        ),
    )
}
if tuple(DEMOS) != KINDS:
    raise ImportError(f"the demo writes the kinds {list(DEMOS)}, the registry has {list(KINDS)}: one each")
