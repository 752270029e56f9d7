"""Per-metric classification with Kayenta's semantics (NetflixACAJudge's Mann-Whitney
classifier), plus the mean-inequality classifier Kayenta keeps for benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.effect_size import cles, mean_ratio
from analysis.judge_result import Classification
from analysis.mann_whitney import LocationShift, location_shift
from analysis.metric_config import Direction, EffectSize, NanStrategy, OutlierStrategy
from analysis.metric_data import FloatArray
from analysis.transforms import add_gaussian_noise, remove_nans, remove_outliers, replace_nans

# Kayenta perturbs two constant samples by this fraction of their value so the rank
# test has something to rank.
_NOISE_SCALE = 1e-5


@dataclass(frozen=True)
class MetricClassification:
    classification: Classification
    reason: str
    critical: bool
    # Kayenta's `resultMetadata.ratio`: mean(canary) / mean(baseline), NaN when a mean is 0.
    deviation: float
    effect_size: float = math.nan
    shift: LocationShift | None = None


def prepare(
    values: object,
    nan_strategy: NanStrategy = "remove",
    outlier_strategy: OutlierStrategy = "keep",
    outlier_factor: float = 3.0,
) -> FloatArray:
    """NaN handling, then (optionally) IQR outlier removal with reduced sensitivity."""
    v = remove_nans(values) if nan_strategy == "remove" else replace_nans(values, 0.0)
    if outlier_strategy == "remove":
        v = remove_outliers(v, outlier_factor, reduce_sensitivity=True)
    return v


def _direction_allows(direction: str, side: str) -> bool:
    # Unknown directions act as "either", as in Kayenta.
    if direction in ("increase", "decrease"):
        return direction == side
    return True


def classify_mann_whitney(
    control: object,
    experiment: object,
    *,
    direction: Direction | str = "either",
    nan_strategy: NanStrategy = "remove",
    critical: bool = False,
    must_have_data: bool = False,
    tolerance: float = 0.25,
    confidence_level: float = 0.98,
    effect_size: EffectSize | None = None,
    name: str = "metric",
    seed: int = 0,
    root_tolerance: float | None = None,
) -> MetricClassification:
    """Classify already-prepared samples (see `prepare`) the way Kayenta does.

    High/Low need the whole confidence interval of canary - baseline beyond
    `tolerance` * |estimate| and the effect size past its allowed gate; the result is
    critical only for a critical metric past its critical gate.
    """
    es = effect_size or EffectSize()
    allowed_decrease, allowed_increase, critical_decrease, critical_increase = es.thresholds()
    c = np.asarray(control, dtype=np.float64).reshape(-1)
    e = np.asarray(experiment, dtype=np.float64).reshape(-1)

    if c.size == 0 or e.size == 0:
        if nan_strategy == "remove":
            reason = f"Missing data for {name}"
            if must_have_data and not critical:
                return MetricClassification(Classification.NODATA_FAIL, reason, False, 1.0)
            return MetricClassification(Classification.NODATA, reason, critical, 1.0)
        return MetricClassification(Classification.PASS, "", False, 1.0)

    if c.size == e.size and np.array_equal(np.sort(c), np.sort(e)):
        return MetricClassification(
            Classification.PASS, "The canary and baseline data are identical", False, 1.0)
    if np.unique(np.concatenate((c, e))).size == 1:
        return MetricClassification(Classification.PASS, "", False, 1.0)

    if np.unique(c).size == 1 and np.unique(e).size == 1:
        rng = np.random.default_rng(seed)
        e = add_gaussian_noise(e, float(e[0]) * _NOISE_SCALE, rng)
        c = add_gaussian_noise(c, float(c[0]) * _NOISE_SCALE, rng)

    shift = location_shift(e, c, confidence_level, root_tolerance)
    deviation = mean_ratio(c, e)
    effect = cles(c, e) if es.measure == "cles" else deviation
    bound = tolerance * abs(shift.estimate)

    def passes_gate(gate: float, high: bool) -> bool:
        # An effect size that cannot be computed (zero mean) does not hold a result back.
        if math.isnan(effect):
            return True
        return effect >= gate if high else effect <= gate

    label = Classification.PASS
    if _direction_allows(direction, "increase") and shift.lower > bound \
            and passes_gate(allowed_increase, high=True):
        label = Classification.HIGH
    elif _direction_allows(direction, "decrease") and shift.upper < -bound \
            and passes_gate(allowed_decrease, high=False):
        label = Classification.LOW

    if label is Classification.PASS:
        return MetricClassification(label, "", False, deviation, effect, shift)
    is_critical = critical and passes_gate(
        critical_increase if label is Classification.HIGH else critical_decrease,
        high=label is Classification.HIGH)
    reason = f"{name} was classified as {label.value}" + (" (Critical)" if is_critical else "")
    return MetricClassification(label, reason, is_critical, deviation, effect, shift)


def classify_mean_inequality(
    control: object, experiment: object, *, direction: Direction | str = "either",
) -> MetricClassification:
    """High when the canary mean is above the baseline mean, Low when below."""
    c = np.asarray(control, dtype=np.float64).reshape(-1)
    e = np.asarray(experiment, dtype=np.float64).reshape(-1)
    if c.size == 0 or e.size == 0:
        return MetricClassification(Classification.NODATA, "Missing data", False, 0.0)
    mc, me = float(c.mean()), float(e.mean())
    ratio = me / mc if mc != 0 else math.nan
    if _direction_allows(direction, "increase") and me > mc:
        return MetricClassification(
            Classification.HIGH, "The canary mean was greater than the baseline mean", False, ratio)
    if _direction_allows(direction, "decrease") and me < mc:
        return MetricClassification(
            Classification.LOW, "The canary mean was less than the baseline mean", False, ratio)
    return MetricClassification(Classification.PASS, "", False, ratio)
