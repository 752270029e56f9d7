"""Mann-Whitney location shift: the estimate and confidence interval of R's
`wilcox.test(x, y, conf.int=TRUE, exact=FALSE, correct=TRUE)`.

x is the canary (Kayenta's experiment), y the baseline (control); the shift is x - y.
The interval ends are the roots of the standardised rank statistic of (x - mu, y)
minus a normal quantile, with tie and continuity correction, searched between
min(x) - max(y) and max(x) - min(y).

R and Kayenta find those roots with Brent's method at an absolute tolerance of 1e-4,
which is coarse for metrics whose values are around 1e-4 or smaller. By default we
solve to near machine precision relative to the data's scale; `root_tolerance=1e-4`
reproduces R's and Kayenta's numbers exactly (the conformance vectors need that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from analysis.metric_data import FloatArray

# R's uniroot tolerance in wilcox.test, and Kayenta's.
R_ROOT_TOLERANCE = 1e-4
_EPS = float(np.finfo(np.float64).eps)


class AllTiedError(ValueError):
    """Every observation is tied: the rank statistic has no variance."""


@dataclass(frozen=True)
class LocationShift:
    """Hodges-Lehmann-type estimate of canary - baseline with its confidence interval."""

    estimate: float
    lower: float
    upper: float
    confidence: float
    p_value: float


def normal_quantile(p: float) -> float:
    """Inverse CDF of the standard normal distribution."""
    return float(special.ndtri(p))


def _floats(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


class _RankStatistic:
    """The standardised, continuity-corrected rank-sum statistic of (x - mu, y)."""

    def __init__(self, experiment: FloatArray, control: FloatArray) -> None:
        self.x = experiment
        self.y = control
        self.m = float(experiment.size)
        self.n = float(control.size)

    def __call__(self, mu: float, quantile: float) -> float:
        m, n = self.m, self.n
        pooled = np.concatenate((self.x - mu, self.y))
        ranks = stats.rankdata(pooled, method="average")
        dz = float(ranks[: self.x.size].sum()) - m * (m + 1) / 2 - m * n / 2
        _, ties = np.unique(ranks, return_counts=True)
        tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / ((m + n) * (m + n - 1))
        sigma = math.sqrt((m * n / 12) * ((m + n + 1) - tie_term))
        if sigma == 0:
            raise AllTiedError("no confidence interval: all observations are tied")
        correction = math.copysign(0.5, dz) if dz != 0 else 0.0
        return (dz - correction) / sigma - quantile


def wilcoxon_diff(mu: float, quantile: float, experiment: object, control: object) -> float:
    """Standardised rank statistic of (experiment - mu, control) minus `quantile`."""
    return _RankStatistic(_floats(experiment), _floats(control))(mu, quantile)


def zeroin(
    f: Callable[[float], float],
    a: float,
    b: float,
    fa: float,
    fb: float,
    tol: float,
    max_iter: int = 1000,
) -> float:
    """Brent's root finder in the form R's `uniroot` uses (Brent 1973, "zero").

    Written from the published algorithm so R's and Kayenta's coarse-tolerance answers
    can be reproduced step for step; `tol` is R's absolute tolerance.
    """
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    c, fc = a, fa
    for _ in range(max_iter + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * _EPS * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < 0.75 * cb * q - abs(tol_act * q) / 2 and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


def _solve(
    f: Callable[[float], float],
    lo: float,
    hi: float,
    f_lo: float,
    f_hi: float,
    root_tolerance: float | None,
) -> float:
    if root_tolerance is not None:
        return zeroin(f, lo, hi, f_lo, f_hi, root_tolerance)
    if f_lo == 0.0:
        return lo
    if f_hi == 0.0:
        return hi
    scale = max(abs(lo), abs(hi))
    xtol = max(scale * 4 * _EPS, 1e-300)
    return float(optimize.brentq(f, lo, hi, xtol=xtol, rtol=4 * _EPS, maxiter=1000))


def location_shift(
    experiment: object,
    control: object,
    confidence_level: float = 0.95,
    root_tolerance: float | None = None,
) -> LocationShift:
    """Estimate and two-sided confidence interval of experiment - control.

    Raises AllTiedError when every observation of both samples is the same value, and
    ValueError when a sample is empty.
    """
    x, y = _floats(experiment), _floats(control)
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {confidence_level}")
    stat = _RankStatistic(x, y)
    mu_min = float(x.min() - y.max())
    mu_max = float(x.max() - y.min())

    def root(zq: float) -> float:
        f_lo, f_hi = stat(mu_min, zq), stat(mu_max, zq)
        # The statistic falls as mu grows; an unreachable quantile clamps to the data
        # range (R does the same, which is why tiny samples get wide-open intervals).
        if f_lo <= 0:
            return mu_min
        if f_hi >= 0:
            return mu_max
        return _solve(lambda mu: stat(mu, zq), mu_min, mu_max, f_lo, f_hi, root_tolerance)

    z = normal_quantile((1 - confidence_level) / 2)
    lower, upper = root(-z), root(z)
    estimate = root(0.0)
    z0 = stat(0.0, 0.0)
    p_value = float(min(1.0, 2 * special.ndtr(-abs(z0))))
    return LocationShift(estimate, lower, upper, confidence_level, p_value)
