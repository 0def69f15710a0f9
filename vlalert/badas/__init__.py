"""Open-BADAS (Nexar's V-JEPA2 collision predictor) as the `badas` gate provider.

- `vlalert.badas.config`: `BadasConfig` (pydantic, no torch), nested in the workflow config as `gate.badas`.
- `vlalert.badas.windows`: which frames make the 16-frame, 8 fps window of a tick (pure).
- `vlalert.badas.model`: the network (V-JEPA2 encoder + attentive probe + MLP head + temperature),
  its input preprocessing, and loading / saving of weights.
- `vlalert.badas.provider`: `badas_scores` (a GATE table) and `BadasScorer` (what `vlalert.gate` calls).

This module imports nothing heavy: torch and transformers load only with `model` / `provider`.
"""

from vlalert.badas.config import BadasConfig
from vlalert.badas.windows import BADAS_FRAMES, BADAS_SAMPLE_FPS, Window, badas_window

__all__ = ["BADAS_FRAMES", "BADAS_SAMPLE_FPS", "BadasConfig", "Window", "badas_window"]
