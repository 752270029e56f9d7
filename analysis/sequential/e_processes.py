"""Mixture e-processes: the evidence quantities every sequential test here multiplies.

Three families, all vectorised over any leading batch axes and a trailing axis of looks,
so the judge (one rollout) and the benchmark (thousands of simulated rollouts) run the
same arithmetic:

* the *binomial share* e-process for "which version did the events land in", used by
  the counts test;
* the *Gaussian mixture* e-process (Robbins' normal mixture, one-sided) on a cumulative
  sum of asymptotically normal look-level differences, used by the distribution test;
* the *sequential t* e-process (scale-invariant likelihood ratio of the t statistic),
  used on batch means of per-interval paired differences.

The maths and references are in README.md next to this file.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special, stats

FloatArray = npt.NDArray[np.float64]

# Alternatives of the share test, as log odds ratios beyond the null boundary. A grid
# with equal weights is a proper prior, so the mixture is an e-process. Error counts in a
# rollout are small (tens of events), so only rate ratios of about 1.5x and up can be
# told apart at all; most of the mass sits on 1.5x-3x, the regressions a release breaks,
# and the top of the grid (6x) still catches gross ones at the first look.
SHARE_LOG_RATIOS: FloatArray = np.geomspace(0.4, 1.8, 8)

# Alternatives of the t test, as standardised effects of one batch mean.
T_EFFECTS: FloatArray = np.geomspace(0.15, 4.0, 12)


def _log_mean_exp(x: FloatArray, axis: int = -1) -> FloatArray:
    return np.asarray(special.logsumexp(x, axis=axis) - np.log(x.shape[axis]), dtype=np.float64)


def share_log_lr(k: FloatArray, total: FloatArray, p0: FloatArray,
                 log_ratios: FloatArray) -> FloatArray:
    """Per-look log likelihood ratios of the canary's share of events.

    `k` canary events out of `total` events of both versions, `p0` the canary's share
    at the null boundary; alternative j tilts the odds of p0 by exp(log_ratios[j]).
    Shapes broadcast; the result has one more trailing axis, the alternatives.
    """
    k_ = np.asarray(k, dtype=np.float64)[..., None]
    n_ = np.asarray(total, dtype=np.float64)[..., None]
    p_ = np.clip(np.asarray(p0, dtype=np.float64), 1e-12, 1 - 1e-12)[..., None]
    th = np.asarray(log_ratios, dtype=np.float64)
    # log(1 - p0 + p0 e^th), stable for either sign of th
    log_norm = np.logaddexp(np.log1p(-p_), np.log(p_) + th)
    return np.asarray(th * k_ - n_ * log_norm, dtype=np.float64)


def share_log_e(k: FloatArray, total: FloatArray, p0: FloatArray,
                log_ratios: FloatArray = SHARE_LOG_RATIOS) -> FloatArray:
    """Running log e-values of the mixture share test, one per look (last axis).

    Positive `log_ratios` test "the canary's share is no more than p0" (evidence that
    the canary is worse); negative ones test "no less than p0" (evidence that it is
    better than the boundary).
    """
    per_look = share_log_lr(k, total, p0, log_ratios)  # (..., looks, G)
    running = np.cumsum(per_look, axis=-2)
    return _log_mean_exp(running, axis=-1)


def normal_mixture_log_e(weighted_sum: FloatArray, information: FloatArray, tau: float,
                         sign: float = 1.0) -> FloatArray:
    """log e-value of the one-sided Gaussian mixture test of "drift <= 0" (sign +1) or
    "drift >= 0" (sign -1).

    With look-level differences D_i ~ N(delta, v_i) (asymptotically), B = sum D_i / v_i
    and A = sum 1 / v_i, exp(d B - d^2 A / 2) is a supermartingale under delta <= 0 for
    every d >= 0. Mixing d over a half-normal with scale `tau` (in the units of delta)
    gives, with P = A + 1 / tau^2,
    E = 2 / (tau sqrt(P)) exp(B^2 / (2 P)) Phi(B / sqrt(P))
    (Robbins 1970; the mSPRT of Johari, Pekelis & Walsh 2022 with a one-sided prior).
    """
    b = sign * np.asarray(weighted_sum, dtype=np.float64)
    a = np.maximum(np.asarray(information, dtype=np.float64), 0.0)
    p = a + 1.0 / (tau * tau)
    root = np.sqrt(p)
    out = (math.log(2.0) - np.log(tau * root) + b * b / (2.0 * p)
           + special.log_ndtr(b / root))
    return np.asarray(out, dtype=np.float64)


def normal_mixture_cs(weighted_sum: FloatArray, information: FloatArray, tau: float,
                      alpha: float) -> tuple[FloatArray, FloatArray]:
    """Two-sided Gaussian-mixture confidence sequence for delta: B/A -+ w/A with
    w = sqrt(2 P (log(1/alpha) + log(tau sqrt(P)))), P = A + 1/tau^2 (Howard et al.
    2021, eq. (14) with a normal mixing distribution). Infinite before any information."""
    b = np.asarray(weighted_sum, dtype=np.float64)
    a = np.asarray(information, dtype=np.float64)
    p = a + 1.0 / (tau * tau)
    half = np.sqrt(2.0 * p * (math.log(1.0 / alpha) + np.log(tau * np.sqrt(p))))
    with np.errstate(all="ignore"):
        centre = b / a
        w = half / a
    ok = a > 0
    return (np.where(ok, centre - w, -np.inf), np.where(ok, centre + w, np.inf))


def t_log_lr(t_stat: FloatArray, n: FloatArray, effects: FloatArray) -> FloatArray:
    """log f(t | noncentral t, df n-1, nc = effect * sqrt(n)) / f(t | central t)."""
    t_ = np.asarray(t_stat, dtype=np.float64)[..., None]
    n_ = np.asarray(n, dtype=np.float64)[..., None]
    df = np.maximum(n_ - 1.0, 1.0)
    nc = np.asarray(effects, dtype=np.float64) * np.sqrt(n_)
    with np.errstate(all="ignore"):
        out = stats.nct.logpdf(t_, df, nc) - stats.t.logpdf(t_, df)
    return np.asarray(np.where(np.isfinite(out), out, 0.0), dtype=np.float64)


def t_statistics(batch_means: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Running t statistics of the batch means along the last axis, and their n.

    Entries with fewer than two means, or no spread, get t = 0 (an e-value of 1).
    """
    x = np.asarray(batch_means, dtype=np.float64)
    n = np.arange(1, x.shape[-1] + 1, dtype=np.float64)
    s1 = np.cumsum(x, axis=-1)
    s2 = np.cumsum(x * x, axis=-1)
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0.0) / np.maximum(n - 1.0, 1.0)
    with np.errstate(all="ignore"):
        t = mean / np.sqrt(var / n)
    ok = (n >= 2) & (var > 1e-300 * np.maximum(1.0, mean * mean))
    return np.where(ok & np.isfinite(t), t, 0.0), np.broadcast_to(n, x.shape)


def t_log_e(batch_means: FloatArray, effects: FloatArray = T_EFFECTS) -> FloatArray:
    """Running log e-values of the sequential t test of "mean <= 0" along the last axis.

    Positive `effects` collect evidence that the mean is above 0; pass negative ones for
    evidence that it is below 0. Valid when the batch means are independent normal
    with a common unknown variance; scale-free, so no variance needs to be guessed.
    """
    t, n = t_statistics(batch_means)
    lr = t_log_lr(t, n, effects)
    few = (n < 2)[..., None]
    return _log_mean_exp(np.where(few, 0.0, lr), axis=-1)
