"""scene_truth.json: the demo renderer's ground truth, in one format read by the gate and beliefs stages.

It exists for synthetic clips only: the `scene` gate provider and the rule-based belief provider
read it, and refusing a file of the wrong format or source kind keeps it from ever standing in
for real annotations.
"""

from __future__ import annotations

import json
import os
from typing import Any

SCENE_TRUTH_FORMAT = "vlalert-scene-truth/1"


def read_scene_truth(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, Any]:
    """The whole scene_truth.json, checked for its format tag (and its source kind, when given)."""
    with open(path, encoding="utf-8") as fh:
        truth = json.load(fh)
    if not isinstance(truth, dict) or truth.get("format") != SCENE_TRUTH_FORMAT:
        found = truth.get("format") if isinstance(truth, dict) else type(truth).__name__
        raise ValueError(
            f"{path}: not a scene truth file (format {found!r}, expected {SCENE_TRUTH_FORMAT!r})"
        )
    if kind is not None and truth.get("source") not in (None, kind):
        raise ValueError(
            f"{path}: scene truth is for source kind {truth.get('source')!r}, but this source is {kind!r}"
        )
    return truth
