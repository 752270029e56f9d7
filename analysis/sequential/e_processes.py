"""Mixture e-processes: the evidence quantities every sequential test here multiplies.

Two families, both vectorised over any leading batch axes and a trailing axis of looks,
so the judge (one rollout) and the benchmark (thousands of simulated rollouts) run the
same arithmetic:

* the *binomial share* e-process for "which version did the events land in", used by
  the counts and the distribution tests;
* the *sequential t* e-process (scale-invariant likelihood ratio of the t statistic),
  used on batch means of per-interval paired differences.

The maths and references are in README.md next to this file.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special, stats

FloatArray = npt.NDArray[np.float64]

# Alternatives of the share test, as log odds ratios beyond the null boundary. A grid
# with equal weights is a proper prior, so the mixture is an e-process; it spans a 2%
# to a 12x worsening because smaller effects cannot be seen in a rollout and a larger
# one is caught by the top of the grid anyway.
SHARE_LOG_RATIOS: FloatArray = np.geomspace(0.02, 2.5, 16)

# Tilts of the rank-score test (e_processes.score_log_e): scores live in [0, 1], and the
# tilt that best detects a mean score shift d with n canary requests is about 12 d; the
# grid covers shifts from a fraction of a percent to gross regressions.
SCORE_TILTS: FloatArray = np.geomspace(0.05, 12.0, 12)

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


def score_log_e_look(pooled: FloatArray, canary_mapped: FloatArray, scores: FloatArray,
                     tilts: FloatArray) -> FloatArray:
    """Per-look log e-values of a rank-score test, one per tilt (new last axis).

    `pooled` holds the counts per bucket of both versions together, `canary_mapped` the
    canary's counts per bucket (a subset of `pooled`), `scores` a score per bucket
    (same shapes, last axis = buckets). With S the canary's score sum, n_c its count and
    N the pooled count, e(l) = exp(l S) / (mean over the pooled requests of
    exp(l s))^n_c. Conditionally on the pooled multiset the canary's requests are a
    sample without replacement from it when the versions do not differ, and by
    Hoeffding (1963, Thm. 4) E exp(l S) is at most that power of the mean: e(l) is an
    e-value for any real l.
    """
    p = np.asarray(pooled, dtype=np.float64)[..., None, :]
    c = np.asarray(canary_mapped, dtype=np.float64)[..., None, :]
    s = np.asarray(scores, dtype=np.float64)[..., None, :]
    lam = np.asarray(tilts, dtype=np.float64)[:, None]
    n_all = p.sum(axis=-1)
    n_c = c.sum(axis=-1)
    total_score = (c * s).sum(axis=-1)
    with np.errstate(divide="ignore"):
        log_mean = special.logsumexp(lam * s, b=p, axis=-1) - np.log(n_all)
    out = lam[..., 0] * total_score - n_c * log_mean
    return np.asarray(np.where(n_all > 0, out, 0.0), dtype=np.float64)


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
