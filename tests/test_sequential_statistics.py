"""Properties of the sequential judge's statistics, checked by simulation (fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.sequential.confidence_sequences import rate_ratio_cs
from analysis.sequential.counts_test import rate_log_e
from analysis.sequential.distribution_test import (
    bucket_scale,
    look_log_e,
    look_moments,
    stream_log_e,
    stream_sums,
)
from analysis.sequential.e_processes import (
    SHARE_LOG_RATIOS,
    normal_mixture_cs,
    normal_mixture_log_e,
    share_log_lr,
    t_log_e,
)
from analysis.sequential.series_test import batch_log_e

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


BOUNDS = np.concatenate([0.1 * 1.02 ** np.arange(-200, 201), [np.inf]])
_SCALE = bucket_scale(BOUNDS)


def _histograms(rng: np.random.Generator, reps: int, looks: int, n_mean: float,
                log_scale: float = 0.0, widen: float = 1.0,
                heavy: bool = False) -> np.ndarray:
    """(reps, looks, buckets) latency histograms on the mesh's 2% grid; traffic varies
    from look to look. `heavy`: a log-normal mixture (10% of requests in a slow mode
    3.3x slower and wider: skewed, kurtosis ~5 on the log scale)."""
    n = rng.poisson(rng.uniform(0.5, 1.5, (reps, looks)) * n_mean)
    total = int(n.sum())
    group = np.repeat(np.arange(reps * looks), n.ravel())
    z = rng.standard_normal(total)
    x = 0.5 * widen * z
    if heavy:
        slow = rng.random(total) < 0.1
        x = np.where(slow, 1.2 + 0.6 * widen * z, 0.4 * widen * z)
    x = x + math.log(0.1) + log_scale
    idx = np.clip(np.ceil((x - math.log(BOUNDS[0])) / math.log(1.02) - 1e-12), 0,
                  BOUNDS.size - 1).astype(np.int64)
    flat = np.bincount(group * BOUNDS.size + idx, minlength=reps * looks * BOUNDS.size)
    return flat.reshape(reps, looks, BOUNDS.size).astype(float)


def _crossed(log_e: np.ndarray, alpha: float = ALPHA) -> float:
    return float((log_e >= math.log(1 / alpha)).any(axis=-1).mean())


def test_normal_mixture_closed_form_matches_the_integral() -> None:
    b, a, tau = 37.0, 900.0, 0.06
    d = np.linspace(0, 1.0, 200_001)
    prior = 2 * np.exp(-d * d / (2 * tau * tau)) / (tau * math.sqrt(2 * math.pi))
    numeric = np.trapezoid(np.exp(d * b - d * d * a / 2) * prior, d)
    assert math.isclose(float(normal_mixture_log_e(np.array(b), np.array(a), tau)),
                        math.log(numeric), rel_tol=1e-6)
    assert float(normal_mixture_log_e(np.array(0.0), np.array(0.0), tau)) == 0.0


@pytest.mark.parametrize("heavy", [False, True])
def test_distribution_streams_are_anytime_valid_at_the_null_boundary(heavy: bool) -> None:
    rng = np.random.default_rng(7 + heavy)
    reps, looks, n = 2000, 30, 60  # many small looks: the hard case for a CLT
    hb = _histograms(rng, reps, looks, n, heavy=heavy)
    shifted = _histograms(rng, reps, looks, n, log_scale=math.log(1.03), heavy=heavy)
    for test in ("location", "q0.99"):  # canary exactly 3% slower, margin 3%
        sums = stream_sums(look_moments(hb, _SCALE.values), look_moments(shifted, _SCALE.values),
                           0.03, _SCALE, (test,))
        worse, _ = stream_log_e(sums)
        assert _crossed(worse[test]) <= ALPHA, test
        assert _crossed(worse[test], 0.01) <= 0.01, test
        # a supermartingale has E <= 1; the normal approximation of 60-request looks
        # leaves some slack, which the crossing rates above show is harmless
        assert np.exp(worse[test][:, -1]).mean() <= 1.35, test
    same = _histograms(rng, reps, looks, n, heavy=heavy)  # tail: equal spread, margin 0
    sums = stream_sums(look_moments(hb, _SCALE.values), look_moments(same, _SCALE.values),
                       0.0, _SCALE, ("tail",))
    worse, _ = stream_log_e(sums)
    assert _crossed(worse["tail"]) <= ALPHA
    assert _crossed(worse["tail"], 0.01) <= 0.01
    assert np.exp(worse["tail"][:, -1]).mean() <= 1.35


def test_distribution_evidence_grows_with_the_size_of_the_regression() -> None:
    rng = np.random.default_rng(9)
    hb = _histograms(rng, 200, 6, 500)
    shift_power, tail_power = [], []
    for x in (0.02, 0.05, 0.10):
        hc = _histograms(rng, 200, 6, 500, log_scale=math.log1p(x))
        worse, _ = look_log_e(hb, hc, 0.0, BOUNDS)
        shift_power.append(_crossed(worse, 0.01))
        hc = _histograms(rng, 200, 6, 500, widen=1 + math.log1p(x) / (0.5 * 2.326))
        worse, _ = look_log_e(hb, hc, 0.0, BOUNDS)
        tail_power.append(_crossed(worse, 0.01))
    assert shift_power[0] < shift_power[1] < shift_power[2] or shift_power[1] == 1.0
    assert tail_power[0] < tail_power[1] < tail_power[2]
    assert shift_power[2] > 0.95 and tail_power[2] > 0.5


def test_location_confidence_sequence_covers_uniformly_and_shrinks() -> None:
    rng = np.random.default_rng(10)
    truth = math.log(1.05)
    hb = _histograms(rng, 600, 12, 300, heavy=True)
    hc = _histograms(rng, 600, 12, 300, log_scale=truth, heavy=True)
    b, a = stream_sums(look_moments(hb, _SCALE.values), look_moments(hc, _SCALE.values),
                       0.0, _SCALE, ("location",))["location"]
    lo, hi = normal_mixture_cs(b, a, 0.06, ALPHA)
    missed = ((lo > truth) | (hi < truth)).any(axis=1).mean()
    assert missed <= ALPHA
    width = np.median(hi - lo, axis=0)
    assert width[-1] < width[2] < width[0] and width[-1] < 0.1


def test_promotion_evidence_for_a_distribution_within_its_margin() -> None:
    rng = np.random.default_rng(11)
    hb = _histograms(rng, 300, 10, 2000)
    hc = _histograms(rng, 300, 10, 2000)
    _, within = look_log_e(hb, hc, 0.05, BOUNDS)
    assert np.median(within[:, -1]) > math.log(100)
    # and promotion is rare when the canary sits right on the margin
    hw = _histograms(rng, 300, 10, 2000, log_scale=math.log(1.05))
    _, within_edge = look_log_e(hb, hw, 0.05, BOUNDS)
    assert _crossed(within_edge) <= ALPHA


def test_series_test_stays_valid_with_ar1_noise() -> None:
    rng = np.random.default_rng(12)
    reps, t, phi = 3000, 100, 0.8
    noise = np.empty((2, reps, t))
    noise[:, :, 0] = rng.normal(0, 1, (2, reps))
    innov = rng.normal(0, math.sqrt(1 - phi * phi), (2, reps, t))
    for i in range(1, t):
        noise[:, :, i] = phi * noise[:, :, i - 1] + innov[:, :, i]
    base, canary = 10 + noise[0], 10 + noise[1]
    bb = base.reshape(reps, -1, 10).mean(-1)
    bc = canary.reshape(reps, -1, 10).mean(-1)
    worse, _, _, _ = batch_log_e(bb, bc, 0.0)
    assert _crossed(worse) <= ALPHA


def test_t_e_process_is_anytime_valid_for_iid_normal_batches() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 3.0, (3000, 25))
    run = t_log_e(x)
    assert (run >= math.log(1 / ALPHA)).any(axis=1).mean() <= ALPHA
    shifted = t_log_e(rng.normal(1.0, 1.0, (300, 25)))
    assert np.median(shifted[:, -1]) > math.log(1 / 0.01)
