"""Open-BADAS (Nexar's V-JEPA2 collision predictor) as the `badas` gate provider.

- `vlalert.badas.config`: `BadasConfig` (pydantic, no torch), nested in the workflow config as `gate.badas`.
- `vlalert.badas.windows`: which frames make the 16-frame, 8 fps window of a tick, with Open-BADAS's
  own timing (pure).
- `vlalert.badas.model`: the network (V-JEPA2 encoder + their temporal-attention probe + MLP head +
  temperature, with their module and key names), their input preprocessing, safetensors loading.
- `vlalert.badas.convert`: `vlalert convert-badas`, their released .pth -> safetensors, once.
- `vlalert.badas.provider`: `badas_scores` (a GATE table) and `BadasScorer` (what `vlalert.gate` calls).

This module imports nothing heavy: torch and transformers load only with `model` / `provider` / `convert`.
"""

from vlalert.badas.config import BadasConfig
from vlalert.badas.windows import BADAS_FRAMES, BADAS_SAMPLE_FPS, BLACK, Window, badas_window

__all__ = ["BADAS_FRAMES", "BADAS_SAMPLE_FPS", "BLACK", "BadasConfig", "Window", "badas_window"]
