"""Effect sizes of the canary (experiment) against the baseline (control)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analysis.metric_data import FloatArray


def _floats(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean_ratio(control: object, experiment: object) -> float:
    """mean(experiment) / mean(control); NaN when either mean is 0 or a side is empty."""
    c, e = _floats(control), _floats(experiment)
    if c.size == 0 or e.size == 0:
        return math.nan
    mc, me = float(c.mean()), float(e.mean())
    if mc == 0 or me == 0:
        return math.nan
    return me / mc


def cles(control: object, experiment: object) -> float:
    """Common-language effect size: P(experiment > control) + P(tie)/2, i.e. U/(m*n)."""
    c, e = _floats(control), _floats(experiment)
    m, n = e.size, c.size
    if m == 0 or n == 0:
        return math.nan
    ranks = stats.rankdata(np.concatenate((e, c)), method="average")
    r1 = float(ranks[:m].sum())
    return (2 * r1 - m * (m + 1)) / (2 * m * n)


def cohen_d(control: object, experiment: object) -> float:
    """Magnitude of the mean difference in units of the pooled sample standard deviation."""
    c, e = _floats(control), _floats(experiment)
    n1, n2 = c.size, e.size
    if n1 + n2 <= 2 or n1 == 0 or n2 == 0:
        return math.nan
    v1 = float(c.var(ddof=1)) if n1 > 1 else 0.0
    v2 = float(e.var(ddof=1)) if n2 > 1 else 0.0
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan
    return abs(float(e.mean()) - float(c.mean())) / pooled
