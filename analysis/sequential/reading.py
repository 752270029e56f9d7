"""What one sequential test says about one metric after a look."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.judge_result import EMPTY_STATS, SideStats


@dataclass(frozen=True)
class Reading:
    """The evidence of one metric's sequential test, cumulated over all looks so far.

    `log_e_worse` is the log e-value against "the canary is no worse than the margin"
    (rollback evidence); `log_e_within` the log e-value against "the canary is worse
    than the margin" (promotion evidence). `effect` is the estimated relative change of
    the canary (+0.1 = 10% higher) and `interval` its confidence sequence, both on the
    scale named in `details["scale"]`-free words of `method`.
    `worse_side` is "increase" or "decrease": which way the rollback evidence points.
    """

    log_e_worse: float
    log_e_within: float
    effect: float
    interval: tuple[float, float]
    method: str
    worse_side: str = "increase"
    details: dict[str, float] = field(default_factory=dict)
    baseline: SideStats = EMPTY_STATS
    canary: SideStats = EMPTY_STATS
    ratio: float = math.nan
    has_data: bool = True
