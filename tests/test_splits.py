import hashlib
from collections import Counter

import pytest

from vlalert.splits import assign_split, parent_id, stable_uniform

FR = {"train": 0.7, "val": 0.1, "test": 0.2}
SALT = "vlalert-v1"
IDS = [f"{i:05d}" for i in range(10_000)]


def test_stable_uniform_is_sha256_of_salt_and_id():
    digest = hashlib.sha256(b"vlalert-v1:00012").hexdigest()
    assert stable_uniform("00012", SALT) == int(digest[:16], 16) / 2**64
    assert 0.0 <= stable_uniform("00012", SALT) < 1.0


def test_hash_split_is_stable_and_follows_fractions():
    first = [assign_split(i, None, {}, FR, SALT) for i in IDS]
    assert first == [assign_split(i, None, {}, FR, SALT) for i in IDS]
    counts = Counter(first)
    assert counts["train"] / 10_000 == pytest.approx(0.7, abs=0.02)
    assert counts["val"] / 10_000 == pytest.approx(0.1, abs=0.02)
    assert counts["test"] / 10_000 == pytest.approx(0.2, abs=0.02)
    # another salt gives another (equally proportioned) assignment
    other = [assign_split(i, None, {}, FR, "other-salt") for i in IDS]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 2_000


def test_official_split_maps():
    m = {"train": "trainval", "test-public": "test", "val": "val", "test-private": "hash"}
    assert {assign_split(i, "test-public", m, FR, SALT) for i in IDS[:500]} == {"test"}
    assert {assign_split(i, "val", m, FR, SALT) for i in IDS[:500]} == {"val"}
    trainval = Counter(assign_split(i, "train", m, FR, SALT) for i in IDS)
    assert set(trainval) == {"train", "val"}
    assert trainval["train"] / 10_000 == pytest.approx(0.7 / 0.8, abs=0.02)
    # "hash", an official split the map does not name, and no official split: all three fractions
    for official in ("test-private", "extra", None):
        counts = Counter(assign_split(i, official, m, FR, SALT) for i in IDS)
        assert counts["test"] / 10_000 == pytest.approx(0.2, abs=0.02)
        assert counts["val"] / 10_000 == pytest.approx(0.1, abs=0.02)


def test_zero_fraction_split_never_chosen():
    fr = {"train": 0.8, "val": 0.2, "test": 0.0}
    assert "test" not in {assign_split(i, None, {}, fr, SALT) for i in IDS[:2000]}
    with pytest.raises(ValueError, match="zero weight"):
        assign_split("x", "train", {"train": "trainval"}, {"train": 0.0, "val": 0.0, "test": 1.0}, SALT)


def test_prefix_follows_parent():
    assert parent_id("00012#prefix") == "00012"
    assert parent_id("00012") == "00012"
    m = {"train": "trainval"}
    for i in IDS[:1000]:
        assert assign_split(i + "#prefix", "train", m, FR, SALT) == assign_split(i, "train", m, FR, SALT)
        assert assign_split(i + "#prefix", None, {}, FR, SALT) == assign_split(i, None, {}, FR, SALT)
