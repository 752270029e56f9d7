"""How one metric is judged: Kayenta's per-metric canary settings plus our own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["increase", "decrease", "either"]
NanStrategy = Literal["remove", "replace"]
OutlierStrategy = Literal["keep", "remove"]
EffectMeasure = Literal["meanRatio", "cles"]


@dataclass(frozen=True)
class EffectSize:
    """Effect-size gates; Kayenta's defaults are 1.0 (0.5 for CLES), i.e. no gate."""

    measure: EffectMeasure = "meanRatio"
    allowed_increase: float | None = None
    allowed_decrease: float | None = None
    critical_increase: float | None = None
    critical_decrease: float | None = None

    def _default(self) -> float:
        return 0.5 if self.measure == "cles" else 1.0

    def thresholds(self) -> tuple[float, float, float, float]:
        """(allowedDecrease, allowedIncrease, criticalDecrease, criticalIncrease)."""
        d = self._default()

        def pick(v: float | None) -> float:
            return d if v is None else v

        return (
            pick(self.allowed_decrease),
            pick(self.allowed_increase),
            pick(self.critical_decrease),
            pick(self.critical_increase),
        )


@dataclass(frozen=True)
class MetricConfig:
    """One metric as a judge sees it.

    `direction` says which change is bad: "increase" for latency and errors.
    `margin` is the practical-significance margin of the sequential judge: the relative
    worsening that is still acceptable (0.05 = fail only if worse by more than 5%).
    """

    name: str
    direction: Direction = "either"
    critical: bool = False
    must_have_data: bool = False
    muted: bool = False
    groups: tuple[str, ...] = ()
    nan_strategy: NanStrategy = "remove"
    outlier_strategy: OutlierStrategy = "keep"
    outlier_factor: float = 3.0
    effect_size: EffectSize = field(default_factory=EffectSize)
    tolerance: float = 0.25
    confidence_level: float = 0.98
    margin: float = 0.05
    # Which quantity of a distribution the sequential judge tests when it has a
    # histogram: None tests stochastic dominance; 0.99 tests the p99 tail.
    quantile: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds for Pass and Marginal, Kayenta's `scoreThresholds`."""

    pass_: float = 75.0
    marginal: float = 50.0
