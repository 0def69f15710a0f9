"""vlalert.ingest: every clip is accepted or rejected with a reason naming file, clip and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vlalert.config import SourceConfig
from vlalert.ingest import IngestError, check_clip, ingest_annotations, ingest_source, write_ingest
from vlalert.schemas import read_table
from vlalert.sources.base import Annotation
from vlalert.video import VideoInfo


def write_mp4(path: Path, n: int, fps: int, w: int = 32, h: int = 16, faststart: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = np.full((h, w, 3), (i * 7) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, n: int, w: int = 24, h: int = 16, first: int = 0, digits: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), i * 9 % 256, np.uint8)).save(
            folder / f"{first + i:0{digits}d}.png"
        )
    return folder


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dota_entry(start: int, cls: str, n: int, subset: str = "val") -> dict:
    return {
        "video_start": 0,
        "video_end": n - 1,
        "anomaly_start": start,
        "anomaly_end": min(start + 5, n - 1),
        "anomaly_class": cls,
        "num_frames": n,
        "subset": subset,
    }


def write_dota(root: Path, entries: dict, file: str = "metadata_val.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / file
    path.write_text(json.dumps(entries))
    return path


NEXAR_HEADER = ["id", "time_of_event", "time_of_alert", "target"]
CONSENSUS_HEADER = [
    "id",
    "batch",
    "Event-type",
    "Nexar-vehicle-involved",
    "min_support",
    "Time-of-alert",
    "Time-of-collision",
    "Diff",
    "article_category",
]


def nexar_source(root: Path, rows: list[list], videos: dict[str, int] | None = None) -> SourceConfig:
    """Nexar fixture: train.csv with `rows`, and a 30-frame 30 fps mp4 (1.0 s) per id unless given."""
    write_csv(root / "train.csv", NEXAR_HEADER, rows)
    for row in rows:
        video_id = f"{int(row[0]):05d}"
        label = "positive" if int(row[3]) == 1 else "negative"
        n = (videos or {}).get(video_id, 30)
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        if n:
            write_mp4(root / "train" / label / f"{video_id}.mp4", n=n, fps=30)
    return SourceConfig(kind="nexar", root=str(root))


def ingest(src: SourceConfig, **kw):
    clips, rejections, _decisions = ingest_source("src", src, progress=False, **kw)
    return clips, rejections


def only(rejections):
    assert len(rejections) == 1, rejections
    return rejections[0]


def assert_names(rejection, file, clip, field) -> None:
    assert f"{file}: clip {clip}: field {field}: " in rejection.reason, rejection.reason


# ---------------------------------------------------------------- accepted clips


def test_dota_frames_and_video_with_consensus_become_clips(tmp_path):
    root = tmp_path / "dota"
    write_dota(
        root, {"aaa_1": dota_entry(5, "ego: turning", 20), "bbb_2": dota_entry(3, "other: lateral", 20)}
    )
    write_frames(root / "frames" / "aaa_1", 20)
    write_mp4(root / "videos" / "bbb_2.mp4", n=20, fps=10)
    cons = write_csv(
        root / "cons.csv", CONSENSUS_HEADER, [["bbb_2.mp4", "", "Collision", "yes", 5, 0.7, 1.9, 1.2, ""]]
    )
    src = SourceConfig(kind="dota", root=str(root), consensus=str(cons))
    clips, rejections = ingest(src)
    assert rejections == []
    a, b = sorted(clips, key=lambda c: c.video_id)
    assert (a.path, a.fps, a.n_frames, a.duration_s, a.width, a.height) == (
        str(root / "frames/aaa_1"), 10.0, 20, 2.0, 24, 16,
    )  # fmt: skip
    assert (a.official_split, a.is_positive, a.t_risky_s, a.t_event_s, a.ego_involved, a.event_type) == (
        "val", True, 0.5, None, True, "turning",
    )  # fmt: skip
    assert a.meta["times_from"] == "annotation" and a.meta["annotation_file"] == str(
        root / "metadata_val.json"
    )
    assert a.meta["anomaly_class"] == "ego: turning" and "consensus" not in a.meta
    assert (b.path, b.fps, b.n_frames, b.duration_s, b.width, b.height) == (
        str(root / "videos/bbb_2.mp4"), 10.0, 20, 2.0, 32, 16,
    )  # fmt: skip
    # consensus: times and ego flag overridden ("other:" in the metadata, "yes" in the CSV)
    assert (b.t_risky_s, b.t_event_s, b.ego_involved) == (0.7, 1.9, True)
    assert b.meta["times_from"] == "consensus" and b.meta["consensus"]["Time-of-alert"] == 0.7


def test_write_ingest_round_trips_through_the_schemas(tmp_path):
    root = tmp_path / "dota"
    write_dota(
        root, {"aaa_1": dota_entry(5, "ego: turning", 20), "bad_2": dota_entry(50, "ego: turning", 20)}
    )
    write_frames(root / "frames" / "aaa_1", 20)
    write_frames(root / "frames" / "bad_2", 20)
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root)))
    videos, rejected = tmp_path / "out/videos.parquet", tmp_path / "out/rejected.parquet"
    write_ingest(clips, rejections, videos, rejected)
    [row] = read_table("videos", videos).to_pylist()
    assert row["video_id"] == "aaa_1" and row["n_frames"] == 20 and row["t_event_s"] is None
    assert json.loads(row["meta"])["num_frames"] == 20
    [rej] = read_table("rejected", rejected).to_pylist()
    assert rej["video_id"] == "bad_2" and "anomaly_start (t_risky_s)" in rej["reason"]
    write_ingest([], [], videos, rejected)  # an empty source still writes valid, empty files
    assert read_table("videos", videos).num_rows == 0


def test_nexar_mp4_clips_with_times(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, 0.5, 1], [34, "", "", 0]])
    clips, rejections = ingest(src)
    assert rejections == []
    got = {c.video_id: c for c in clips}
    assert (got["00012"].fps, got["00012"].n_frames, got["00012"].duration_s) == (30.0, 30, 1.0)
    assert (got["00012"].t_risky_s, got["00012"].t_event_s, got["00012"].ego_involved) == (0.5, 0.8, True)
    assert (got["00034"].is_positive, got["00034"].t_risky_s, got["00034"].ego_involved) == (
        False,
        None,
        False,
    )


def test_dad_default_times_and_consensus(tmp_path):
    root = tmp_path / "dad"
    write_mp4(root / "videos/testing/positive/000456.mp4", n=100, fps=20, w=16, h=16)
    write_mp4(root / "videos/testing/positive/000457.mp4", n=100, fps=20, w=16, h=16)
    write_mp4(root / "videos/testing/positive/000458.mp4", n=100, fps=25, w=16, h=16)
    write_mp4(root / "videos/testing/positive/000459.mp4", n=100, fps=20, w=16, h=16)
    rows = [
        ["000457.mp4", "", "Collision", "no", 5, 2.0, 2.9, 0.9, ""],  # frames 60 and 87 on a 30 fps clock
        ["000459.mp4", "", "Collision", "yes", 5, 3.1, 4.4, 1.3, ""],  # frame 132 of 100: past the end
    ]
    cons = write_csv(tmp_path / "c.csv", CONSENSUS_HEADER, rows)
    clips, rejections = ingest(SourceConfig(kind="dad", root=str(root), consensus=str(cons)))
    got = {c.video_id: c for c in clips}
    a, b, c = got["testing-positive-000456"], got["testing-positive-000457"], got["testing-positive-000458"]
    assert (a.duration_s, a.t_risky_s, a.t_event_s, a.ego_involved, a.meta["times_from"]) == (
        5.0, 2.5, 4.5, None, "dad-default",
    )  # fmt: skip
    # consensus times on the 30 fps clock, placed on the 20 fps clip: 2.0 s -> frame 60 -> 3.0 s
    assert (b.t_risky_s, b.t_event_s) == pytest.approx((3.0, 4.35))
    assert (b.ego_involved, b.meta["times_from"]) == (False, "consensus")
    # the accident is frame 90 whatever the container's fps: 3.6 s at 25 fps (not the nominal 4.5 s)
    assert (c.fps, c.t_risky_s, c.t_event_s) == pytest.approx((25.0, 50 / 25, 90 / 25))
    assert c.meta["provenance"]["t_event_s"]["frame"] == 90
    # a time past the clip's end is rejected with the reason, never clamped
    [r] = rejections
    assert r.video_id == "testing-positive-000459" and "past the clip's end" in r.reason
    assert "Time-of-collision" in r.reason


def test_dada_frame_folders_with_one_based_jpeg_names(tmp_path):
    root = tmp_path / "dada"
    header = [
        "video", "type", "whether an accident occurred (1/0)", "abnormal start frame",
        "accident frame", "abnormal end frame", "total frames",
    ]  # fmt: skip
    write_csv(root / "DADA2000_video_annotations.csv", header, [[68, 10, 1, 6, 12, 14, 15]])
    write_frames(root / "10" / "068" / "images", 15, first=1, digits=4)
    [clip], rejections = ingest(SourceConfig(kind="dada2000", root=str(root)))
    assert rejections == []
    assert (clip.video_id, clip.fps, clip.n_frames, clip.duration_s) == ("10_068", 30.0, 15, 0.5)
    assert (clip.t_risky_s, clip.t_event_s, clip.ego_involved) == (0.2, 0.4, True)


# ---------------------------------------------------------------- rejection paths


def frame_annotation(path: Path, fps: float | None) -> Annotation:
    return Annotation(
        video_id="clip1",
        source="src",
        path=str(path),
        fps=fps,
        official_split=None,
        is_positive=True,
        t_risky_s=0.1,
        t_event_s=None,
        ego_involved=None,
        event_type=None,
        annotation_file="ann.json",
    )


@pytest.mark.parametrize("fps", [None, 0.0, -5.0])
def test_unknown_fps_is_rejected(tmp_path, fps):
    folder = write_frames(tmp_path / "frames" / "clip1", 5)
    clips, rejections = ingest_annotations([frame_annotation(folder, fps)], progress=False)
    assert clips == []
    r = only(rejections)
    assert_names(r, folder, "clip1", "fps")
    assert "unknown fps" in r.reason


def test_check_clip_rejects_a_video_without_fps():
    ann = frame_annotation(Path("v.mp4"), None)
    r = check_clip(ann, VideoInfo(n_frames=10, fps=None, width=8, height=8))
    assert r.video_id == "clip1" and "v.mp4: clip clip1: field fps: unknown fps" in r.reason


def test_zero_length_video_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, 0.5, 1]], videos={"00012": 0})
    video = tmp_path / "nexar/train/positive/00012.mp4"
    video.write_bytes(b"")  # the adapter sees the file; ingest finds it empty
    clips, rejections = ingest(src)
    r = only(rejections)
    assert clips == [] and r.path == str(video)
    assert r.reason == f"{video}: clip 00012: field path: empty file (0 bytes)"


def test_unreadable_video_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, 0.5, 1]], videos={"00012": 0})
    video = tmp_path / "nexar/train/positive/00012.mp4"
    video.write_bytes(b"not an mp4 at all" * 100)
    clips, rejections = ingest(src)
    assert clips == []
    assert_names(only(rejections), video, "00012", "path")


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_video_is_rejected(tmp_path, faststart):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, 0.5, 1]], videos={"00012": 0})
    video = tmp_path / "nexar/train/positive/00012.mp4"
    full = write_mp4(tmp_path / "full.mp4", n=30, fps=30, w=64, h=48, faststart=faststart)
    data = full.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.8)])
    clips, rejections = ingest(src)
    assert clips == []
    assert_names(only(rejections), video, "00012", "path")


def test_frame_count_disagreeing_with_the_video_is_rejected(tmp_path):
    root = tmp_path / "dota"
    meta = write_dota(
        root, {"off_by_2": dota_entry(5, "ego: turning", 22), "off_by_1": dota_entry(5, "ego: turning", 21)}
    )
    write_frames(root / "frames" / "off_by_2", 20)
    write_frames(root / "frames" / "off_by_1", 20)
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root)))
    assert [c.video_id for c in clips] == ["off_by_1"]  # within one frame: accepted
    r = only(rejections)
    assert_names(r, meta, "off_by_2", "num_frames (n_frames)")
    assert "annotation says 22 frames, the video has 20" in r.reason


def test_risky_time_after_event_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.5, 0.9, 1]])
    clips, rejections = ingest(src)
    r = only(rejections)
    assert clips == []
    assert_names(r, tmp_path / "nexar/train.csv", "00012", "time_of_alert (t_risky_s)")
    assert "risky time 0.9 s is after time_of_event (t_event_s) 0.5 s" in r.reason


def test_negative_time_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.5, -0.25, 1]])
    clips, rejections = ingest(src)
    r = only(rejections)
    assert_names(r, tmp_path / "nexar/train.csv", "00012", "time_of_alert (t_risky_s)")
    assert "negative time -0.25 s" in r.reason


def test_risky_time_past_the_end_is_rejected(tmp_path):
    root = tmp_path / "dota"
    meta = write_dota(root, {"late": dota_entry(25, "ego: turning", 20)})
    write_frames(root / "frames" / "late", 20)
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root)))
    r = only(rejections)
    assert clips == []
    assert_names(r, meta, "late", "anomaly_start (t_risky_s)")
    assert "2.5 s is past the clip's end (2 s = 20 frames at 10 fps)" in r.reason


def test_event_time_past_the_end_names_the_consensus_csv(tmp_path):
    root = tmp_path / "dota"
    write_dota(root, {"late": dota_entry(5, "ego: turning", 20)})
    write_frames(root / "frames" / "late", 20)
    cons = write_csv(
        root / "cons.csv", CONSENSUS_HEADER, [["late.mp4", "", "Collision", "yes", 5, 1.0, 2.6, 1.6, ""]]
    )
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root), consensus=str(cons)))
    r = only(rejections)
    assert_names(r, cons, "late", "Time-of-collision (t_event_s)")
    assert "2.6 s is past the clip's end" in r.reason


def test_positive_without_risky_time_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, "", 1]])
    clips, rejections = ingest(src)
    r = only(rejections)
    assert_names(r, tmp_path / "nexar/train.csv", "00012", "time_of_alert (t_risky_s)")
    assert "positive clip has no risky time" in r.reason


def test_negative_clip_with_a_time_is_rejected(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[34, 0.8, 0.5, 0]])
    clips, rejections = ingest(src)
    r = only(rejections)
    assert_names(r, tmp_path / "nexar/train.csv", "00034", "time_of_alert (t_risky_s)")
    assert "negative clip (no event) gives a time" in r.reason


def test_duplicate_video_id_keeps_the_first_and_rejects_the_second(tmp_path):
    root = tmp_path / "dota"
    write_dota(root, {"dup": dota_entry(5, "ego: turning", 20, "train")}, "metadata_train.json")
    val = write_dota(root, {"dup": dota_entry(7, "other: lateral", 20)}, "metadata_val.json")
    write_frames(root / "frames" / "dup", 20)
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root)))
    [clip] = clips
    assert (clip.official_split, clip.t_risky_s) == ("train", 0.5)
    r = only(rejections)
    assert_names(r, val, "dup", "video_id")
    assert "duplicate video_id: already given by" in r.reason and "metadata_train.json" in r.reason


def test_several_problems_of_one_clip_are_all_named(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, -1.0, 2.0, 1]])
    r = only(ingest(src)[1])
    assert "field time_of_event (t_event_s): negative time" in r.reason
    assert "field time_of_alert (t_risky_s): 2 s is past the clip's end" in r.reason
    assert "risky time 2 s is after" in r.reason


def test_adapter_and_consensus_rejections_pass_through_and_nothing_is_dropped(tmp_path):
    root = tmp_path / "dota"
    write_dota(
        root,
        {
            "ok": dota_entry(5, "ego: turning", 20),
            "badclass": dota_entry(5, "pedestrian", 20),
            "novideo": dota_entry(5, "ego: turning", 20),
            "late": dota_entry(30, "ego: turning", 20),
        },
    )
    for clip in ("ok", "badclass", "late", "stray"):
        write_frames(root / "frames" / clip, 20)
    cons = write_csv(
        root / "cons.csv", CONSENSUS_HEADER, [["ghost.mp4", "", "Collision", "yes", 5, 1.0, 2.0, 1.0, ""]]
    )
    clips, rejections = ingest(SourceConfig(kind="dota", root=str(root), consensus=str(cons)))
    assert [c.video_id for c in clips] == ["ok"]
    assert sorted(r.video_id for r in rejections) == ["badclass", "ghost", "late", "novideo", "stray"]
    ghost = next(r for r in rejections if r.video_id == "ghost")
    assert (
        ghost.path == str(cons)
        and ghost.reason == f"{cons}: clip ghost: field id: no clip ghost in source src"
    )


def test_strict_mode_raises_on_the_first_rejection_with_the_same_reason(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.5, 0.9, 1]])
    [r] = ingest(src)[1]
    with pytest.raises(IngestError) as info:
        ingest(src, strict=True)
    assert str(info.value) == r.reason and info.value.rejection == r


def test_strict_mode_accepts_a_clean_source(tmp_path):
    src = nexar_source(tmp_path / "nexar", [[12, 0.8, 0.5, 1]])
    clips, rejections = ingest(src, strict=True)
    assert [c.video_id for c in clips] == ["00012"] and rejections == []


def test_missing_annotation_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata_train.json"):
        ingest(SourceConfig(kind="dota", root=str(tmp_path)))


def test_consensus_rows_mean_what_they_say(tmp_path):
    root = tmp_path / "dad"
    for n in (456, 457, 458, 459):
        write_mp4(root / f"videos/testing/positive/000{n}.mp4", n=100, fps=20, w=16, h=16)
    rows = [
        ["000456.mp4", "", "Collision", "yes", 5, 1.0, 2.0, 1.0, "pos-ego"],
        ["000457.mp4", "", "Collision", "yes", 5, 1.8, 2.0, 0.2, "less2s"],
        ["000458.mp4", "", "Collision", "no", 5, 1.0, 2.0, 1.0, "excluded (bad video quality)"],
        ["000459.mp4", "", "Collision", "no", 5, 1.0, 2.0, 1.0, "excluded (not in test split)"],
    ]
    cons = write_csv(tmp_path / "c.csv", CONSENSUS_HEADER, rows)
    clips, rejections, decisions = ingest_source(
        "src", SourceConfig(kind="dad", root=str(root), consensus=str(cons)), progress=False
    )
    assert rejections == []
    got = {c.video_id: c for c in clips}
    by = {d.video_id: d for d in decisions}
    assert [by[f"testing-positive-000{n}"].decision for n in (456, 457, 458, 459)] == [
        "applied", "applied-less2s", "excluded", "excluded",
    ]  # fmt: skip
    assert got["testing-positive-000457"].meta["consensus_flag"] == "less2s"
    # excluded rows are recorded with the CSV's reason, never applied: the DAD defaults stay
    for n in (458, 459):
        clip = got[f"testing-positive-000{n}"]
        assert (clip.t_event_s, clip.ego_involved, clip.meta["times_from"]) == (4.5, None, "dad-default")
        assert "excluded (" in by[f"testing-positive-000{n}"].reason
    # peers evaluate on every consensus clip except those excluded as "not in test split"
    assert [by[f"testing-positive-000{n}"].peer_test for n in (456, 457, 458, 459)] == [
        True,
        True,
        True,
        False,
    ]
    assert by["testing-positive-000456"].csv_id == "000456.mp4"
