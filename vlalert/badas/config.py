"""Configuration of the `badas` gate provider (nested in the workflow config as `gate.badas`).

Pure pydantic, no torch: `vlalert.config` imports it, and the Snakefile must parse without torch.
It says where the weights come from and how windows are fed; the architecture itself (widths,
depths, temperature, preprocessing) travels with the weights in their config.json
(`vlalert.badas.model.BadasModelConfig`), so a checkpoint can never be run with the wrong shape.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from vlalert.badas.windows import BADAS_FRAMES, BADAS_SAMPLE_FPS
from vlalert.strict import StrictModel


class BadasConfig(StrictModel):
    """Where the Open-BADAS weights are and how the provider runs them.

    Weights: either `model_path` (a directory holding config.json + model.safetensors, or a
    .safetensors file with its config.json beside it or at `config_path`; the released
    `badas_open.pth` is converted once with `vlalert convert-badas`), or `hub_repo` at a pinned
    `hub_revision` (files `hub_weights` and `hub_config` fetched once with `hf_hub_download` into the
    Hugging Face cache, or `cache_dir`). Neither is needed unless the provider is actually `badas`;
    `check_weights_source` says what is missing.
    """

    model_config = StrictModel.model_config | ConfigDict(protected_namespaces=())  # fields named model_*

    model_path: str | None = None
    config_path: str | None = None  # only for a model_path that is a .safetensors file
    hub_repo: str | None = None
    hub_revision: str | None = None  # a commit sha or tag; required with hub_repo (reproducible runs)
    hub_weights: str = "model.safetensors"
    hub_config: str = "config.json"
    cache_dir: str | None = None
    device: str = "auto"  # auto: cuda when available, else cpu; or any torch device string ("cuda:1")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "auto"  # auto: bfloat16 on cuda, float32 on cpu
    )
    batch_size: int = Field(16, ge=1, le=1024)  # windows per forward pass
    temperature: float | None = Field(None, gt=0)  # None: the temperature in the weights' config.json
    frames: int = Field(BADAS_FRAMES, ge=1, le=128)  # samples per window; a multiple of the tubelet size
    sample_fps: float = Field(BADAS_SAMPLE_FPS, gt=0, le=120)  # samples are 1/sample_fps s apart
    # badas: Open-BADAS's own timing (a tick at t takes the score of 8 fps sample floor(8t), whose
    # window is the 16 samples before it, frames int(round(i * fps / 8))); latest: the window's last
    # sample at t itself, frames floor(time * fps). See vlalert.badas.windows.
    timing: Literal["badas", "latest"] = "badas"
    # A window that reaches before the clip's first frame (ticks before 2 s): "null" gives no score
    # there (Open-BADAS's per-frame output is NaN for its first 16 samples), "black" pads it with
    # black frames (their pad_window_frames), "repeat_first" with frame 0.
    incomplete_window: Literal["null", "black", "repeat_first"] = "null"
    progress: bool = True  # tqdm bar over clips

    @model_validator(mode="after")
    def _one_source(self) -> BadasConfig:
        if self.model_path and self.hub_repo:
            raise ValueError("gate.badas: set either model_path or hub_repo, not both")
        if self.hub_repo and not self.hub_revision:
            raise ValueError(
                "gate.badas.hub_revision is required with hub_repo (pin a commit sha or tag so that "
                "a rerun uses the same weights)"
            )
        if self.config_path and not self.model_path:
            raise ValueError("gate.badas.config_path only applies with model_path")
        return self

    def check_weights_source(self) -> str | None:
        """Why the provider cannot find weights with this config, or None when it can try."""
        if not self.model_path and not self.hub_repo:
            return (
                "gate provider badas needs gate.badas.model_path (a local directory with config.json + "
                "model.safetensors) or gate.badas.hub_repo + gate.badas.hub_revision"
            )
        return None
