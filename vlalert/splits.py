"""Which split (train / val / test) a clip belongs to.

A split depends only on the clip's id, its source's official split, the source's split_map and
the salted hash, never on which other clips happen to be present: adding a source or rejecting a
clip never moves any other clip between splits, and a rerun on another machine gives the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from vlalert.config import SPLITS

PREFIX_SUFFIX = "#prefix"  # a prefix negative clip is `{parent video_id}#prefix` (see vlalert.labels)


def parent_id(video_id: str) -> str:
    """The clip a `{id}#prefix` clip was cut from; the id itself for an ordinary clip."""
    return video_id[: -len(PREFIX_SUFFIX)] if video_id.endswith(PREFIX_SUFFIX) else video_id


def stable_uniform(video_id: str, salt: str) -> float:
    """A uniform number in [0, 1) from sha256(f"{salt}:{video_id}"): the same everywhere, forever."""
    digest = hashlib.sha256(f"{salt}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _pick(u: float, names: tuple[str, ...], fractions: Mapping[str, float]) -> str:
    total = sum(fractions[n] for n in names)
    if total <= 0:
        raise ValueError(f"splits.fractions give zero weight to all of {list(names)}")
    acc = 0.0
    for name in names:
        acc += fractions[name] / total
        if u < acc:
            return name
    return [n for n in names if fractions[n] > 0][-1]  # u just below 1 and rounding in acc


def assign_split(
    video_id: str,
    official_split: str | None,
    split_map: Mapping[str, str],
    fractions: Mapping[str, float],
    salt: str,
) -> str:
    """The split of one clip.

    split_map maps the source's official split to a split (an official "train", "val" or "test"
    that the map does not name is used as it is), to "hash" (stable hash over the three
    fractions) or to "trainval" (stable hash over train and val in proportion
    fractions[train]:fractions[val], for sources whose official test split is kept as test).
    A clip without official split, or with one the map does not name, is hashed over all three.
    A prefix clip `{id}#prefix` hashes its parent's id, so it always lands in its parent's split.
    """
    if official_split is None:
        target = "hash"
    else:  # an official split named like ours is used as published unless the map says otherwise
        target = split_map.get(official_split, official_split if official_split in SPLITS else "hash")
    if target in SPLITS:
        return target
    u = stable_uniform(parent_id(video_id), salt)
    if target == "trainval":
        return _pick(u, ("train", "val"), fractions)
    if target == "hash":
        return _pick(u, SPLITS, fractions)
    raise ValueError(f"split_map target {target!r} is not one of {list(SPLITS)}, 'hash' or 'trainval'")
