"""One-metric entry point for using the sequential judge as a library."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.judge import Decision
from analysis.judge_result import MetricResult
from analysis.metric_config import Direction, MetricConfig, Thresholds
from analysis.metric_data import Counts, Histogram, MetricData, MetricPair, Series
from analysis.sequential.judge import DEFAULT_ALPHA, SequentialJudge

LookData = MetricData | Histogram | Counts | Series


@dataclass(frozen=True)
class MetricLook:
    """The answer for one metric after one look."""

    decision: Decision
    result: MetricResult
    state: dict[str, Any]


def _as_data(x: LookData | None) -> MetricData:
    if x is None:
        return MetricData()
    if isinstance(x, MetricData):
        return x
    if isinstance(x, Histogram):
        return MetricData(histogram=x)
    if isinstance(x, Counts):
        return MetricData(counts=x)
    return MetricData(series=x)


def judge_look(baseline: LookData | None, canary: LookData | None,
               state: Mapping[str, Any] | None = None, *, name: str = "metric",
               direction: Direction = "increase", margin: float = 0.05,
               quantile: float | None = None, alpha: float = DEFAULT_ALPHA,
               must_have_data: bool = False, final: bool = False) -> MetricLook:
    """Judge one look of one metric with the sequential test and carry its state.

    `baseline` and `canary` hold THIS look's data only (a Histogram of per-request
    values, Counts of events/trials, a per-interval Series, or a MetricData holding any
    of them); `state` is what the previous call returned (None at the first look). The
    decision is ROLLBACK once the evidence that the canary is worse than `margin`
    reaches 1/alpha, PROMOTE once the evidence that it is within the margin does (or at
    `final` without a rollback), CONTINUE otherwise. The state is plain JSON.

    >>> from analysis.metric_data import Counts
    >>> from analysis.sequential import judge_look
    >>> look = judge_look(Counts(10, 10_000), Counts(60, 10_000), margin=0.1)
    >>> look.decision.value, look.result.classification.value
    ('rollback', 'High')
    >>> round(look.result.evidence.effect, 2)
    5.0
    >>> nxt = judge_look(Counts(3, 5_000), Counts(2, 5_000), state=None)
    >>> nxt.decision.value
    'continue'
    >>> later = judge_look(Counts(4, 5_000), Counts(5, 5_000), state=nxt.state)
    """
    cfg = MetricConfig(name=name, direction=direction, margin=margin, quantile=quantile,
                       critical=True, must_have_data=must_have_data)
    pair = MetricPair(_as_data(baseline), _as_data(canary))
    outcome = SequentialJudge(alpha=alpha).look({name: pair}, [cfg], Thresholds(), state,
                                                final)
    return MetricLook(outcome.decision, outcome.result.results[0], outcome.state)
