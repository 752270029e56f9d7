"""A realistic rollout written into a real Store through its own API, the way the
controller writes it: weight steps, measurements with Kayenta-shaped judge results and
per-side distributions, events, and (by default) a rollback on a critical metric.

Used by the report and live-view tests and by benchmarks/report_bench.py. The store's
clock is replaced by a fixed one so reports made from it are byte-for-byte stable."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np

import canary.store
from analysis.judge_result import Classification, Evidence, MetricResult, SideStats
from analysis.metric_data import Counts, Histogram, MetricData, Series
from analysis.report import summarize_side
from canary.store import Store

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf]


class FixedClock:
    """Stands in for the `time` module inside canary.store."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def fixed_clock(start: float = T0) -> Iterator[FixedClock]:
    clock = FixedClock(start)
    with mock.patch.object(canary.store, "time", clock):
        yield clock


def rollout_spec(name: str, metric_names: list[str], weights: list[int]) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = []
    for i, m in enumerate(metric_names):
        metrics.append({"name": m, "provider": "mesh", "query": m, "critical": i == 0,
                        "margin": 0.2})
    return {
        "apiVersion": "canaryctl.io/v1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {
            "service": "checkout",
            "baseline": {"endpoints": ["127.0.0.1:8001"], "version": "v1.4.2"},
            "canary": {"endpoints": ["127.0.0.1:8002"], "version": "v1.5.0"},
            "mesh": {"admin": "http://127.0.0.1:9901", "tokenEnv": "CANARYCTL_MESH_TOKEN"},
            "stepWeights": weights, "interval": "2m",
            "analysis": {"judge": "sequential", "alpha": 0.01, "metrics": metrics},
            "providers": {"prom": {"type": "prometheus", "url": "http://prom:9090",
                                   "bearerTokenEnv": "PROM_TOKEN"}},
        },
    }


