"""Sequential test that the canary's distribution (e.g. latency) is worse than the baseline's.

Per look, the canary's values are divided by (1 + margin) and pooled with the
baseline's; each bucket gets a score from its pooled mid-CDF u in [0, 1]:

* "shift": s = u (Wilcoxon scores), for whole-distribution shifts;
* "tail": s = clip((u - 0.9) / 0.1, 0, 1), for a heavier upper tail with p50 unchanged;
* "q<level>": s = 1{u > level}, when a metric names a quantile (e.g. 0.99).

If the canary's distribution is no worse than the baseline's scaled by (1 + margin),
the canary's (scaled) requests are no more likely to sit high in the pooled sample than
a random subset of it; e_processes.score_log_e_look turns the canary's score sum into an
e-value by Hoeffding's bound for sampling without replacement. Per score, e-values are
multiplied across looks and mixed over tilts; the scores' e-processes are averaged (an
average of e-values is an e-value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from analysis.judge_result import SideStats
from analysis.metric_config import Direction
from analysis.metric_data import Histogram
from analysis.sequential.confidence_sequences import rate_ratio_cs
from analysis.sequential.e_processes import SCORE_TILTS, FloatArray, score_log_e_look
from analysis.sequential.reading import Reading

IntArray = npt.NDArray[np.int64]
DEFAULT_TESTS: tuple[str, ...] = ("shift", "tail")
# Relative slack when matching scaled bounds against the bucket grid, so that a margin
# equal to the grid's ratio maps exactly one bucket down despite rounding.
_GRID_SLACK = 1e-9


def tests_for(quantile: float | None) -> tuple[str, ...]:
    return DEFAULT_TESTS if quantile is None else (f"q{quantile:g}",)


def canary_bucket_map(bounds: FloatArray, margin: float) -> IntArray:
    """For canary bucket j, the baseline-grid bucket that holds the smallest value of
    (bucket j) / (1 + margin): never above where a canary value really lands, so the
    canary's scores are never overstated."""
    b = np.asarray(bounds, dtype=np.float64)
    lower = np.concatenate([[-np.inf], b[:-1]]) / (1.0 + margin)
    g = np.searchsorted(b, lower * (1 + _GRID_SLACK), side="left")
    return np.asarray(np.minimum(g, b.size - 1), dtype=np.int64)


def map_canary(canary: FloatArray, g: IntArray) -> FloatArray:
    """Canary counts moved to the buckets `g` (last axis = buckets; g nondecreasing)."""
    c = np.asarray(canary, dtype=np.float64)
    cum = np.cumsum(c, axis=-1)
    nb = c.shape[-1]
    jmax = np.searchsorted(g, np.arange(nb), side="right") - 1
    mapped_cum = np.where(jmax >= 0, np.take(cum, np.maximum(jmax, 0), axis=-1), 0.0)
    return np.diff(mapped_cum, axis=-1, prepend=0.0)


def bucket_scores(pooled: FloatArray, tests: Sequence[str]) -> FloatArray:
    """Scores per test and bucket (new axis -2 = tests) from the pooled mid-CDF."""
    p = np.asarray(pooled, dtype=np.float64)
    cum = np.cumsum(p, axis=-1)
    n = np.maximum(cum[..., -1:], 1.0)
    u = (cum - p / 2) / n
    out = []
    for t in tests:
        if t == "shift":
            out.append(u)
        elif t == "tail":
            out.append(np.clip((u - 0.9) / 0.1, 0.0, 1.0))
        else:
            out.append((u > float(t[1:])).astype(np.float64))
    return np.stack(out, axis=-2)


