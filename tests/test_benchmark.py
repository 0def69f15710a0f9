import hashlib
import json
from collections import Counter

import pyarrow as pa
import pytest

from vlalert.benchmark import SplitLeakError, build_benchmark, finalize_manifest, write_manifest
from vlalert.config import SPLITS, WorkflowConfig
from vlalert.labels import label_source
from vlalert.schemas import read_table, table_from_rows, write_table
from vlalert.splits import assign_split
from vlalert.stage_config import BenchmarkSlice, RelabelSlice


def make_cfg(tmp_path):
    return WorkflowConfig.model_validate(
        {
            "demo": {"enabled": False},
            "gate": {"provider": "consensus"},
            "sources": {
                "nexar": {
                    "kind": "nexar",
                    "root": str(tmp_path),
                    "consensus": "c.csv",
                    "split_map": {"train": "trainval", "test-public": "test"},
                },
                "dota": {
                    "kind": "dota",
                    "root": str(tmp_path),
                    "consensus": "c.csv",
                    "prefix_negatives": True,
                    "split_map": {"val": "test"},
                },
            },
            "labels": {"gated_sources": ["dota"]},
        }
    )


def clip(vid, source, official, n_frames=331, t_r=7.5, t_e=9.0, positive=True, ego=True, meta=None):
    return {
        "video_id": vid,
        "source": source,
        "path": f"/v/{vid}.mp4",
        "fps": 30.0,
        "n_frames": n_frames,
        "duration_s": n_frames / 30.0,
        "width": 64,
        "height": 48,
        "official_split": official,
        "is_positive": positive,
        "t_risky_s": t_r if positive else None,
        "t_event_s": t_e if positive else None,
        "ego_involved": ego,
        "event_type": None,
        "meta": json.dumps(meta or {"k": 1}),
    }


def high_gate(videos):
    rows = [
        {"video_id": v, "t_s": float(t), "p_collision": 0.9, "provider": "consensus"}
        for v in videos.column("video_id").to_pylist()
        for t in range(2, 13)
    ]
    return table_from_rows("gate", rows)


def corpus(cfg, extra_dota=()):
    videos = {
        "nexar": table_from_rows("videos", [
            clip("00001", "nexar", "train"),
            clip("00002", "nexar", "test-public", n_frames=301, positive=False, ego=False),
            clip("00003", "nexar", "train", n_frames=40),  # 1.3 s: no full window, no tick
        ]),
        "dota": table_from_rows("videos", [
            clip("d1", "dota", "val", n_frames=361, t_r=10.0, t_e=None),
            clip("d2", "dota", "train", n_frames=301, t_r=6.0, t_e=7.0),
            *extra_dota,
        ]),
    }  # fmt: skip
    rejected = {
        "nexar": table_from_rows("rejected", [
            {"video_id": "00004", "source": "nexar", "path": "/v/00004.mp4",
             "reason": "train.csv: clip 00004: video cannot be decoded"},
            {"video_id": "00005", "source": "nexar", "path": "/v/00005.mp4",
             "reason": "train.csv: clip 00005: video cannot be decoded"},
        ]),
        "dota": table_from_rows("rejected", []),
    }  # fmt: skip
    labels = {s: label_source(v, high_gate(v), s, cfg) for s, v in videos.items()}
    return labels, videos, rejected


