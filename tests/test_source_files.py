"""Which files an adapter takes as clips: nothing skipped silently, nothing read outside the source root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlalert.config import SourceConfig
from vlalert.sources import dad, dota
from vlalert.sources.common import FieldError, confined


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def by_id(items) -> dict:
    return {x.video_id: x for x in items}


# ---------------------------------------------------------------- DAD


def test_dad_files_that_are_not_clips_are_rejected_not_skipped(tmp_path):
    root = tmp_path / "dad"
    folder = root / "videos/training/positive"
    touch(folder / "000900.mp4")
    upper = touch(folder / "000901.MP4")
    avi = touch(folder / "000902.avi")
    nested = touch(folder / "sub/000903.mp4")
    anns, rejections = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    assert [a.video_id for a in anns] == ["training-positive-000900"]
    got = by_id(rejections)
    assert set(got) == {
        "training-positive-000901.MP4",
        "training-positive-000902.avi",
        "training-positive-sub/000903.mp4",
    }
    r = got["training-positive-000901.MP4"]
    assert r.path == str(upper)
    assert r.reason == (
        f"{upper}: clip training-positive-000901.MP4: field file name: not a DAD clip: extension '.MP4', "
        "DAD clips are NNNNNN.mp4; rename it to 000901.mp4"
    )
    assert "extension '.avi'" in got["training-positive-000902.avi"].reason
    assert got["training-positive-000902.avi"].path == str(avi)
    r = got["training-positive-sub/000903.mp4"]
    assert r.path == str(nested) and f"in a subfolder: DAD clips lie directly in {folder}" in r.reason


def test_dad_stray_name_of_a_clip_number_does_not_win_over_the_real_file(tmp_path):
    root = tmp_path / "dad"
    folder = root / "videos/testing/positive"
    real = touch(folder / "000296.mp4")
    stray = touch(folder / "0000296.mp4")  # sorts first: it used to become clip 000296
    anns, rejections = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    [ann] = anns
    assert (ann.video_id, ann.path) == ("testing-positive-000296", str(real))
    [r] = rejections
    assert (r.video_id, r.path) == ("testing-positive-0000296.mp4", str(stray))
    assert "clip number 296 is also given by 000296.mp4, which is kept (0000296.mp4, 000296.mp4)" in r.reason


def test_dad_two_non_canonical_names_of_one_clip_are_both_rejected(tmp_path):
    root = tmp_path / "dad"
    folder = root / "videos/testing/negative"
    touch(folder / "0296.mp4")
    touch(folder / "00296.mp4")
    anns, rejections = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    assert anns == []
    assert [r.video_id for r in rejections] == ["testing-negative-000296"] * 2
    assert all("given by 00296.mp4, 0296.mp4: keep one, named 000296.mp4" in r.reason for r in rejections)


# ---------------------------------------------------------------- DoTA


@pytest.mark.parametrize("key", ["../outside", "../../etc/x", "/abs/clip", "", ".", "a/../../b"])
def test_confined_refuses_names_that_leave_the_base(tmp_path, key):
    with pytest.raises(FieldError, match="outside"):
        confined(tmp_path / "frames", key, "clip_name")


def test_confined_keeps_plain_names(tmp_path):
    assert confined(tmp_path / "frames", "abc_000001", "f") == tmp_path / "frames/abc_000001"


def test_dota_clip_keys_cannot_read_frames_outside_the_source_root(tmp_path):
    root = tmp_path / "dota"
    outside = tmp_path / "elsewhere"
    touch(outside / "000000.jpg")  # a frame folder outside the root that "../elsewhere" would reach
    touch(root / "frames/ok_000001/000000.jpg")
    entry = {
        "video_start": 0,
        "video_end": 9,
        "anomaly_start": 2,
        "anomaly_end": 5,
        "anomaly_class": "ego: turning",
        "num_frames": 10,
        "subset": "val",
    }
    keys = ["ok_000001", "../../elsewhere", str(outside)]
    (root / "metadata_val.json").write_text(json.dumps({k: entry for k in keys}))
    anns, rejections = dota.read_annotations("dota", SourceConfig(kind="dota", root=str(root)))
    assert [a.video_id for a in anns] == ["ok_000001"]
    got = by_id(rejections)
    assert set(got) == {"../../elsewhere", str(outside)}
    for key, r in got.items():
        assert f"clip {key}: field clip_name (JSON key): {key!r} leads to " in r.reason
        assert "outside" in r.reason