def look_log_e(ref: FloatArray, worse: FloatArray, margin: float, tests: Sequence[str],
               bounds: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-look log e-values (..., tests, tilts): worse side above (1+m) x reference,
    and below it (for promotion)."""
    g = canary_bucket_map(bounds, margin)
    mapped = map_canary(worse, g)
    pooled = np.asarray(ref, dtype=np.float64) + mapped
    scores = bucket_scores(pooled, tests)
    up = score_log_e_look(pooled[..., None, :], mapped[..., None, :], scores, SCORE_TILTS)
    down = score_log_e_look(pooled[..., None, :], mapped[..., None, :], scores, -SCORE_TILTS)
    return up, down


def running_log_e(per_look: FloatArray) -> FloatArray:
    """(..., looks, tests, tilts) -> running mixture log e per test (..., looks, tests)."""
    running = np.cumsum(per_look, axis=-3)
    g = per_look.shape[-1]
    return np.asarray(special.logsumexp(running, axis=-1) - math.log(g))


def median_exceedances(ref: FloatArray, worse: FloatArray) -> list[float]:
    """[worse above t, ref above t, n_worse, n_ref] at the pooled median t of the look,
    for the effect's confidence sequence."""
    pooled = np.asarray(ref) + np.asarray(worse)
    cum = np.cumsum(pooled)
    i = int(np.searchsorted(cum, 0.5 * cum[-1], side="left"))
    cr, cw = np.cumsum(ref), np.cumsum(worse)
    return [float(cw[-1] - cw[i]), float(cr[-1] - cr[i]), float(cw[-1]), float(cr[-1])]


def histogram_quantile(bounds: FloatArray, counts: FloatArray, q: float) -> float:
    """Quantile of a bucketed distribution, linear within the bucket that holds it."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return math.nan
    cum = np.cumsum(c)
    i = int(np.searchsorted(cum, q * total, side="left"))
    i = min(i, c.size - 1)
    hi = float(bounds[i])
    lo = float(bounds[i - 1]) if i > 0 else min(0.0, hi)
    if not math.isfinite(hi):
        return lo
    below = float(cum[i - 1]) if i > 0 else 0.0
    frac = (q * total - below) / c[i] if c[i] > 0 else 1.0
    return lo + (hi - lo) * float(np.clip(frac, 0.0, 1.0))


def histogram_stats(hist: Histogram) -> SideStats:
    c = hist.counts
    n = float(c.sum())
    if n <= 0:
        return SideStats(0, math.nan, math.nan, math.nan, math.nan)
    ub = hist.upper_bounds
    lower = np.concatenate([[min(0.0, float(ub[0]))], ub[:-1]])
    upper = np.where(np.isfinite(ub), ub, lower)
    mid = (lower + upper) / 2
    mean = float((mid * c).sum() / n)
    std = float(math.sqrt(max((c * (mid - mean) ** 2).sum() / max(n - 1, 1.0), 0.0)))
    nz = np.flatnonzero(c)
    return SideStats(int(n), mean, float(lower[nz[0]]), float(upper[nz[-1]]), std)


def _fingerprint(bounds: FloatArray) -> list[float]:
    finite = bounds[np.isfinite(bounds)]
    return [float(bounds.size), float(finite.sum()), float(finite.size)]


def distribution_update(state: Mapping[str, Any] | None, baseline: Histogram | None,
                        canary: Histogram | None, *, direction: Direction, margin: float,
                        quantile: float | None, alpha: float) -> tuple[Reading, dict[str, Any]]:
    """Fold one look of histograms into the test; returns the reading and the new state.

    State: {"kind": "histogram", "tests": [...], "looks": {side: [per look {"up":
    [[log e per tilt] per test], "down": [...], "median": [k_w, k_r, n_w, n_r]}]},
    "grid": bucket-layout fingerprint, "hist_b"/"hist_c": summed counts for the
    effect estimate}.
    """
    tests = tests_for(quantile)
    prev = dict(state or {})
    sides = ("increase",) if direction == "increase" else (
        ("decrease",) if direction == "decrease" else ("increase", "decrease"))
    looks: dict[str, list[Any]] = {s: list(prev.get("looks", {}).get(s, [])) for s in sides}
    have = (baseline is not None and canary is not None and baseline.total > 0
            and canary.total > 0 and baseline.upper_bounds.size == canary.upper_bounds.size
            and bool(np.all(baseline.upper_bounds == canary.upper_bounds)))
    hist_b: FloatArray | None = None
    hist_c: FloatArray | None = None
    grid = prev.get("grid")
    if have:
        assert baseline is not None and canary is not None
        bounds = baseline.upper_bounds
        for side in sides:
            ref, worse = ((baseline.counts, canary.counts) if side == "increase"
                          else (canary.counts, baseline.counts))
            up, down = look_log_e(ref, worse, margin, tests, bounds)
            looks[side].append({"up": up.tolist(), "down": down.tolist(),
                                "median": median_exceedances(ref, worse)})
        same_grid = grid == _fingerprint(bounds) and "hist_b" in prev
        hist_b = baseline.counts + (np.asarray(prev["hist_b"]) if same_grid else 0.0)
        hist_c = canary.counts + (np.asarray(prev["hist_c"]) if same_grid else 0.0)
        grid = _fingerprint(bounds)
    elif "hist_b" in prev:
        hist_b, hist_c = np.asarray(prev["hist_b"]), np.asarray(prev["hist_c"])
    new_state: dict[str, Any] = {"kind": "histogram", "tests": list(tests), "looks": looks}
    if hist_b is not None and hist_c is not None:
        new_state.update(grid=grid, hist_b=[float(x) for x in hist_b],
                         hist_c=[float(x) for x in hist_c])
    if not any(looks[s] for s in sides) or hist_b is None or hist_c is None:
        return Reading(0.0, 0.0, math.nan, (math.nan, math.nan), "sequential distribution",
                       has_data=False), new_state

    worse_terms: list[float] = []
    within_all = math.inf
    worse_side, worse_best = sides[0], -math.inf
    interval = (math.nan, math.nan)
    for side in sides:
        up = running_log_e(np.asarray([lk["up"] for lk in looks[side]]))[-1]
        down = running_log_e(np.asarray([lk["down"] for lk in looks[side]]))[-1]
        term = float(special.logsumexp(up) - math.log(up.size))
        worse_terms.append(term)
        if term > worse_best:
            worse_best, worse_side = term, side
        # Promotion needs every score within the margin (an intersection-union test).
        within_all = min(within_all, float(np.min(down)))
        if side == "increase" or len(sides) == 1:
            med = np.asarray([lk["median"] for lk in looks[side]], dtype=np.float64)
            lo, hi = rate_ratio_cs(med[:, 0], med[:, 1], med[:, 2], med[:, 3], alpha)
            interval = (lo - 1.0, hi - 1.0)
    log_worse = float(np.logaddexp.reduce(worse_terms) - math.log(len(worse_terms)))

    bounds_now = (baseline.upper_bounds if have and baseline is not None
                  else np.arange(len(hist_b), dtype=np.float64))
    q_main = quantile if quantile is not None else 0.5
    qb = histogram_quantile(bounds_now, hist_b, q_main)
    qc = histogram_quantile(bounds_now, hist_c, q_main)
    effect = qc / qb - 1.0 if qb > 0 else math.nan
    full_b = Histogram(bounds_now, hist_b)
    full_c = Histogram(bounds_now, hist_c)
    details: dict[str, float] = {}
    for lv in (0.5, 0.9, 0.99) if quantile is None else (quantile,):
        b_q = histogram_quantile(bounds_now, hist_b, lv)
        details[f"p{lv * 100:g}_ratio"] = (histogram_quantile(bounds_now, hist_c, lv) / b_q
                                           if b_q > 0 else math.nan)
    details["looks"] = float(len(looks[sides[0]]))
    reading = Reading(
        log_e_worse=log_worse,
        log_e_within=within_all,
        effect=effect,
        interval=interval,
        method=(f"sequential distribution: rank-score e-process ({', '.join(tests)}) "
                f"against the baseline scaled by 1+margin; effect = p{q_main * 100:g} ratio"
                " - 1; interval = confidence sequence of the ratio of the shares of requests"
                " above the pooled median, - 1"),
        worse_side=worse_side,
        details=details,
        baseline=histogram_stats(full_b),
        canary=histogram_stats(full_c),
        ratio=full_c_mean_ratio(full_b, full_c),
    )
    return reading, new_state


def full_c_mean_ratio(baseline: Histogram, canary: Histogram) -> float:
    b, c = histogram_stats(baseline), histogram_stats(canary)
    return c.mean / b.mean if b.mean and math.isfinite(b.mean) else math.nan