def test_splits_sorted_and_without_leaks(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    splits, manifest = build_benchmark(labels, videos, rejected, cfg)
    assert set(splits) == set(SPLITS)
    assert (
        sum(t.num_rows for t in splits.values())
        == sum(t.num_rows for t in labels.values())
        == 10 + 9 + 11 + 4 + 9
    )
    where = {}
    for split, table in splits.items():
        assert set(table.column("split").to_pylist()) <= {split}
        for vid in table.column("video_id").to_pylist():
            where.setdefault(vid.split("#")[0], set()).add(split)
        keys = list(zip(*(table.column(c).to_pylist() for c in ("source", "video_id", "tick")), strict=True))
        assert keys == sorted(keys)
    assert all(len(s) == 1 for s in where.values())
    assert where["d1"] == {"test"}  # official val -> test, and its prefix went with it
    assert set(
        splits["test"].filter(pa.compute.equal(splits["test"]["video_id"], "d1#prefix"))["split"].to_pylist()
    ) == {"test"}
    assert where["00002"] == {"test"}
    assert where["00001"] <= {"train", "val"}
    assert where["d2"] == {
        assign_split("d2", "train", {"val": "test"}, cfg.splits.fractions, cfg.splits.salt)
    }


def test_manifest_counts_match_tables(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    splits, manifest = build_benchmark(labels, videos, rejected, cfg)
    # hand counts per clip: {SILENT, OBSERVE, ALERT, excluded, prefix}
    per_clip = {
        # ticks 2..11, t_r 7.5, collision 9.0: ALERT at 8 only, 9.. post-event
        ("nexar", "00001"): Counter(SILENT=2, OBSERVE=4, ALERT=1, excluded=3),
        ("nexar", "00002"): Counter(SILENT=9),  # negative, ticks 2..10
        ("dota", "d1"): Counter(SILENT=4, OBSERVE=4, ALERT=2, excluded=1, prefix=4),  # ticks 2..12, t_r 10
        ("dota", "d2"): Counter(OBSERVE=4, ALERT=1, excluded=4),  # ticks 2..10, t_r 6, collision 7
    }
    expected = {s: {} for s in SPLITS}
    for (source, vid), counts in per_clip.items():
        official = (
            videos[source]
            .filter(pa.compute.equal(videos[source]["video_id"], vid))["official_split"][0]
            .as_py()
        )
        split = assign_split(
            vid, official, cfg.sources[source].split_map, cfg.splits.fractions, cfg.splits.salt
        )
        expected[split][source] = expected[split].get(source, Counter()) + counts
    kinds = ("SILENT", "OBSERVE", "ALERT", "excluded", "prefix")
    assert manifest["ticks"] == {
        s: {src: {k: c[k] for k in kinds} for src, c in v.items()} for s, v in expected.items()
    }
    for split, table in splits.items():
        assert manifest["totals"][split]["ticks"] == table.num_rows
        got = sum(sum(v.values()) for v in manifest["ticks"][split].values())
        assert got == table.num_rows
        clip_ids = set(table.column("video_id").to_pylist())
        assert manifest["totals"][split]["clips"] + manifest["totals"][split]["prefix_clips"] == len(clip_ids)
    assert manifest["sources"]["nexar"]["accepted"] == 3
    assert manifest["sources"]["nexar"]["rejected"] == 2
    assert manifest["sources"]["nexar"]["rejection_reasons"] == {
        "train.csv: clip <id>: video cannot be decoded": 2
    }
    assert manifest["sources"]["nexar"]["clips_without_ticks"] == ["00003"]
    assert manifest["sources"]["dota"] == {
        "accepted": 2, "rejected": 0, "rejection_reasons": {}, "rejected_clips": [], "clips_without_ticks": []
    }  # fmt: skip
    assert manifest["rules"]["dota"]["prefix-negative"] == 4
    assert manifest["config"]["labels"]["alert_s"] == 2.0
    assert manifest["config"]["sources"]["dota"]["gate_provider"] == ["consensus"]
    json.dumps(manifest)  # serialisable as is


def test_the_relabel_and_benchmark_slices_stand_in_for_the_config(tmp_path):
    """The scripts hand their slice where label_source and build_benchmark take the workflow config:
    the same tables and manifest, and reading a key outside the slice would fail."""
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    for s, v in videos.items():
        given = RelabelSlice.of(cfg, s)
        job = RelabelSlice.from_params(given.tracked(), given.untracked())
        assert label_source(v, high_gate(v), s, job).equals(labels[s])
    job = BenchmarkSlice.of(cfg)
    job = BenchmarkSlice.from_params(job.tracked(), job.untracked())
    assert build_benchmark(labels, videos, rejected, job) == build_benchmark(labels, videos, rejected, cfg)


def test_prefix_and_no_event_rows(tmp_path):
    cfg = make_cfg(tmp_path)
    splits, _ = build_benchmark(*corpus(cfg), cfg)
    test = splits["test"].to_pylist()
    d1 = [r for r in test if r["video_id"] == "d1"]
    assert {r["t_event_s"] for r in d1} == {12.0}  # no event time: t_r + alert_s
    assert "t_event_s_rule" in json.loads(d1[0]["meta"])
    prefix = [r for r in test if r["video_id"] == "d1#prefix"]
    assert [r["t_s"] for r in prefix] == [2.0, 3.0, 4.0, 5.0]
    r = prefix[0]
    assert (r["is_positive"], r["t_risky_s"], r["t_event_s"], r["parent_id"]) == (False, None, None, "d1")
    meta = json.loads(r["meta"])
    assert meta["prefix_of"] == "d1" and meta["prefix_cut_s"] == 5.5 and meta["parent_meta"] == {"k": 1}
    assert r["path"] == "/v/d1.mp4" and r["n_frames"] == 361


def test_written_files_pass_schema_and_hashes(tmp_path):
    cfg = make_cfg(tmp_path)
    splits, manifest = build_benchmark(*corpus(cfg), cfg)
    paths = {s: write_table("benchmark", t, tmp_path / "bench" / f"{s}.parquet") for s, t in splits.items()}
    for s, p in paths.items():
        back = read_table("benchmark", p)
        assert back.equals(splits[s])
    final = finalize_manifest(manifest, paths)
    assert "files" not in manifest  # the input is not modified
    for s, p in paths.items():
        assert final["files"][s]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert final["files"][s]["rows"] == splits[s].num_rows
    out = write_manifest(final, tmp_path / "bench" / "manifest.json")
    assert json.loads(out.read_text()) == final
    # a file that is not the one the manifest was computed from is refused
    with pytest.raises(ValueError, match="rows"):
        finalize_manifest(manifest, {**paths, "train": paths["test"]})
    with pytest.raises(ValueError, match="no written file"):
        finalize_manifest(manifest, {"train": paths["train"]})


def test_same_clip_in_two_splits_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    # "dup" in nexar as test-public (-> test) and in dota as val (-> test): same split, allowed
    ok = clip("dup", "dota", "val")
    labels, videos, rejected = corpus(cfg, extra_dota=[ok])
    videos["nexar"] = pa.concat_tables(
        [videos["nexar"], table_from_rows("videos", [clip("dup", "nexar", "test-public")])]
    )
    labels["nexar"] = label_source(videos["nexar"], None, "nexar", cfg)
    build_benchmark(labels, videos, rejected, cfg)
    # as a train clip of nexar it lands in train or val while dota puts it in test
    videos["nexar"] = pa.concat_tables(
        [videos["nexar"].slice(0, 3), table_from_rows("videos", [clip("dup", "nexar", "train")])]
    )
    labels["nexar"] = label_source(videos["nexar"], None, "nexar", cfg)
    with pytest.raises(SplitLeakError, match="dup"):
        build_benchmark(labels, videos, rejected, cfg)


def test_labels_without_their_clip_are_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    videos["dota"] = videos["dota"].slice(1)  # drop d1
    with pytest.raises(ValueError, match="d1 is not in the videos table"):
        build_benchmark(labels, videos, rejected, cfg)
    with pytest.raises(ValueError, match="without their videos table"):
        build_benchmark(labels, {"nexar": videos["nexar"]}, rejected, cfg)


def test_empty_corpus(tmp_path):
    cfg = make_cfg(tmp_path)
    splits, manifest = build_benchmark({}, {}, {}, cfg)
    assert all(t.num_rows == 0 for t in splits.values())
    assert manifest["totals"]["train"] == {"ticks": 0, "clips": 0, "prefix_clips": 0}


def rules_beliefs(labels, videos, cfg):
    from vlalert.beliefs.stage import generate_beliefs

    return {s: generate_beliefs(labels[s], videos[s], cfg) for s in labels}


def test_beliefs_are_joined_on_trainable_ticks_only(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    beliefs = rules_beliefs(labels, videos, cfg)
    splits, manifest = build_benchmark(labels, videos, rejected, cfg, beliefs)
    table = pa.concat_tables(splits.values())
    trainable = [
        not e and p is None
        for e, p in zip(table["excluded"].to_pylist(), table["parent_id"].to_pylist(), strict=True)
    ]
    has_belief = [b is not None for b in table["belief"].to_pylist()]
    assert has_belief == trainable
    assert sum(trainable) == sum(t.num_rows for t in beliefs.values())
    rows = zip(
        table["belief_text"].to_pylist(),
        table["belief"].to_pylist(),
        table["action"].to_pylist(),
        strict=True,
    )
    for text, belief, action in rows:
        if text is None:
            continue
        assert text.startswith("<|BELIEF|>") and text.endswith("<|/BELIEF|>")
        if action == "ALERT":
            assert json.loads(belief)["danger"] >= 0.5
    counts = manifest["beliefs"]["nexar"]
    assert counts["providers"] == {
        "rules": sum(trainable[i] for i, s in enumerate(table["source"].to_pylist()) if s == "nexar")
    }
    assert sum(counts["hazard_x_action"].values()) == counts["providers"]["rules"]


def test_a_trainable_tick_without_belief_is_an_error(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    beliefs = rules_beliefs(labels, videos, cfg)
    beliefs["dota"] = beliefs["dota"].slice(1)
    with pytest.raises(ValueError, match=r"beliefs\[dota\]: 1 trainable tick\(s\) have no belief"):
        build_benchmark(labels, videos, rejected, cfg, beliefs)


def test_a_belief_for_an_unknown_tick_is_an_error(tmp_path):
    cfg = make_cfg(tmp_path)
    labels, videos, rejected = corpus(cfg)
    beliefs = rules_beliefs(labels, videos, cfg)
    extra = beliefs["nexar"].slice(0, 1).to_pylist()[0] | {"tick": 999}
    beliefs["nexar"] = pa.concat_tables([beliefs["nexar"], table_from_rows("beliefs", [extra])])
    with pytest.raises(ValueError, match=r"beliefs\[nexar\]: .* beliefs for .* trainable ticks"):
        build_benchmark(labels, videos, rejected, cfg, beliefs)


def consensus_table(rows):
    return table_from_rows(
        "consensus",
        [
            {
                "video_id": vid,
                "csv_id": f"{vid}.mp4",
                "csv_file": "c.csv",
                "decision": "excluded" if category.startswith("excluded") else "applied",
                "article_category": category,
                "peer_test": "not in test split" not in category,
                "reason": "-",
            }
            for vid, category in rows
        ],
    )


def test_clips_peers_evaluate_on_never_land_in_train_or_val(tmp_path):
    cfg = make_cfg(tmp_path)
    extra = [clip(f"t{i}", "dota", "train", n_frames=301, t_r=6.0, t_e=8.0) for i in range(12)]
    labels, videos, rejected = corpus(cfg, extra_dota=extra)
    hashed = {c["video_id"]: assign_split(c["video_id"], "train", {}, cfg.splits.fractions, cfg.splits.salt)
              for c in videos["dota"].to_pylist() if c["official_split"] == "train"}  # fmt: skip
    in_trainval = sorted(v for v, s in hashed.items() if s != "test")
    assert len(in_trainval) >= 3
    peer, excluded = in_trainval[0], in_trainval[1]
    consensus = {
        "nexar": consensus_table([]),
        "dota": consensus_table([(peer, "pos-ego"), (excluded, "excluded (not in test split)")]),
    }
    splits, manifest = build_benchmark(labels, videos, rejected, cfg, consensus=consensus)
    where = {v: s for s, t in splits.items() for v in t.column("video_id").to_pylist()}
    assert where[peer] == "test"  # a consensus row: peers evaluate on it
    assert where[excluded] == hashed[excluded]  # "excluded (not in test split)": not a peer test clip
    assert manifest["moved_to_test"] == {
        "dota": [{"video_id": peer, "assigned": hashed[peer], "why": "BADAS consensus row in c.csv"}]
    }
    strict = cfg.model_copy(update={"strict": True})
    with pytest.raises(ValueError, match=f"source dota: clips that peers evaluate on.*{peer}"):
        build_benchmark(labels, videos, rejected, strict, consensus=consensus)


def test_source_whose_train_positives_give_no_alert_is_flagged(tmp_path):
    cfg = make_cfg(tmp_path)
    extra = [clip(f"t{i}", "dota", "train", n_frames=301, t_r=6.0, t_e=8.0) for i in range(6)]
    _, videos, rejected = corpus(cfg, extra_dota=extra)
    no_gate = {s: table_from_rows("gate", [
        {"video_id": v, "t_s": float(t), "p_collision": None, "provider": "none"}
        for v in t_.column("video_id").to_pylist() for t in range(2, 13)
    ]) for s, t_ in videos.items()}  # fmt: skip
    labels = {s: label_source(v, no_gate[s], s, cfg) for s, v in videos.items()}
    splits, manifest = build_benchmark(labels, videos, rejected, cfg)
    assert manifest["positives"]["train"]["dota"] > 0
    assert manifest["ticks"]["train"]["dota"]["ALERT"] == 0
    [warning] = manifest["warnings"]
    assert "source dota:" in warning and "'alert->observe:gate-missing'" in warning
    assert manifest["rules_by_split"]["train"]["dota"]["alert->observe:gate-missing"] > 0
    with pytest.raises(ValueError, match="source dota: .* 0 ALERT ticks"):
        build_benchmark(labels, videos, rejected, cfg.model_copy(update={"strict": True}))
