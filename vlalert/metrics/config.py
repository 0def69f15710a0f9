"""Every constant of the scoring stage, in one validated model.

The lead nests `ScoringConfig` into the workflow config, so a change of any constant reruns the
score stage only. The defaults are the values of DESIGN.md ("Scoring"); the symbols keep the
names used there (α, β, γ, δ, L) so the formula and the config read the same.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from vlalert.strict import StrictModel


class ScoringConfig(StrictModel):
    """Constants of DAUS and of the standard clip metrics."""

    # DAUS timeliness: window W = [t_r - early_tol_s, t_event].
    early_tol_s: float = Field(1.0, ge=0)
    # Credit of the first ALERT onset in W at t_a: alpha + (1 - alpha) * min((t_event - t_a) / L_s, 1).
    alpha: float = Field(0.5, ge=0, le=1)
    L_s: float = Field(3.0, gt=0)
    # Credit of an OBSERVE onset in [t_r - observe_s, t_event] when no ALERT onset lies in W.
    beta: float = Field(0.3, ge=0, le=1)
    # Cost of each ALERT onset before W (positives) and of each ALERT onset (negatives).
    gamma: float = Field(0.25, ge=0)
    # Cost, on negatives, of the fraction of ticks at OBSERVE or above.
    delta: float = Field(0.5, ge=0)
    # Should equal labels.observe_s, so that OBSERVE is credited where the labels ask for it.
    observe_s: float = Field(4.0, ge=0)
    # R@k s: recall of an ALERT at least k seconds before the event, one metric per k.
    recall_k_s: list[float] = Field(default_factory=lambda: [1.0, 2.0])
    # TTA@R80: the TTA at the recall level nearest this target (the literature's convention).
    tta_recall: float = Field(0.8, gt=0, le=1)

    @field_validator("recall_k_s")
    @classmethod
    def _recall_ks(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("recall_k_s must name at least one k")
        if any(k < 0 for k in v):
            raise ValueError("recall_k_s must be non-negative")
        if len(set(v)) != len(v):
            raise ValueError("recall_k_s must not repeat a value")
        return sorted(v)

    @model_validator(mode="after")
    def _observe_below_alert(self) -> ScoringConfig:
        # An ALERT in time must always be worth more than an OBSERVE, else a policy is paid for
        # never alerting.
        if self.beta > self.alpha:
            raise ValueError("beta (OBSERVE credit) must not exceed alpha (least in-window ALERT credit)")
        return self
