"""The tiny model the VLM tests share: its corpus, its seed, and the two beliefs the tests write.

conftest.py builds it once per session from these (fixture `tiny_model_dir`); a test that needs a
model of its own (another seed, another corpus) calls `build_tiny_model` itself.
"""

from __future__ import annotations

from vlalert.beliefs.schema import Belief
from vlalert.beliefs.text import target_text

ALERT_BELIEF = Belief(
    hazard="vehicle", where="ahead", motion="braking", ttc_s=1.5, danger=0.8, ego_involved=True
)
CLEAR_BELIEF = Belief(hazard="none", where="none", motion="none", ttc_s=None, danger=0.0, ego_involved=False)
ALERT_ANALYSIS = "A car ahead brakes hard."
CLEAR_ANALYSIS = "The road is clear."

TINY_SEED = 11
TINY_CORPUS: list[str] = [
    target_text(ALERT_ANALYSIS, ALERT_BELIEF, "ALERT"),
    target_text(CLEAR_ANALYSIS, CLEAR_BELIEF, "SILENT"),
] * 4
