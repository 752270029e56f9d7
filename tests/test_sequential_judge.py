"""The sequential judge end to end: decisions, missing data, state carried between looks."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from analysis.judge import Decision
from analysis.judge_result import Classification, Verdict
from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import Counts, Histogram, MetricData, MetricPair, Series
from analysis.sequential import SequentialJudge, judge_look

BOUNDS = np.concatenate([0.1 * 1.02 ** np.arange(-110, 111), [np.inf]])
CONFIGS = [MetricConfig("latency", direction="increase", critical=True, margin=0.02),
           MetricConfig("errors", direction="increase", critical=True, margin=0.05)]


def _hist(rng: np.random.Generator, n: int, scale: float) -> Histogram:
    x = 0.1 * scale * np.exp(0.5 * rng.standard_normal(n))
    idx = np.searchsorted(BOUNDS, x, side="left")
    return Histogram.of(BOUNDS, np.bincount(idx, minlength=BOUNDS.size).astype(float))


def _look(rng: np.random.Generator, n: int, scale: float = 1.0,
          err_mult: float = 1.0) -> dict[str, MetricPair]:
    return {
        "latency": MetricPair(MetricData(histogram=_hist(rng, n, 1.0)),
                              MetricData(histogram=_hist(rng, n, scale))),
        "errors": MetricPair(MetricData(counts=Counts(rng.binomial(n, 0.01), n)),
                             MetricData(counts=Counts(rng.binomial(n, 0.01 * err_mult), n))),
    }


def test_clear_regression_rolls_back_at_the_first_look() -> None:
    rng = np.random.default_rng(11)
    out = SequentialJudge().look(_look(rng, 2000, scale=1.3), CONFIGS, Thresholds(), None,
                                 final=False)
    assert out.decision is Decision.ROLLBACK
    assert out.result.verdict is Verdict.FAIL
    lat = out.result.results[0]
    assert lat.classification is Classification.HIGH
    assert lat.evidence.e_value is not None and lat.evidence.threshold is not None
    assert lat.evidence.e_value >= lat.evidence.threshold
    assert lat.evidence.effect is not None and 0.2 < lat.evidence.effect < 0.4
    assert "latency is higher in the canary" in lat.reason


def test_error_regression_rolls_back() -> None:
    rng = np.random.default_rng(12)
    out = SequentialJudge().look(_look(rng, 5000, err_mult=3.0), CONFIGS, Thresholds(), None,
                                 final=False)
    assert out.decision is Decision.ROLLBACK
    assert out.result.results[1].classification is Classification.HIGH


def test_aa_with_lots_of_data_promotes_early() -> None:
    rng = np.random.default_rng(13)
    judge = SequentialJudge()
    # margins a release engineer would accept: 5% on latency, 25% on the error rate
    configs = [MetricConfig("latency", direction="increase", critical=True, margin=0.05),
               MetricConfig("errors", direction="increase", critical=True, margin=0.25)]
    state: dict[str, Any] | None = None
    decisions = []
    for _ in range(10):
        out = judge.look(_look(rng, 20_000), configs, Thresholds(), state, final=False)
        state = out.state
        decisions.append(out.decision)
        if out.decision is not Decision.CONTINUE:
            break
    assert decisions[-1] is Decision.PROMOTE
    assert len(decisions) < 10
    assert out.result.verdict is Verdict.PASS


def test_final_look_without_evidence_promotes() -> None:
    rng = np.random.default_rng(14)
    out = SequentialJudge().look(_look(rng, 50), CONFIGS, Thresholds(), None, final=True)
    assert out.decision is Decision.PROMOTE


def test_missing_data_semantics() -> None:
    rng = np.random.default_rng(15)
    configs = [MetricConfig("latency", direction="increase", critical=True),
               MetricConfig("errors", direction="increase", must_have_data=True),
               MetricConfig("cpu", direction="increase")]
    data = _look(rng, 500)
    data["errors"] = MetricPair(MetricData(), MetricData(counts=Counts(1, 100)))
    out = SequentialJudge().look(data, configs, Thresholds(), None, final=False)
    by_name = {r.name: r for r in out.result.results}
    assert by_name["errors"].classification is Classification.NODATA_FAIL
    assert by_name["cpu"].classification is Classification.NODATA
    assert out.decision is Decision.INCONCLUSIVE  # never a pass
    final = SequentialJudge().look(data, configs, Thresholds(), out.state, final=True)
    assert final.decision is Decision.ROLLBACK
    # a critical metric with no data is reported as Nodata and fails the score
    crit = SequentialJudge().look({}, configs[:1], Thresholds(), None, final=True)
    assert crit.result.results[0].classification is Classification.NODATA
    assert crit.decision is Decision.ROLLBACK


def test_state_round_trips_through_json_and_a_resumed_judge_continues_identically() -> None:
    rng = np.random.default_rng(16)
    looks = [_look(rng, 800, scale=1.04, err_mult=1.5) for _ in range(4)]
    judge = SequentialJudge()
    state: dict[str, Any] | None = None
    straight = []
    for data in looks:
        out = judge.look(data, CONFIGS, Thresholds(), state, final=False)
        state = out.state
        straight.append(out)
    resumed_state: dict[str, Any] | None = None
    resumed = []
    for data in looks:
        if resumed_state is not None:
            resumed_state = json.loads(json.dumps(resumed_state, allow_nan=False))
        out = SequentialJudge().look(data, CONFIGS, Thresholds(), resumed_state, final=False)
        resumed_state = out.state
        resumed.append(out)
    for a, b in zip(straight, resumed, strict=True):
        assert a.decision is b.decision
        for ra, rb in zip(a.result.results, b.result.results, strict=True):
            assert ra.evidence.e_value == rb.evidence.e_value
            assert ra.classification is rb.classification
    assert straight[-1].state["looks"] == 4
    json.dumps(straight[-1].result.to_kayenta())


def test_series_metric_with_autocorrelated_noise_and_a_level_shift() -> None:
    rng = np.random.default_rng(17)
    cfg = [MetricConfig("cpu", direction="increase", critical=True, margin=0.05)]
    judge = SequentialJudge(series_batch=10)

    def ar1(n: int) -> np.ndarray:
        e = np.zeros(n)
        for i in range(1, n):
            e[i] = 0.8 * e[i - 1] + rng.normal(0, 0.03)
        return e

    state: dict[str, Any] | None = None
    decision = Decision.CONTINUE
    for step in range(10):
        ts = np.arange(step * 10, step * 10 + 10, dtype=float)
        data = {"cpu": MetricPair(MetricData(series=Series.of(ts, 1.0 + ar1(10))),
                                  MetricData(series=Series.of(ts, 1.5 + ar1(10))))}
        out = judge.look(data, cfg, Thresholds(), state, final=False)
        state, decision = out.state, out.decision
        if decision is not Decision.CONTINUE:
            break
    assert decision is Decision.ROLLBACK
    assert out.result.results[0].evidence.effect is not None
    assert math.isclose(out.result.results[0].evidence.effect, 0.5, abs_tol=0.1)


def test_library_function_carries_state() -> None:
    first = judge_look(Counts(5, 10_000), Counts(6, 10_000), margin=0.1)
    assert first.decision is Decision.CONTINUE
    state = json.loads(json.dumps(first.state))
    second = judge_look(Counts(5, 10_000), Counts(60, 10_000), state, margin=0.1)
    assert second.decision is Decision.ROLLBACK
    assert second.result.evidence.details["looks"] == 2.0


def _hist_sd(rng: np.random.Generator, n: int, sigma: float, scale: float = 1.0) -> Histogram:
    x = 0.1 * scale * np.exp(sigma * rng.standard_normal(n))
    idx = np.searchsorted(BOUNDS, x, side="left")
    return Histogram.of(BOUNDS, np.bincount(idx, minlength=BOUNDS.size).astype(float))


def test_tail_only_regression_rolls_back_and_is_reported_as_a_p99_change() -> None:
    rng = np.random.default_rng(18)
    cfg = [MetricConfig("latency", direction="increase", critical=True, margin=0.02)]
    sigma_c = 0.5 + math.log(1.15) / 2.326  # p99 +15%, p50 unchanged
    state: dict[str, Any] | None = None
    looks = 0
    while looks < 10:
        looks += 1
        data = {"latency": MetricPair(MetricData(histogram=_hist_sd(rng, 3000, 0.5)),
                                      MetricData(histogram=_hist_sd(rng, 3000, sigma_c)))}
        out = SequentialJudge().look(data, cfg, Thresholds(), state, final=False)
        state = out.state
        if out.decision is not Decision.CONTINUE:
            break
    assert out.decision is Decision.ROLLBACK and looks <= 4
    ev = out.result.results[0].evidence
    assert "p99" in ev.method
    assert ev.effect is not None and 0.05 < ev.effect < 0.3
    assert ev.interval is not None and ev.interval[0] > 0.02  # beyond the margin
    assert abs(ev.details["location_effect"]) < 0.03  # the median did not move


def test_promotion_and_rollback_match_the_confidence_sequence_against_the_margin() -> None:
    rng = np.random.default_rng(19)
    cfg = [MetricConfig("latency", direction="increase", critical=True, margin=0.05)]
    for scale in (1.0, 1.12):
        state: dict[str, Any] | None = None
        for _ in range(10):
            data = {"latency": MetricPair(MetricData(histogram=_hist(rng, 5000, 1.0)),
                                          MetricData(histogram=_hist(rng, 5000, scale)))}
            out = SequentialJudge().look(data, cfg, Thresholds(), state, final=False)
            state = out.state
            if out.decision is not Decision.CONTINUE:
                break
        ev = out.result.results[0].evidence
        assert ev.interval is not None
        if scale == 1.0:
            assert out.decision is Decision.PROMOTE
            assert ev.interval[1] < 0.05  # confidently within the 5% margin
        else:
            assert out.decision is Decision.ROLLBACK
            assert ev.interval[0] > 0.05


def test_lower_is_worse_metrics_roll_back_only_when_the_canary_drops() -> None:
    rng = np.random.default_rng(20)
    cfg = [MetricConfig("throughput", direction="decrease", critical=True, margin=0.02)]
    better = {"throughput": MetricPair(MetricData(histogram=_hist(rng, 3000, 1.0)),
                                       MetricData(histogram=_hist(rng, 3000, 1.3)))}
    out = SequentialJudge().look(better, cfg, Thresholds(), None, final=False)
    assert out.decision is not Decision.ROLLBACK
    worse = {"throughput": MetricPair(MetricData(histogram=_hist(rng, 3000, 1.0)),
                                      MetricData(histogram=_hist(rng, 3000, 0.75)))}
    out = SequentialJudge().look(worse, cfg, Thresholds(), None, final=False)
    assert out.decision is Decision.ROLLBACK
    res = out.result.results[0]
    assert res.classification is Classification.LOW
    assert res.evidence.effect is not None and -0.35 < res.evidence.effect < -0.15


def test_coarse_prometheus_buckets_with_a_zero_lower_edge_are_judged() -> None:
    rng = np.random.default_rng(21)
    bounds = np.array([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, np.inf])

    def hist(scale: float) -> Histogram:
        x = 0.1 * scale * np.exp(0.5 * rng.standard_normal(4000))
        return Histogram.of(bounds, np.bincount(np.searchsorted(bounds, x), minlength=12)
                            .astype(float))

    cfg = [MetricConfig("latency", direction="increase", critical=True, margin=0.05)]
    bad = SequentialJudge().look({"latency": MetricPair(MetricData(histogram=hist(1.0)),
                                                         MetricData(histogram=hist(1.6)))},
                                 cfg, Thresholds(), None, final=False)
    assert bad.decision is Decision.ROLLBACK
    same = SequentialJudge().look({"latency": MetricPair(MetricData(histogram=hist(1.0)),
                                                          MetricData(histogram=hist(1.0)))},
                                  cfg, Thresholds(), None, final=False)
    assert same.decision is not Decision.ROLLBACK


def test_a_histogram_state_of_the_previous_format_starts_afresh() -> None:
    rng = np.random.default_rng(22)
    old = {"version": 1, "looks": 2, "alpha": 0.01, "metrics": {"latency": {
        "kind": "histogram", "tests": ["shift", "tail"], "looks": {"increase": []}}}}
    out = SequentialJudge().look(_look(rng, 500), CONFIGS, Thresholds(), old, final=False)
    assert out.state["metrics"]["latency"]["looks"] and out.state["version"] == 2


def test_histograms_on_different_grids_are_compared_on_their_union() -> None:
    # The mesh leaves out empty buckets, so the baseline and canary of one look (and one
    # look and the next) arrive with different bounds; a +50% regression must still show.
    rng = np.random.default_rng(3)
    grid = 1e-3 * 1.02 ** np.arange(400)

    def hist(scale: float, n: int) -> Histogram:
        counts, _ = np.histogram(rng.lognormal(np.log(scale), 0.3, n),
                                 bins=np.concatenate([[0.0], grid]))
        nz = np.nonzero(counts)[0]
        lo, hi = nz[0], nz[-1] + 1  # trimmed to the buckets that hold requests
        return Histogram.of(grid[lo:hi], counts[lo:hi])

    state = None
    decisions = []
    for _ in range(2):
        b, c = hist(0.020, 900), hist(0.030, 300)
        assert b.upper_bounds[0] != c.upper_bounds[0]
        look = judge_look(b, c, state, name="latency", direction="increase", margin=0.05)
        state = look.state
        decisions.append(look.decision.value)
    assert decisions[0] == "rollback", decisions
    effect = look.result.evidence.effect
    assert effect is not None and 0.35 < effect < 0.65