def _latency(rng: np.random.Generator, n: int, scale: float) -> MetricData:
    samples = rng.lognormal(math.log(0.04 * scale), 0.6, n)
    counts, _ = np.histogram(samples, bins=[0.0, *LATENCY_BOUNDS[:-1], 1e9])
    return MetricData(histogram=Histogram.of(LATENCY_BOUNDS, counts),
                      counts=Counts(events=float(n // 200), trials=float(n)))


def _errors(requests: int, rate: float) -> MetricData:
    return MetricData(counts=Counts(events=float(round(requests * rate)),
                                    trials=float(requests)))


def _series(rng: np.random.Generator, level: float) -> MetricData:
    return MetricData(series=Series.values_only(rng.normal(level, level * 0.05, 60)))


def _stats_of(data: MetricData) -> SideStats:
    if data.counts is not None and data.histogram is None:
        rate = data.counts.events / data.counts.trials if data.counts.trials else math.nan
        return SideStats(int(data.counts.trials), rate, rate, rate, 0.0)
    summary = summarize_side(data)
    if "q" not in summary:
        return SideStats(0, math.nan, math.nan, math.nan, math.nan)
    q = summary["q"]
    return SideStats(int(summary["n"]), float(q[2]), float(q[0]), float(q[4]),
                     float(q[3] - q[1]) / 1.35)


def fill_rollout(store: Store, clock: FixedClock, *, name: str = "checkout",
                 n_metrics: int = 3, weights: tuple[int, ...] = (5, 25, 50),
                 fail_at: int | None = 1, seed: int = 7) -> None:
    """A rollout of `n_metrics` metrics over len(weights) steps. With `fail_at` (an index
    into weights) the critical error-rate metric regresses there and the rollout rolls
    back, as the controller would record it; with None it is promoted."""
    rng = np.random.default_rng(seed)
    names = ["error-rate", "latency-p99", "cpu-seconds"][:n_metrics]
    names += [f"metric-{i:02d}" for i in range(len(names), n_metrics)]
    spec = rollout_spec(name, names, list(weights))
    store.create_rollout(name, spec, "0123456789abcdef", "rollout.yaml")
    store.add_event(name, "started", f"rollout of checkout started ({2 * len(weights)} steps, "
                    "judge sequential)")
    store.update_rollout(name, phase="Progressing", analysis_start=clock.now)
    plan_len = 2 * len(weights)
    e_worse = 1.0
    for i, weight in enumerate(weights):
        step = 2 * i
        store.update_rollout(name, step_index=step,
                             weights={"baseline": 100 - weight, "canary": weight})
        store.add_event(name, "weight", f"step {step + 1}/{plan_len}: canary weight {weight}%",
                        canary=weight)
        store.update_rollout(name, step_index=step + 1)
        start = clock.now
        clock.advance(120)
        failing = fail_at is not None and i >= fail_at
        canary_requests = 600 * weight
        baseline_requests = 600 * (100 - weight)
        results, sides = [], {}
        for j, metric in enumerate(names):
            if metric == "error-rate":
                b = _errors(baseline_requests, 0.01)
                c = _errors(canary_requests, 0.09 if failing else 0.011)
                effect = 7.6 if failing else 0.08
                interval = (3.1, 12.4) if failing else (-0.4, 0.9)
            elif metric == "latency-p99":
                b = _latency(rng, baseline_requests, 1.0)
                c = _latency(rng, canary_requests, 1.04)
                effect, interval = 0.04, (-0.06, 0.15 / (i + 1))
            else:
                level = 10.0 + j
                b, c = _series(rng, level), _series(rng, level * 1.01)
                effect, interval = 0.01, (-0.05 / (i + 1), 0.07 / (i + 1))
            worse = failing and metric == "error-rate"
            e_worse = 10 ** (3.2 if worse else 0.1 * i + 0.01 * j)
            reason = (f"{metric} is higher in the canary by more than the 20% margin: "
                      f"evidence e = {e_worse:.3g} >= 100; estimated change {effect:+.1%}"
                      if worse else
                      f"{metric}: no conclusion yet (evidence of worse e = {e_worse:.3g}, "
                      f"boundary 100); estimated change {effect:+.1%}")
            results.append(MetricResult(
                name=metric,
                classification=Classification.HIGH if worse else Classification.PASS,
                reason=reason, critical=j == 0, groups=(metric,),
                baseline=_stats_of(b), canary=_stats_of(c), ratio=1 + effect,
                evidence=Evidence(effect=effect, interval=interval, confidence=0.99,
                                  e_value=e_worse, threshold=100.0, method="test"),
            ).to_kayenta())
            sides[metric] = {"baseline": summarize_side(b), "canary": summarize_side(c)}
        verdict = "Fail" if failing else "Pass"
        message = results[0]["classificationReason"] if failing else \
            "no metric has crossed a boundary yet"
        judge = {"judgeName": "sequential", "results": results, "groupScores": [],
                 "score": {"score": 0.0 if failing else 100.0, "classification": verdict,
                           "classificationReason": message}}
        phase = "Failed" if failing else "Successful"
        store.add_measurement(
            name, step_index=step + 1, weight=weight, phase=phase,
            decision="rollback" if failing else "continue",
            score=0.0 if failing else 100.0, verdict=verdict, message=message,
            window_start=start, window_end=clock.now,
            result={"errors": {}, "judgeResult": judge, "sides": sides,
                    "window": [start, clock.now]},
        )
        store.add_event(name, "measurement", f"step {step + 2}: {phase}: {message}",
                        phase=phase)
        clock.advance(1)
        if failing:
            store.update_rollout(name, phase="RollingBack", verdict="Failed", message=message,
                                 weights={"baseline": 100, "canary": 0})
            store.add_event(name, "rollback", f"rolling back: {message}")
            clock.advance(1)
            store.update_rollout(name, phase="RolledBack")
            store.add_event(name, "rolledback", "canary weight is 0: all traffic on the "
                            "baseline")
            return
        store.update_rollout(name, step_index=step + 2)
    store.update_rollout(name, phase="Promoted", verdict="Promoted",
                         message="all steps completed", weights={"baseline": 0, "canary": 100})
    store.add_event(name, "promoted", "all traffic on the canary")
