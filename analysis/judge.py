"""The seam every judge implements, so the controller can consult any of them per look."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from analysis.judge_result import JudgeResult
from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import MetricPair


class Decision(StrEnum):
    """What a look tells the controller to do."""

    CONTINUE = "continue"  # no conclusion yet: keep the step going / advance as planned
    PROMOTE = "promote"  # confidently no worse on every critical metric: promote now
    ROLLBACK = "rollback"  # the canary is worse: roll back now
    INCONCLUSIVE = "inconclusive"  # a Marginal look: counts against inconclusiveLimit


@dataclass(frozen=True)
class LookOutcome:
    result: JudgeResult
    decision: Decision
    # JSON-serialisable state carried to the next look (the controller stores it, so a
    # resumed rollout continues the same sequential test).
    state: dict[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    name: str
    # True when the judge wants all data since the analysis started at every look
    # (Kayenta's way); False when it wants only the window since its last look and
    # carries what came before in its state (the sequential judge).
    cumulative: bool

    def look(
        self,
        data: Mapping[str, MetricPair],
        configs: Sequence[MetricConfig],
        thresholds: Thresholds,
        state: Mapping[str, Any] | None,
        final: bool,
    ) -> LookOutcome:
        """Judge one look. `data` maps metric names to this look's window of data.

        `final` is True at the last planned look, where a judge that has not reached a
        boundary must still answer promote or roll back.
        """
        ...
