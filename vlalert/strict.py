"""The base of every config model: unknown keys are refused (a typo fails, it is not ignored) and a
parsed config is frozen. Its own module, below every stage's config module and `vlalert.config`
(which nests them all), so each of them can import it without a circle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
