"""The `sequential` judge: anytime-valid rollback and promotion decisions per look."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.judge import Decision, LookOutcome
from analysis.judge_result import (
    Classification,
    Evidence,
    JudgeResult,
    MetricResult,
    Verdict,
)
from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import MetricData, MetricPair
from analysis.scoring import score, verdict
from analysis.sequential.counts_test import counts_update
from analysis.sequential.distribution_test import distribution_update
from analysis.sequential.reading import Reading
from analysis.sequential.series_test import DEFAULT_BATCH, series_update

STATE_VERSION = 2
# The default overall false-rollback bound. Ville's inequality is conservative for these
# e-processes at rollout lengths (the benchmark's A/A rate is a fraction of it), so
# 0.05 buys power while measured false rollbacks stay near 1% (README.md).
DEFAULT_ALPHA = 0.05
# Critical metrics get this many shares of alpha for one share of a non-critical one:
# they decide promotion, and their regressions matter most.
CRITICAL_WEIGHT = 2.0


def _kind(data: MetricData) -> str | None:
    if data.histogram is not None and data.histogram.total > 0:
        return "histogram"
    if data.counts is not None and data.counts.trials > 0:
        return "counts"
    if data.series is not None and bool((data.series.values == data.series.values).any()):
        return "series"
    return None


def alpha_shares(configs: Sequence[MetricConfig], alpha: float) -> dict[str, float]:
    """Bonferroni split of alpha over the scored metrics, critical ones weighted up."""
    scored = [c for c in configs if not c.muted]
    weights = {c.name: (CRITICAL_WEIGHT if c.critical else 1.0) for c in scored}
    total = sum(weights.values()) or 1.0
    return {name: alpha * w / total for name, w in weights.items()}


@dataclass(frozen=True)
class _MetricOutcome:
    result: MetricResult
    worse: bool
    within: bool
    missing: bool  # data a promotion needs are missing


class SequentialJudge:
    """Anytime-valid judge: the chance of ever rolling back a canary that is no worse
    than its margins is at most `alpha`, however many looks are taken.

    `series_batch` is the number of paired intervals averaged into one observation of
    the series test; it should span several correlation times of the series.
    """

    name = "sequential"
    cumulative = False  # each look brings only its own window; earlier evidence is state

    def __init__(self, alpha: float = DEFAULT_ALPHA, series_batch: int = DEFAULT_BATCH) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if series_batch < 2:
            raise ValueError(f"series_batch must be at least 2, got {series_batch}")
        self.alpha = alpha
        self.series_batch = series_batch

    def look(self, data: Mapping[str, MetricPair], configs: Sequence[MetricConfig],
             thresholds: Thresholds, state: Mapping[str, Any] | None,
             final: bool) -> LookOutcome:
        prev = dict(state or {})
        metric_states: dict[str, Any] = dict(prev.get("metrics", {}))
        shares = alpha_shares(configs, self.alpha)
        outcomes: list[_MetricOutcome] = []
        for cfg in configs:
            a = shares.get(cfg.name, self.alpha / max(len(configs), 1))
            outcome, metric_states[cfg.name] = self._metric(
                cfg, data.get(cfg.name), metric_states.get(cfg.name), a)
            outcomes.append(outcome)
        new_state = {"version": STATE_VERSION, "looks": int(prev.get("looks", 0)) + 1,
                     "alpha": self.alpha, "metrics": metric_states}
        return self._decide(outcomes, thresholds, final, new_state)

    def _metric(self, cfg: MetricConfig, pair: MetricPair | None, mstate: Any,
                alpha: float) -> tuple[_MetricOutcome, Any]:
        kind = None
        if pair is not None:
            kb, kc = _kind(pair.baseline), _kind(pair.canary)
            kind = kb if kb == kc else None
        if kind is None and mstate:
            kind = mstate.get("kind")
        fresh = pair is not None and not pair.baseline.empty and not pair.canary.empty
        try:
            reading, new_state = self._update(cfg, kind, pair, mstate, alpha)
        except (ValueError, FloatingPointError) as exc:
            result = MetricResult(cfg.name, Classification.ERROR, f"could not judge: {exc}",
                                  cfg.critical, cfg.groups, muted=cfg.muted)
            return _MetricOutcome(result, False, False, cfg.critical), mstate
        if not fresh and (cfg.must_have_data or not reading.has_data):
            fail = cfg.must_have_data and not cfg.critical
            cls = Classification.NODATA_FAIL if fail else Classification.NODATA
            why = "no data for this look" + (" and the metric must have data"
                                              if cfg.must_have_data else "")
            result = MetricResult(cfg.name, cls, why, cfg.critical, cfg.groups,
                                  muted=cfg.muted, evidence=_evidence(reading, alpha))
            missing = cfg.must_have_data or cfg.critical
            return _MetricOutcome(result, False, False, missing), new_state
        threshold = -math.log(alpha)
        worse = reading.log_e_worse >= threshold
        within = reading.log_e_within >= threshold
        result = MetricResult(
            name=cfg.name,
            classification=(Classification.PASS if not worse else
                            (Classification.HIGH if reading.worse_side == "increase"
                             else Classification.LOW)),
            reason=_reason(cfg, reading, worse, within, alpha),
            critical=cfg.critical, groups=cfg.groups, baseline=reading.baseline,
            canary=reading.canary, ratio=reading.ratio,
            evidence=_evidence(reading, alpha), muted=cfg.muted)
        return _MetricOutcome(result, worse, within, False), new_state

    def _update(self, cfg: MetricConfig, kind: str | None, pair: MetricPair | None,
                mstate: Any, alpha: float) -> tuple[Reading, Any]:
        b = pair.baseline if pair is not None else MetricData()
        c = pair.canary if pair is not None else MetricData()
        common = {"direction": cfg.direction, "margin": cfg.margin, "alpha": alpha}
        if kind == "histogram":
            return distribution_update(mstate, b.histogram, c.histogram,
                                       quantile=cfg.quantile, **common)  # type: ignore[arg-type]
        if kind == "counts":
            return counts_update(mstate, b.counts, c.counts, **common)  # type: ignore[arg-type]
        if kind == "series":
            return series_update(mstate, b.series, c.series, batch=self.series_batch,
                                 **common)  # type: ignore[arg-type]
        empty = Reading(0.0, 0.0, math.nan, (math.nan, math.nan), "sequential", has_data=False)
        return empty, mstate

    def _decide(self, outcomes: list[_MetricOutcome], thresholds: Thresholds, final: bool,
                state: dict[str, Any]) -> LookOutcome:
        results = tuple(o.result for o in outcomes)
        scored = [o for o in outcomes if not o.result.muted]
        summary = score(results, {})
        worse = [o for o in scored if o.worse]
        missing = [o for o in scored if o.missing]
        deciders = [o for o in scored if o.result.critical] or scored
        if worse:
            decision, v = Decision.ROLLBACK, Verdict.FAIL
            why = "; ".join(o.result.reason for o in worse)
        elif missing:
            decision = Decision.ROLLBACK if final else Decision.INCONCLUSIVE
            v = Verdict.FAIL if final else verdict(summary.score, thresholds)
            why = "data missing: " + ", ".join(o.result.name for o in missing)
        elif deciders and all(o.within for o in deciders):
            decision, v = Decision.PROMOTE, Verdict.PASS
            why = "every deciding metric is confidently within its margin"
        elif final:
            # No boundary crossed after the last planned look: the test never found the
            # canary worse, and its false-rollback guarantee holds only if it stops here.
            decision, v = Decision.PROMOTE, Verdict.PASS
            why = "last look without evidence that the canary is worse than its margins"
        else:
            decision = Decision.CONTINUE
            v = verdict(summary.score, thresholds)
            why = "no metric has crossed a boundary yet"
        reason = summary.reason or why
        return LookOutcome(
            result=JudgeResult(results, summary.group_scores, summary.score, v, reason,
                               "sequential"),
            decision=decision, state=state)


def _evidence(reading: Reading, alpha: float) -> Evidence:
    details = dict(reading.details)
    details["log_e_within"] = reading.log_e_within
    details["e_within"] = _exp(reading.log_e_within)
    return Evidence(effect=reading.effect, interval=reading.interval, confidence=1 - alpha,
                    e_value=_exp(reading.log_e_worse), threshold=1.0 / alpha,
                    method=reading.method, details=details)


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.1f}%"


def _reason(cfg: MetricConfig, r: Reading, worse: bool, within: bool, alpha: float) -> str:
    lo, hi = r.interval
    est = (f"estimated change {_pct(r.effect)} (confidence sequence {_pct(lo)} .. "
           f"{_pct(hi)})")
    if worse:
        word = "higher" if r.worse_side == "increase" else "lower"
        return (f"{cfg.name} is {word} in the canary by more than the {cfg.margin:.0%} "
                f"margin: evidence e = {_exp(r.log_e_worse):.3g} >= {1 / alpha:.3g}; {est}")
    if within:
        return (f"{cfg.name} is within the {cfg.margin:.0%} margin: e = "
                f"{_exp(r.log_e_within):.3g} >= {1 / alpha:.3g}; {est}")
    return (f"{cfg.name}: no conclusion yet (evidence of worse e = {_exp(r.log_e_worse):.3g},"
            f" of within margin e = {_exp(r.log_e_within):.3g}, boundary {1 / alpha:.3g});"
            f" {est}")
