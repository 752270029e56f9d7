"""Per-side preprocessing before a metric is classified: NaN handling, outlier removal,
and the tiny noise that lets a rank test run on two constant samples."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from analysis.metric_data import FloatArray

BoolArray = npt.NDArray[np.bool_]


def _floats(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def remove_nans(values: object) -> FloatArray:
    v = _floats(values)
    return v[~np.isnan(v)]


def replace_nans(values: object, value: float = 0.0) -> FloatArray:
    v = _floats(values).copy()
    v[np.isnan(v)] = value
    return v


def percentile_r7(values: object, q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics
    (Hyndman & Fan type 7, R's default and numpy's "linear")."""
    v = _floats(values)
    if v.size == 0:
        return float("nan")
    return float(np.percentile(v, q, method="linear"))


def iqr_outliers(
    values: object, factor: float = 1.5, reduce_sensitivity: bool = False
) -> BoolArray:
    """Mask of points outside [Q1 - factor*IQR, Q3 + factor*IQR].

    With `reduce_sensitivity` the fences never come inside the 1st and 99th
    percentiles, so small, tight samples do not lose their extremes.
    """
    v = _floats(values)
    if v.size == 0:
        return np.zeros(0, dtype=np.bool_)
    q1, q3 = percentile_r7(v, 25), percentile_r7(v, 75)
    iqr = q3 - q1
    lower, upper = q1 - factor * iqr, q3 + factor * iqr
    if reduce_sensitivity:
        lower = min(percentile_r7(v, 1), lower)
        upper = max(percentile_r7(v, 99), upper)
    mask: BoolArray = (v < lower) | (v > upper)
    return mask


def ksigma_outliers(values: object, k: float = 3.0) -> BoolArray:
    """Mask of points more than k population standard deviations from the mean."""
    v = _floats(values)
    if v.size == 0:
        return np.zeros(0, dtype=np.bool_)
    mask: BoolArray = np.abs(v - v.mean()) > k * v.std()
    return mask


def remove_outliers(
    values: object, factor: float = 3.0, reduce_sensitivity: bool = True
) -> FloatArray:
    """Drop IQR outliers; the defaults are the judge's (factor 3, reduced sensitivity)."""
    v = _floats(values)
    return v[~iqr_outliers(v, factor, reduce_sensitivity)]


def add_gaussian_noise(values: object, sd: float, rng: np.random.Generator) -> FloatArray:
    v = _floats(values)
    if sd == 0:
        return v.copy()
    noisy: FloatArray = v + rng.normal(0.0, abs(sd), v.size)
    return noisy
