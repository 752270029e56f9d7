"""Properties of the sequential judge's statistics, checked by simulation (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np

from analysis.sequential.confidence_sequences import rate_ratio_cs
from analysis.sequential.counts_test import rate_log_e
from analysis.sequential.distribution_test import look_log_e, running_log_e
from analysis.sequential.e_processes import SHARE_LOG_RATIOS, share_log_lr, t_log_e

ALPHA = 0.05


def _poisson_looks(rng: np.random.Generator, reps: int, looks: int, rate_b: float,
                   ratio: float) -> tuple[np.ndarray, ...]:
    # traffic shares change every look, as they do across rollout steps
    n_c = rng.integers(100, 2000, (reps, looks)).astype(float)
    n_b = rng.integers(100, 2000, (reps, looks)).astype(float)
    k_c = rng.poisson(n_c * rate_b * ratio).astype(float)
    k_b = rng.poisson(n_b * rate_b).astype(float)
    return k_c, k_b, n_c, n_b


def test_share_likelihood_ratio_has_mean_one_at_the_boundary() -> None:
    rng = np.random.default_rng(1)
    p0 = 0.3
    total = np.full(200_000, 20.0)
    k = rng.binomial(20, p0, total.size).astype(float)
    lr = np.exp(share_log_lr(k, total, np.full(total.size, p0), SHARE_LOG_RATIOS[::4]))
    means = lr.mean(axis=0)
    assert np.all(np.abs(means - 1.0) < 0.05), means


def test_counts_e_process_is_anytime_valid_under_the_null() -> None:
    rng = np.random.default_rng(2)
    k_c, k_b, n_c, n_b = _poisson_looks(rng, 4000, 30, 0.01, 1.05)  # on the boundary
    worse, _ = rate_log_e(k_c, k_b, n_c, n_b, margin=0.05)
    e_final = np.exp(worse[:, -1])
    assert e_final.mean() <= 1.1
    crossed = (worse >= math.log(1 / ALPHA)).any(axis=1).mean()
    assert crossed <= ALPHA


def test_counts_e_process_stays_small_inside_the_null() -> None:
    rng = np.random.default_rng(3)
    k_c, k_b, n_c, n_b = _poisson_looks(rng, 2000, 30, 0.01, 0.9)
    worse, _ = rate_log_e(k_c, k_b, n_c, n_b, margin=0.05)
    assert (worse >= math.log(1 / ALPHA)).any(axis=1).mean() <= ALPHA / 2


def test_evidence_grows_with_effect_size() -> None:
    rng = np.random.default_rng(4)
    medians = []
    for ratio in (1.2, 1.6, 2.5):
        k_c, k_b, n_c, n_b = _poisson_looks(rng, 500, 10, 0.01, ratio)
        worse, _ = rate_log_e(k_c, k_b, n_c, n_b, margin=0.05)
        medians.append(float(np.median(worse[:, -1])))
    assert medians[0] < medians[1] < medians[2]
    assert medians[2] > math.log(1 / 0.01)


def test_promotion_evidence_grows_when_the_canary_is_better() -> None:
    rng = np.random.default_rng(5)
    k_c, k_b, n_c, n_b = _poisson_looks(rng, 500, 10, 0.02, 0.5)
    _, within = rate_log_e(k_c, k_b, n_c, n_b, margin=0.05)
    assert np.median(within[:, -1]) > math.log(100)
    assert np.median(within[:, 2]) < np.median(within[:, -1])


def test_rate_ratio_confidence_sequence_covers_uniformly_over_time() -> None:
    rng = np.random.default_rng(6)
    truth = 1.3
    reps, looks = 300, 12
    k_c, k_b, n_c, n_b = _poisson_looks(rng, reps, looks, 0.01, truth)
    missed = 0
    widths = []
    for i in range(reps):
        for t in (1, 3, 6, looks):
            lo, hi = rate_ratio_cs(k_c[i, :t], k_b[i, :t], n_c[i, :t], n_b[i, :t], ALPHA)
            if not lo <= truth <= hi:
                missed += 1
                break
            if t == looks:
                widths.append(math.log(hi / lo))
    assert missed / reps <= ALPHA
    assert float(np.median(widths)) < 1.0  # it does shrink: narrower than a factor e


def test_distribution_test_is_valid_under_a_null_shift_and_sensitive_to_a_real_one() -> None:
    rng = np.random.default_rng(7)
    bounds = np.concatenate([0.1 * 1.02 ** np.arange(-110, 111), [np.inf]])

    def hist(shift: float, reps: int, looks: int, n: int) -> np.ndarray:
        x = np.log(0.1) + shift + 0.5 * rng.standard_normal((reps, looks, n))
        idx = np.clip(np.ceil((x - math.log(bounds[0])) / math.log(1.02) - 1e-12), 0,
                      bounds.size - 1).astype(int)
        out = np.zeros((reps, looks, bounds.size))
        np.add.at(out, (np.arange(reps)[:, None, None], np.arange(looks)[None, :, None], idx),
                  1.0)
        return out

    # canary exactly 2% slower with a 2% margin: the null boundary
    reps, looks, n = 400, 8, 300
    hb, hc = hist(0.0, reps, looks, n), hist(math.log(1.02), reps, looks, n)
    up, _ = look_log_e(hb, hc, 0.02, ("shift", "tail"), bounds)
    run = running_log_e(up)
    assert (run >= math.log(1 / ALPHA)).any(axis=(1, 2)).mean() <= ALPHA
    assert np.exp(run[:, -1, :]).mean() <= 1.2
    # a 20% regression is found
    hc_bad = hist(math.log(1.2), 100, 3, n)
    up_bad, _ = look_log_e(hb[:100, :3], hc_bad, 0.02, ("shift", "tail"), bounds)
    assert np.median(running_log_e(up_bad)[:, -1, 0]) > math.log(1000)


def test_t_e_process_is_anytime_valid_for_iid_normal_batches() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 3.0, (3000, 25))
    run = t_log_e(x)
    assert (run >= math.log(1 / ALPHA)).any(axis=1).mean() <= ALPHA
    shifted = t_log_e(rng.normal(1.0, 1.0, (300, 25)))
    assert np.median(shifted[:, -1]) > math.log(1 / 0.01)
