"""The Kayenta-compatible `mann-whitney` judge: Kayenta's per-metric classifier and
weighted-sum scorer behind the `Judge` seam.

It tests once per look at a fixed confidence and has no early stop: it never answers
PROMOTE, only ROLLBACK (Fail), INCONCLUSIVE (Marginal) or CONTINUE (Pass).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.judge import Decision, LookOutcome
from analysis.judge_result import Classification, Evidence, JudgeResult, MetricResult, Verdict
from analysis.kayenta_classifier import MetricClassification, classify_mann_whitney, prepare
from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import FloatArray, Histogram, MetricData, MetricPair
from analysis.scoring import score, verdict
from analysis.summary_stats import summarize

# A histogram is expanded into one sample per observation; beyond this many the
# counts are scaled down (keeping the shape) so a look stays fast on busy services.
MAX_HISTOGRAM_SAMPLES = 20_000

_DECISIONS = {Verdict.FAIL: Decision.ROLLBACK, Verdict.MARGINAL: Decision.INCONCLUSIVE,
              Verdict.PASS: Decision.CONTINUE}


def histogram_samples(hist: Histogram, limit: int = MAX_HISTOGRAM_SAMPLES) -> FloatArray:
    """One value per observation, at its bucket's midpoint (the lower bound for an
    open-ended last bucket; half the first bound for the first bucket)."""
    ub = hist.upper_bounds
    if ub.size == 0 or hist.total <= 0:
        return np.zeros(0, dtype=np.float64)
    lower = np.concatenate(([min(0.0, float(ub[0]))], ub[:-1]))
    mids = np.where(np.isfinite(ub), (lower + ub) / 2, lower)
    counts = hist.counts.astype(np.float64)
    if hist.total > limit:
        counts = counts * (limit / hist.total)
    reps = np.rint(counts).astype(np.int64)
    return np.repeat(mids, reps)


def samples_of(data: MetricData | None) -> FloatArray:
    """The values this judge ranks: the series, else histogram samples, else the ratio."""
    if data is None:
        return np.zeros(0, dtype=np.float64)
    if data.series is not None:
        return data.series.values.astype(np.float64)
    if data.histogram is not None:
        return histogram_samples(data.histogram)
    if data.counts is not None and data.counts.trials > 0:
        return np.array([data.counts.events / data.counts.trials], dtype=np.float64)
    return np.zeros(0, dtype=np.float64)


def _evidence(cfg: MetricConfig, mc: MetricClassification, baseline_mean: float) -> Evidence:
    shift = mc.shift
    if shift is None:
        return Evidence(method="mann-whitney", confidence=cfg.confidence_level)
    scale = abs(baseline_mean)

    def rel(x: float) -> float:
        return x / scale if scale > 0 else math.nan

    bound = cfg.tolerance * abs(shift.estimate)
    return Evidence(
        effect=rel(shift.estimate),
        interval=(rel(shift.lower), rel(shift.upper)),
        confidence=shift.confidence,
        p_value=shift.p_value,
        threshold=rel(bound),
        method="mann-whitney",
        details={"estimate": shift.estimate, "lower": shift.lower, "upper": shift.upper,
                 "bound": bound, "effectSize": mc.effect_size},
    )


def judge_metric(cfg: MetricConfig, pair: MetricPair | None,
                 root_tolerance: float | None = None,
                 tags: Mapping[str, str] | None = None) -> MetricResult:
    """Classify one metric of one look, Kayenta's way."""
    baseline = prepare(samples_of(pair.baseline if pair else None), cfg.nan_strategy,
                       cfg.outlier_strategy, cfg.outlier_factor)
    canary = prepare(samples_of(pair.canary if pair else None), cfg.nan_strategy,
                     cfg.outlier_strategy, cfg.outlier_factor)
    b_stats, c_stats = summarize(baseline), summarize(canary)
    common: dict[str, Any] = {"name": cfg.name, "groups": cfg.groups, "baseline": b_stats,
                              "canary": c_stats, "muted": cfg.muted, "tags": dict(tags or {})}
    try:
        mc = classify_mann_whitney(
            baseline, canary, direction=cfg.direction, nan_strategy=cfg.nan_strategy,
            critical=cfg.critical, must_have_data=cfg.must_have_data,
            tolerance=cfg.tolerance, confidence_level=cfg.confidence_level,
            effect_size=cfg.effect_size, name=cfg.name,
            seed=zlib.crc32(cfg.name.encode()), root_tolerance=root_tolerance)
    except (ValueError, ArithmeticError) as exc:
        # Kayenta reports a failed classification as Error and does not fail on it.
        return MetricResult(classification=Classification.ERROR,
                            reason=f"Metric classification failed: {exc}", critical=False,
                            evidence=Evidence(method="mann-whitney"), **common)
    return MetricResult(classification=mc.classification, reason=mc.reason,
                        critical=mc.critical, ratio=mc.deviation,
                        evidence=_evidence(cfg, mc, b_stats.mean), **common)


class MannWhitneyJudge:
    """Kayenta's NetflixACAJudge semantics; `group_weights` is the canary config's
    `classifier.groupWeights`. `root_tolerance=1e-4` reproduces R's and Kayenta's
    interval ends exactly; the default solves them precisely."""

    name = "mann-whitney"
    # Kayenta judges everything since the canary started at every look, so the
    # controller hands it the cumulative window rather than the step's.
    cumulative = True

    def __init__(self, group_weights: Mapping[str, float] | None = None,
                 root_tolerance: float | None = None) -> None:
        self.group_weights = dict(group_weights or {})
        self.root_tolerance = root_tolerance

    def judge(self, data: Mapping[str, MetricPair], configs: Sequence[MetricConfig],
              thresholds: Thresholds,
              tags: Mapping[str, Mapping[str, str]] | None = None) -> JudgeResult:
        results = tuple(
            judge_metric(cfg, data.get(cfg.name), self.root_tolerance,
                         (tags or {}).get(cfg.name))
            for cfg in configs)
        summary = score(results, self.group_weights)
        v = verdict(summary.score, thresholds)
        return JudgeResult(results=results, group_scores=summary.group_scores,
                           score=summary.score, verdict=v, reason=summary.reason,
                           judge=self.name)

    def look(self, data: Mapping[str, MetricPair], configs: Sequence[MetricConfig],
             thresholds: Thresholds, state: Mapping[str, Any] | None,
             final: bool) -> LookOutcome:
        result = self.judge(data, configs, thresholds)
        return LookOutcome(result=result, decision=_DECISIONS[result.verdict], state={})
