"""Source adapters and consensus labels, on hand-made native fixtures and on the real DoTA metadata.

Adapters only look for video files (they do not decode them), so empty placeholder files stand in
for videos and frames here; decoding is tested in test_video.py and test_ingest.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from vlalert.config import SOURCE_KINDS, SourceConfig
from vlalert.sources import consensus, dad, dada2000, dota, nexar
from vlalert.sources.registry import ADAPTERS, read_source_annotations

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL_DOTA = REAL / "dota_metadata_val.json"
REAL_CONSENSUS = REAL / "badas_consensus_dota_test.csv"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def fields(ann) -> tuple:
    return (
        ann.video_id,
        ann.source,
        ann.path,
        ann.fps,
        ann.official_split,
        ann.is_positive,
        ann.t_risky_s,
        ann.t_event_s,
        ann.ego_involved,
        ann.event_type,
        ann.annotation_file,
        ann.n_frames,
    )


def by_id(items) -> dict:
    return {x.video_id: x for x in items}


def assert_names(rejection, file, clip, field) -> None:
    assert rejection.reason.startswith(f"{file}: clip {clip}: field {field}: "), rejection.reason


# ---------------------------------------------------------------- Nexar


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


NEXAR_HEADER = ["id", "time_of_event", "time_of_alert", "target"]


@pytest.fixture
def nexar_root(tmp_path) -> Path:
    root = tmp_path / "nexar"
    write_csv(root / "train.csv", NEXAR_HEADER, [[12, 20.5, 18.0, 1], ["00034", "", "", 0]])
    write_csv(root / "test-public.csv", NEXAR_HEADER, [["1234", "3.25", "1.5", "1"]])
    touch(root / "train" / "positive" / "00012.mp4")
    touch(root / "train" / "negative" / "00034.mp4")
    touch(root / "test-public" / "01234.mp4")  # the flat layout is accepted too
    return root


def test_nexar_parses_ids_times_splits_and_ego(nexar_root):
    src = SourceConfig(kind="nexar", root=str(nexar_root))
    anns, rejections = nexar.read_annotations("nx", src)
    assert rejections == []
    got = by_id(anns)
    train = str(nexar_root / "train.csv")
    assert fields(got["00012"]) == (
        "00012", "nx", str(nexar_root / "train/positive/00012.mp4"), 30.0, "train",
        True, 18.0, 20.5, True, None, train, None,
    )  # fmt: skip
    assert fields(got["00034"]) == (
        "00034", "nx", str(nexar_root / "train/negative/00034.mp4"), 30.0, "train",
        False, None, None, False, None, train, None,
    )  # fmt: skip
    assert fields(got["01234"]) == (
        "01234", "nx", str(nexar_root / "test-public/01234.mp4"), 30.0, "test-public",
        True, 1.5, 3.25, True, None, str(nexar_root / "test-public.csv"), None,
    )  # fmt: skip
    assert got["00012"].meta["times_from"] == "annotation"
    assert got["00034"].meta["times_from"] is None


def test_nexar_bad_rows_are_rejected_naming_file_clip_and_field(nexar_root):
    train = nexar_root / "train.csv"
    write_csv(
        train,
        NEXAR_HEADER,
        [
            [12, 20.5, 18.0, 1],
            [13, "soon", 18.0, 1],  # non-numeric time
            ["", 1.0, 0.5, 1],  # missing id
            [14, "", "", 2],  # target not 0/1
            [15, 9.0, 8.0, 1],  # no video file
            ["x7", 9.0, 8.0, 1],  # id not a number
            ["00034", "", "", 0],
        ],
    )
    touch(nexar_root / "train" / "positive" / "00013.mp4")
    touch(nexar_root / "train" / "positive" / "00099.mp4")  # a video no row names
    touch(nexar_root / "test-private" / "negative" / "00777.mp4")  # a split without its CSV
    anns, rejections = nexar.read_annotations("nx", SourceConfig(kind="nexar", root=str(nexar_root)))
    assert sorted(a.video_id for a in anns) == ["00012", "00034", "01234"]
    rej = by_id(rejections)
    assert set(rej) == {"00013", "<row 4>", "00014", "00015", "x7", "00099", "00777"}
    assert rej["00777"].reason.endswith(f"no annotation row in {nexar_root / 'test-private'}.csv (absent)")
    assert_names(rej["00013"], train, "00013", "time_of_event")
    assert "'soon' is not a number" in rej["00013"].reason
    assert_names(rej["<row 4>"], train, "<row 4>", "id")
    assert rej["<row 4>"].reason.endswith("missing")
    assert_names(rej["00014"], train, "00014", "target")
    assert_names(rej["00015"], train, "00015", "id")
    assert "video file missing" in rej["00015"].reason and "train/positive/00015.mp4" in rej["00015"].reason
    assert_names(rej["x7"], train, "x7", "id")
    video = nexar_root / "train" / "positive" / "00099.mp4"
    assert_names(rej["00099"], video, "00099", "id")
    assert "no annotation row" in rej["00099"].reason and rej["00099"].path == str(video)


def test_nexar_positive_without_event_time_is_rejected_not_invented(nexar_root):
    train = nexar_root / "train.csv"
    write_csv(train, NEXAR_HEADER, [[12, "", 18.0, 1], ["00034", "", "", 0]])
    anns, rejections = nexar.read_annotations("nx", SourceConfig(kind="nexar", root=str(nexar_root)))
    assert sorted(a.video_id for a in anns) == ["00034", "01234"]
    [r] = rejections
    assert_names(r, train, "00012", "time_of_event")
    assert "without time_of_event" in r.reason


def test_nexar_without_any_csv_raises_naming_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.csv.*test-public\.csv.*test-private\.csv"):
        nexar.read_annotations("nx", SourceConfig(kind="nexar", root=str(tmp_path)))


def test_nexar_csv_with_wrong_header_raises(tmp_path):
    write_csv(tmp_path / "train.csv", ["video", "t"], [[1, 2]])
    with pytest.raises(ValueError, match=r"train\.csv: not a Nexar annotation CSV: missing columns"):
        nexar.read_annotations("nx", SourceConfig(kind="nexar", root=str(tmp_path)))


# ---------------------------------------------------------------- DADA-2000

DADA_ROWS = [
    # video, weather, light, scene, linear, type, accident, start, accident frame, end, total,
    # then the 5 interval lengths, texts, causes, measures
    [68, 1, 1, 4, 3, 10, 1, 120, 180, 240, 300, 120, 60, 120, 60, 60, "a car cuts in", "speeding", "brake"],
    [5, 2, 2, 1, 1, 25, 0, 30, -1, 60, 150, 30, -1, 30, -1, 90, "near miss", "", ""],
    [7, 1, 1, 1, 1, 3, 1, -1, 90, 120, 200, "", "", "", "", "", "", "", ""],
    [9, 1, 1, 1, 1, 2, "maybe", 10, 20, 30, 100, "", "", "", "", "", "", "", ""],
    [10, 1, 1, 1, 1, 2, 1, 10, 20, 30, 100, "", "", "", "", "", "", "", ""],
]


def dada_frames(root: Path) -> None:
    touch(root / "10" / "068" / "images" / "0001.jpg")
    touch(root / "25" / "005" / "0001.png")  # frames directly in the clip folder
    touch(root / "3" / "007" / "images" / "0001.jpg")
    touch(root / "11" / "001" / "images" / "0001.jpg")  # a clip no row names
    # row 2_010 has no frames at all


def write_dada_xlsx(path: Path, rows: list[list], title_rows: int = 0) -> Path:
    wb = openpyxl.Workbook()
    wb.active.title = "legend"
    wb.active.append(["weather: 1 sunny, 2 rainy, 3 snowy, 4 foggy"])
    table = wb.create_sheet("annotations")
    for _ in range(title_rows):
        table.append(["DADA-2000 video annotations"])
    table.append(list(dada2000.COLUMNS))
    for row in rows:
        table.append([None if v == "" else v for v in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def check_dada(anns, rejections, root: Path, sheet: Path) -> None:
    got = by_id(anns)
    assert sorted(got) == ["10_068", "25_005", "3_007"]
    assert fields(got["10_068"]) == (
        "10_068", "dada", str(root / "10/068/images"), 30.0, None,
        True, 4.0, 6.0, True, None, str(sheet), 300,
    )  # fmt: skip
    assert fields(got["25_005"]) == (
        "25_005", "dada", str(root / "25/005"), 30.0, None,
        False, None, None, False, None, str(sheet), 150,
    )  # fmt: skip
    assert fields(got["3_007"]) == (
        "3_007", "dada", str(root / "3/007/images"), 30.0, None,
        True, None, 3.0, True, None, str(sheet), 200,
    )  # fmt: skip
    assert got["10_068"].meta["texts"] == "a car cuts in"
    assert got["25_005"].meta["abnormal start frame"] in (30, "30")
    rej = by_id(rejections)
    assert set(rej) == {"2_009", "2_010", "11_001"}
    assert_names(rej["2_009"], sheet, "2_009", "whether an accident occurred (1/0)")
    assert_names(rej["2_010"], sheet, "2_010", "video")
    assert "video file missing" in rej["2_010"].reason
    assert_names(rej["11_001"], root / "11/001/images", "11_001", "video")


def test_dada_xlsx_second_sheet(tmp_path):
    root = tmp_path / "dada"
    sheet = write_dada_xlsx(root / "DADA2000_video_annotations.xlsx", DADA_ROWS)
    dada_frames(root)
    anns, rejections = dada2000.read_annotations("dada", SourceConfig(kind="dada2000", root=str(root)))
    check_dada(anns, rejections, root, sheet)


def test_dada_csv_export_with_a_title_row_above_the_header(tmp_path):
    root = tmp_path / "dada"
    sheet = write_csv(root / "DADA2000_video_annotations.csv", list(dada2000.COLUMNS), DADA_ROWS)
    text = sheet.read_text()
    sheet.write_text("DADA-2000 video annotations\n" + text)
    dada_frames(root)
    anns, rejections = dada2000.read_annotations("dada", SourceConfig(kind="dada2000", root=str(root)))
    check_dada(anns, rejections, root, sheet)


def test_dada_table_is_found_on_whichever_sheet_holds_the_header(tmp_path):
    wb = openpyxl.Workbook()
    wb.active.append(list(dada2000.COLUMNS))  # one sheet only: a user's re-saved copy
    wb.active.append([7, 1, 1, 1, 1, 2, 1, 30, 60, 80, 120] + [""] * 8)
    path = tmp_path / "DADA2000_video_annotations.xlsx"
    wb.save(path)
    anns, rejections = dada2000.read_annotations(
        "dada", SourceConfig(kind="dada2000", root=str(tmp_path)), check_videos=False
    )
    assert [a.video_id for a in anns] == ["2_007"] and rejections == []
    legend_only = openpyxl.Workbook()
    legend_only.active.append(["legend"])
    legend_only.save(path)
    with pytest.raises(ValueError, match="no sheet holds the DADA-2000 annotation table"):
        dada2000.read_annotations("dada", SourceConfig(kind="dada2000", root=str(tmp_path)))


def test_dada_semicolon_csv_export(tmp_path):
    path = tmp_path / "DADA2000_video_annotations.csv"
    row = ["7", "1", "1", "1", "1", "2", "1", "30", "60", "80", "120"] + [""] * 8
    path.write_text(";".join(dada2000.COLUMNS) + "\n" + ";".join(row) + "\n", encoding="utf-8")
    anns, _ = dada2000.read_annotations(
        "dada", SourceConfig(kind="dada2000", root=str(tmp_path)), check_videos=False
    )
    [a] = anns
    assert (a.video_id, a.t_risky_s, a.t_event_s, a.clock_fps) == (
        "2_007",
        1.0,
        2.0,
        {"t_risky_s": 30.0, "t_event_s": 30.0},
    )


def test_dada_official_split_files(tmp_path):
    sheet = tmp_path / "DADA2000_video_annotations.csv"
    rows = [
        ["22", "1", "1", "1", "1", "1", "0", "-1", "-1", "-1", "90"],
        ["5", "1", "1", "1", "1", "3", "0", "-1", "-1", "-1", "90"],
    ]
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([list(dada2000.COLUMNS)] + [r + [""] * 8 for r in rows])
    files = {}
    for split, entries in {
        "train": [[["3", "005"], "001"]],
        "test": [[["1", "022"], "001"]],
        "val": [],
    }.items():
        files[split] = str(tmp_path / f"{split}_file.json")
        (tmp_path / f"{split}_file.json").write_text(json.dumps(entries))
    src = SourceConfig(kind="dada2000", root=str(tmp_path), split_files=files)
    anns, _ = dada2000.read_annotations("dada", src, check_videos=False)
    assert {a.video_id: a.official_split for a in anns} == {"1_022": "test", "3_005": "train"}
    (tmp_path / "val_file.json").write_text(json.dumps([[["1", "22"], "002"]]))
    with pytest.raises(ValueError, match="1_022 is also listed"):
        dada2000.read_annotations("dada", src, check_videos=False)


def test_dada_missing_sheet_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DADA2000_video_annotations\.xlsx or .*\.csv"):
        dada2000.read_annotations("dada", SourceConfig(kind="dada2000", root=str(tmp_path)))


# ---------------------------------------------------------------- DoTA


def dota_entry(start, cls, n=50, subset="train"):
    return {
        "video_start": 100,
        "video_end": 100 + n - 1,
        "anomaly_start": start,
        "anomaly_end": start + 10 if isinstance(start, int) else 99,
        "anomaly_class": cls,
        "num_frames": n,
        "subset": subset,
    }


@pytest.fixture
def dota_root(tmp_path) -> Path:
    root = tmp_path / "dota"
    root.mkdir()
    train = {
        "aaa_000001": dota_entry(25, "ego: turning"),
        "ccc_000003": dota_entry(5, "pedestrian", subset="train"),
        "ddd_000004": dota_entry("x", "other: oncoming"),
        "eee_000005": dota_entry(5, "ego: lateral"),  # no video
    }
    val = {"bbb_000002": dota_entry(10, "other:  lateral ", n=40, subset="val")}
    (root / "metadata_train.json").write_text(json.dumps(train))
    (root / "metadata_val.json").write_text(json.dumps(val))
    touch(root / "frames" / "aaa_000001" / "000000.jpg")
    touch(root / "frames" / "ccc_000003" / "000000.jpg")  # named by a (bad) entry: one rejection only
    touch(root / "videos" / "bbb_000002.mp4")
    touch(root / "frames" / "zzz_000009" / "000000.jpg")  # no metadata entry
    return root


def test_dota_parses_metadata_json(dota_root):
    anns, rejections = dota.read_annotations("dota", SourceConfig(kind="dota", root=str(dota_root)))
    got = by_id(anns)
    assert sorted(got) == ["aaa_000001", "bbb_000002"]
    assert fields(got["aaa_000001"]) == (
        "aaa_000001", "dota", str(dota_root / "frames/aaa_000001"), 10.0, "train",
        True, 2.5, None, True, "turning", str(dota_root / "metadata_train.json"), 50,
    )  # fmt: skip
    assert fields(got["bbb_000002"]) == (
        "bbb_000002", "dota", str(dota_root / "videos/bbb_000002.mp4"), 10.0, "val",
        True, 1.0, None, False, "lateral", str(dota_root / "metadata_val.json"), 40,
    )  # fmt: skip
    assert got["aaa_000001"].meta["anomaly_end"] == 35
    meta_train = dota_root / "metadata_train.json"
    rej = by_id(rejections)
    assert set(rej) == {"ccc_000003", "ddd_000004", "eee_000005", "zzz_000009"}
    assert_names(rej["ccc_000003"], meta_train, "ccc_000003", "anomaly_class")
    assert_names(rej["ddd_000004"], meta_train, "ddd_000004", "anomaly_start")
    assert_names(rej["eee_000005"], meta_train, "eee_000005", "clip_name (JSON key)")
    assert "video file missing" in rej["eee_000005"].reason
    assert_names(rej["zzz_000009"], dota_root / "frames/zzz_000009", "zzz_000009", "clip_name (JSON key)")


def test_dota_metadata_that_is_not_an_object_raises(tmp_path):
    (tmp_path / "metadata_val.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"metadata_val\.json: top level is a list"):
        dota.read_annotations("dota", SourceConfig(kind="dota", root=str(tmp_path)))
    (tmp_path / "metadata_val.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"metadata_val\.json: not valid JSON"):
        dota.read_annotations("dota", SourceConfig(kind="dota", root=str(tmp_path)))


def test_dota_without_metadata_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metadata_train\.json or .*metadata_val\.json"):
        dota.read_annotations("dota", SourceConfig(kind="dota", root=str(tmp_path)))


@pytest.fixture
def real_dota_src(tmp_path) -> SourceConfig:
    if not REAL_DOTA.is_file():
        pytest.skip(f"{REAL_DOTA} absent")
    return SourceConfig(kind="dota", root=str(tmp_path / "no-videos"), annotations=str(REAL_DOTA))


def test_real_dota_metadata_parses_every_clip(real_dota_src):
    raw = json.loads(REAL_DOTA.read_text())
    anns, rejections = dota.read_annotations("dota", real_dota_src, check_videos=False)
    assert rejections == [] and len(anns) == 1402
    assert sum(a.ego_involved for a in anns) == 805
    assert sum(not a.ego_involved for a in anns) == 597
    for a in anns:
        assert a.t_risky_s == raw[a.video_id]["anomaly_start"] / 10
        assert a.n_frames == raw[a.video_id]["num_frames"]
        assert a.official_split == "val" and a.is_positive and a.t_event_s is None


def test_real_dota_metadata_without_videos_rejects_every_clip_as_missing(real_dota_src):
    anns, rejections = dota.read_annotations("dota", real_dota_src)
    assert anns == [] and len(rejections) == 1402
    assert all("video file missing" in r.reason and str(REAL_DOTA) in r.reason for r in rejections)


# ---------------------------------------------------------------- DAD


def test_dad_clips_from_folder_names(tmp_path):
    root = tmp_path / "dad"
    touch(root / "videos/testing/positive/000456.mp4")
    touch(root / "videos/training/negative/000001.mp4")
    touch(root / "videos/testing/positive/clip.mp4")
    (root / "videos/testing/positive/README.txt").write_text("not a clip")
    anns, rejections = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    got = by_id(anns)
    pos = str(root / "videos/testing/positive/000456.mp4")
    neg = str(root / "videos/training/negative/000001.mp4")
    assert fields(got["testing-positive-000456"]) == (
        "testing-positive-000456", "dad", pos, 20.0, "testing",
        True, 2.5, 4.5, None, None, pos, None,
    )  # fmt: skip
    assert fields(got["training-negative-000001"]) == (
        "training-negative-000001", "dad", neg, 20.0, "training",
        False, None, None, None, None, neg, None,
    )  # fmt: skip
    assert got["testing-positive-000456"].meta["times_from"] == "dad-default"
    readme, bad = sorted(rejections, key=lambda r: r.path)  # "R" sorts before "c"
    assert_names(bad, root / "videos/testing/positive/clip.mp4", "testing-positive-clip", "file name")
    # Not a clip, but not skipped silently either: recorded with its reason.
    readme_path = root / "videos/testing/positive/README.txt"
    assert_names(readme, readme_path, "testing-positive-README.txt", "file name")


def test_dad_without_folders_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"videos/training/positive"):
        dad.read_annotations("dad", SourceConfig(kind="dad", root=str(tmp_path)))


# ---------------------------------------------------------------- consensus

CONSENSUS_HEADER = list(consensus.COLUMNS)


def consensus_csv(path: Path, rows: list[list]) -> Path:
    return write_csv(path, CONSENSUS_HEADER, rows)


def test_consensus_overrides_times_and_ego_and_rejects_unknown_ids(tmp_path):
    root = tmp_path / "dada"
    write_dada_xlsx(root / "DADA2000_video_annotations.xlsx", DADA_ROWS)
    dada_frames(root)
    anns, adapter_rejections = dada2000.read_annotations(
        "dada", SourceConfig(kind="dada2000", root=str(root))
    )
    csv_path = consensus_csv(
        tmp_path / "cons.csv",
        [
            ["10_068.mp4", "", "Collision", "no", 7, 3.5, 5.25, 1.75, "pos-not-ego"],
            ["3_007", "", "Collision", "yes", 5, 1.0, "", "", "pos-ego"],  # no .mp4, no collision time
            ["2_010.mp4", "", "Collision", "yes", 5, 1.0, 2.0, 1.0, "pos-ego"],  # rejected by the adapter
            ["99_999.mp4", "", "Collision", "yes", 5, 1.0, 2.0, 1.0, "pos-ego"],
        ],
    )
    table = consensus.read_consensus(csv_path)
    assert set(table) == {"10_068", "3_007", "2_010", "99_999"}
    assert table["10_068"]["min_support"] == 7.0 and table["10_068"]["batch"] is None
    out, rejections, _ = consensus.apply_consensus(
        anns, table, csv_path, dada2000.Dada2000, rejected_ids={r.video_id for r in adapter_rejections}
    )
    got = by_id(out)
    a = got["10_068"]
    assert (a.t_risky_s, a.t_event_s, a.ego_involved) == (3.5, 5.25, False)
    assert a.meta["times_from"] == "consensus" and a.meta["ego_from"] == "consensus"
    assert a.meta["consensus"]["Event-type"] == "Collision" and a.meta["consensus"]["Diff"] == 1.75
    b = got["3_007"]
    assert (b.t_risky_s, b.t_event_s, b.ego_involved) == (1.0, 3.0, True)
    assert b.meta["times_from"] == "mixed"
    assert b.meta["provenance"]["t_event_s"]["field"] == "accident frame"
    c = got["25_005"]
    assert (c.t_risky_s, c.ego_involved) == (None, False) and "consensus" not in c.meta
    [unknown] = rejections
    assert unknown.video_id == "99_999" and unknown.path == str(csv_path)
    assert unknown.reason == (f"{csv_path}: clip 99_999: field id: no clip 99_999 in source dada")
    # The input annotations are left as they were.
    assert by_id(anns)["10_068"].t_risky_s == 4.0


def test_consensus_dad_ids_are_test_positive_file_names(tmp_path):
    root = tmp_path / "dad"
    touch(root / "videos/testing/positive/000456.mp4")
    anns, _ = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    csv_path = consensus_csv(
        tmp_path / "c.csv", [["000456.mp4", "", "Collision", "yes", 6, 3.0, 4.4, 1.4, "x"]]
    )
    out, rejections, _ = consensus.apply_consensus(
        anns, consensus.read_consensus(csv_path), csv_path, dad.Dad
    )
    assert rejections == []
    [a] = out
    assert (a.video_id, a.t_risky_s, a.t_event_s, a.ego_involved) == (
        "testing-positive-000456",
        3.0,
        4.4,
        True,
    )


def test_consensus_bad_ego_value_rejects_the_clip(tmp_path):
    root = tmp_path / "dad"
    touch(root / "videos/testing/positive/000456.mp4")
    anns, _ = dad.read_annotations("dad", SourceConfig(kind="dad", root=str(root)))
    csv_path = consensus_csv(
        tmp_path / "c.csv", [["000456.mp4", "", "Collision", "maybe", 6, 3.0, 4.4, 1.4, ""]]
    )
    out, rejections, _ = consensus.apply_consensus(
        anns, consensus.read_consensus(csv_path), csv_path, dad.Dad
    )
    assert out == []
    [r] = rejections
    # the project's clip id and the CSV's id, both named
    assert_names(r, csv_path, "testing-positive-000456 (CSV id 000456.mp4)", "Nexar-vehicle-involved")


def test_consensus_file_errors_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="consensus CSV not found"):
        consensus.read_consensus(tmp_path / "absent.csv")
    bad = write_csv(tmp_path / "bad.csv", ["id", "Time-of-alert"], [["a.mp4", 1.0]])
    with pytest.raises(
        ValueError, match=r"missing columns \['Nexar-vehicle-involved', 'Time-of-collision'\]"
    ):
        consensus.read_consensus(bad)
    dup = consensus_csv(
        tmp_path / "dup.csv", [["a.mp4", "", "", "yes", 1, 1, 2, 1, ""], ["a", "", "", "no", 1, 1, 2, 1, ""]]
    )
    with pytest.raises(ValueError, match="line 3: field id: clip a appears twice"):
        consensus.read_consensus(dup)


def test_real_consensus_csv_parses():
    if not REAL_CONSENSUS.is_file():
        pytest.skip(f"{REAL_CONSENSUS} absent")
    table = consensus.read_consensus(REAL_CONSENSUS)
    assert len(table) == 598
    assert sum(row["Nexar-vehicle-involved"] == "yes" for row in table.values()) == 339
    row = table["0RJPQ_97dcs_003475"]
    assert row["id"] == "0RJPQ_97dcs_003475.mp4"
    assert (row["Time-of-alert"], row["Time-of-collision"], row["min_support"]) == (2.3, 5.7, 7.0)


def test_real_consensus_applies_to_every_real_dota_clip(real_dota_src):
    if not REAL_CONSENSUS.is_file():
        pytest.skip(f"{REAL_CONSENSUS} absent")
    anns, _ = dota.read_annotations("dota", real_dota_src, check_videos=False)
    table = consensus.read_consensus(REAL_CONSENSUS)
    out, rejections, _ = consensus.apply_consensus(anns, table, REAL_CONSENSUS, dota.Dota)
    assert rejections == [] and len(out) == 1402
    matched = [a for a in out if "consensus" in a.meta]
    assert len(matched) == 598
    before = by_id(anns)
    flips = {"csv=yes, json=no": 0, "csv=no, json=yes": 0}
    for a in matched:
        row = table[a.video_id]
        assert (a.t_risky_s, a.t_event_s) == (row["Time-of-alert"], row["Time-of-collision"])
        assert a.ego_involved == (row["Nexar-vehicle-involved"] == "yes")
        assert a.meta["times_from"] == "consensus"
        if a.ego_involved != before[a.video_id].ego_involved:
            flips[row["ego_discrepancy"]] += 1
        else:
            assert row["ego_discrepancy"] is None
    # The CSV's own ego_discrepancy column counts 18 + 12 disagreements with the metadata JSON.
    assert flips == {"csv=yes, json=no": 18, "csv=no, json=yes": 12}
    assert all(a.t_event_s is None for a in out if "consensus" not in a.meta)


# ---------------------------------------------------------------- registry


def test_registry_has_an_adapter_per_kind_and_dispatches(tmp_path):
    assert set(ADAPTERS) == set(SOURCE_KINDS)
    root = tmp_path / "dad"
    touch(root / "videos/testing/negative/000002.mp4")
    anns, rejections = read_source_annotations("d", SourceConfig(kind="dad", root=str(root)))
    assert [a.video_id for a in anns] == ["testing-negative-000002"] and rejections == []
