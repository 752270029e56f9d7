"""Kayenta's weighted-sum scorer and threshold verdict.

Group score = 100 * Pass / (Pass + High + Low + NodataFailMetric); Nodata and Error
metrics are left out. The summary is the weighted sum of group scores, except that a
critical metric that did not pass, or Nodata on at least half of the metrics, scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from analysis.judge_result import Classification, GroupScore, MetricResult, Verdict
from analysis.metric_config import Thresholds

NODATA_THRESHOLD_PERCENT = 50.0
_COUNTED = (Classification.PASS, Classification.HIGH, Classification.LOW,
            Classification.NODATA_FAIL)


@dataclass(frozen=True)
class ScoreSummary:
    group_scores: tuple[GroupScore, ...]
    score: float
    reason: str


def round_half_up(value: float, places: int = 2) -> float:
    """Round as Kayenta does: half away from zero on the shortest decimal form."""
    quantum = Decimal(1).scaleb(-places)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def group_scores(results: Sequence[MetricResult]) -> tuple[GroupScore, ...]:
    labels: dict[str, list[Classification]] = {}
    for r in results:
        for g in r.groups:
            labels.setdefault(g, []).append(r.classification)
    out = []
    for name, group in labels.items():
        counted = [c for c in group if c in _COUNTED]
        if not counted:
            out.append(GroupScore(name, 0.0, no_data=True))
        else:
            passed = sum(1 for c in counted if c is Classification.PASS)
            out.append(GroupScore(name, 100.0 * passed / len(counted)))
    return tuple(out)


def _summary(groups: Sequence[GroupScore], weights: Mapping[str, float]) -> float:
    unweighted = [g for g in groups if g.name not in weights]
    # Groups without a weight share what the given weights leave; a weighted group that
    # has no metrics simply contributes nothing.
    shared = (100.0 - sum(weights.values())) / len(unweighted) if unweighted else 0.0
    total = 0.0
    for g in groups:
        effective = 100.0 if g.no_data else g.score
        total += effective * (weights.get(g.name, shared) / 100.0)
    return round_half_up(total, 2)


def score(results: Sequence[MetricResult], weights: Mapping[str, float]) -> ScoreSummary:
    """Score the results of one look; muted metrics are reported but not scored."""
    scored = [r for r in results if not r.muted]
    groups = group_scores(scored)
    failures = [r for r in scored if r.critical and r.classification is not Classification.PASS]
    if failures:
        first = failures[0]
        why = first.reason or f"{first.name} was classified as {first.classification.value}"
        return ScoreSummary(groups, 0.0, f"Canary Failed: {why}")
    nodata = sum(1 for r in scored if r.classification is Classification.NODATA)
    if scored and 100.0 * nodata / len(scored) >= NODATA_THRESHOLD_PERCENT:
        return ScoreSummary(
            groups, 0.0,
            f"Canary Failed: {NODATA_THRESHOLD_PERCENT:g}% or more metrics returned NODATA")
    return ScoreSummary(groups, _summary(groups, weights), "")


def verdict(summary_score: float, thresholds: Thresholds) -> Verdict:
    if summary_score >= thresholds.pass_:
        return Verdict.PASS
    if summary_score >= thresholds.marginal:
        return Verdict.MARGINAL
    return Verdict.FAIL
