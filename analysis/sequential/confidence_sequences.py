"""Confidence sequences obtained by inverting the e-processes of e_processes.py.

A confidence sequence is a set of parameter values that covers the truth at every look
simultaneously with probability >= 1 - alpha: the values whose e-processes have not
reached 2/alpha (one e-process per side). Each side is a nonnegative supermartingale
under its own parameter value, so Ville's inequality bounds the chance that the truth
is ever excluded.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.sequential.e_processes import (
    SHARE_LOG_RATIOS,
    T_EFFECTS,
    FloatArray,
    normal_mixture_log_e,
    share_log_e,
    t_log_lr,
    t_statistics,
)

# log rate ratios the share confidence sequence is evaluated on: 0.02 resolution on the
# log scale (2%), from a 55x improvement to a 55x worsening.
_LOG_RATIO_GRID: FloatArray = np.arange(-4.0, 4.0001, 0.02)


def _interval_from_mask(grid: FloatArray, kept: np.ndarray) -> tuple[float, float]:
    if not np.any(kept):
        return (math.nan, math.nan)
    idx = np.flatnonzero(kept)
    lo = -math.inf if idx[0] == 0 else float(grid[idx[0]])
    hi = math.inf if idx[-1] == grid.size - 1 else float(grid[idx[-1]])
    return lo, hi


def rate_ratio_cs(k_c: FloatArray, k_b: FloatArray, n_c: FloatArray, n_b: FloatArray,
                  alpha: float) -> tuple[float, float]:
    """Confidence sequence for the canary/baseline event-rate ratio after the looks given.

    Arrays hold one entry per look: events and exposures (requests) per version. Exact
    for Poisson counts; for Bernoulli events it is a rare-event approximation.
    """
    kc = np.asarray(k_c, dtype=np.float64)
    kb = np.asarray(k_b, dtype=np.float64)
    nc = np.asarray(n_c, dtype=np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    if kc.size == 0:
        return (0.0, math.inf)
    rho = np.exp(_LOG_RATIO_GRID)[:, None]  # (grid, 1) against looks
    p0 = nc * rho / (nc * rho + nb)
    total = kc + kb
    up = share_log_e(kc, total, p0, SHARE_LOG_RATIOS)[:, -1]
    down = share_log_e(kc, total, p0, -SHARE_LOG_RATIOS)[:, -1]
    bound = math.log(2.0 / alpha)
    kept = (up < bound) & (down < bound)
    lo, hi = _interval_from_mask(_LOG_RATIO_GRID, kept)
    return (math.exp(lo), math.exp(hi))


def t_last_log_e(batch_means: FloatArray, effects: FloatArray) -> FloatArray:
    """log e-value of the sequential t test at the last batch only (cheap for grids)."""
    x = np.asarray(batch_means, dtype=np.float64)
    if x.shape[-1] < 2:
        return np.zeros(x.shape[:-1])
    t, n = t_statistics(x)
    lr = t_log_lr(t[..., -1], n[..., -1], effects)
    from scipy import special

    return np.asarray(special.logsumexp(lr, axis=-1) - math.log(lr.shape[-1]))


def mean_ratio_cs(baseline_means: FloatArray, canary_means: FloatArray,
                  alpha: float) -> tuple[float, float]:
    """Confidence sequence for mean(canary) / mean(baseline) from paired batch means.

    The value r is excluded when the t e-process on canary - r * baseline rejects a zero
    mean on either side.
    """
    b = np.asarray(baseline_means, dtype=np.float64)
    c = np.asarray(canary_means, dtype=np.float64)
    if b.size < 2:
        return (-math.inf, math.inf)
    centre = float(np.mean(c) / np.mean(b)) if np.mean(b) != 0 else 1.0
    if not math.isfinite(centre) or centre <= 0:
        centre = 1.0
    grid = np.exp(np.log(centre) + np.arange(-1.5, 1.5001, 0.01))
    diffs = c[None, :] - grid[:, None] * b[None, :]
    up = t_last_log_e(diffs, T_EFFECTS)
    down = t_last_log_e(diffs, -T_EFFECTS)
    bound = math.log(2.0 / alpha)
    kept = (up < bound) & (down < bound)
    lo, hi = _interval_from_mask(np.log(grid), kept)
    return (math.exp(lo), math.exp(hi))


def normal_mixture_bound(weighted_sum: float, information: float, tau: float, alpha: float,
                         sign: float) -> float:
    """One-sided confidence sequence bound from the half-normal mixture e-processes.

    sign +1: the lower bound, the smallest drift d0 whose "drift <= d0" e-process (sums
    re-centred: B - d0 A) is still below 1/alpha; sign -1: the upper bound, from the
    "drift >= d0" e-processes. So the rollback e-process at d0 = 0 crosses exactly when
    the lower bound passes 0, and the promotion one exactly when the upper bound does.
    """
    b, a = float(weighted_sum), float(information)
    if a <= 0:
        return -sign * math.inf
    target = math.log(1.0 / alpha)

    def excess(d0: float) -> float:
        return float(normal_mixture_log_e(np.asarray(b - d0 * a), np.asarray(a), tau,
                                          sign)) - target

    centre = b / a
    step = math.sqrt((a + 1.0 / (tau * tau)) * 2.0 * (target + 10.0)) / a
    lo, hi = centre - step, centre + step
    for _ in range(60):  # widen until the root is bracketed (excess is monotone in d0)
        if excess(lo) * excess(hi) <= 0:
            break
        lo, hi = centre - 2 * (centre - lo), centre + 2 * (hi - centre)
    else:
        return -sign * math.inf
    from scipy import optimize

    return float(optimize.brentq(excess, lo, hi, xtol=1e-10))
