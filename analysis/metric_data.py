"""What a provider hands to a judge for one metric, one version and one window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Scope = Literal["baseline", "canary"]
SCOPES: tuple[Scope, Scope] = ("baseline", "canary")

FloatArray = npt.NDArray[np.float64]


def _floats(values: object) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class Series:
    """Per-interval values of one version (NaN where the source had no value)."""

    timestamps: FloatArray
    values: FloatArray

    @staticmethod
    def of(timestamps: object, values: object) -> Series:
        ts, vs = _floats(timestamps), _floats(values)
        if ts.shape != vs.shape:
            raise ValueError(f"series has {ts.size} timestamps but {vs.size} values")
        return Series(ts, vs)

    @staticmethod
    def values_only(values: object) -> Series:
        vs = _floats(values)
        return Series(np.arange(vs.size, dtype=np.float64), vs)


@dataclass(frozen=True)
class Histogram:
    """Per-bucket (not cumulative) counts of observations, e.g. request latencies.

    Bucket i holds observations in (upper_bounds[i-1], upper_bounds[i]]; the last bound
    may be +inf.
    """

    upper_bounds: FloatArray
    counts: FloatArray

    @staticmethod
    def of(upper_bounds: object, counts: object) -> Histogram:
        ub, c = _floats(upper_bounds), _floats(counts)
        if ub.shape != c.shape:
            raise ValueError(f"histogram has {ub.size} bounds but {c.size} counts")
        if ub.size and np.any(np.diff(ub) <= 0):
            raise ValueError("histogram bucket bounds must increase")
        if np.any(c < 0):
            raise ValueError("histogram counts must not be negative")
        return Histogram(ub, c)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def on_grid(self, bounds: FloatArray) -> Histogram:
        """These counts on a grid holding every bound of this histogram: each bucket's
        count goes to the grid bucket that ends at the same bound. Exact when the grids
        agree where this histogram has counts, as when a source leaves out empty buckets
        (the mesh does) so baseline and canary arrive with different bounds."""
        grid = np.asarray(bounds, dtype=np.float64)
        idx = np.searchsorted(grid, self.upper_bounds)
        if np.any(idx >= grid.size) or np.any(grid[np.minimum(idx, grid.size - 1)]
                                              != self.upper_bounds):
            raise ValueError("the grid does not hold every bound of the histogram")
        counts = np.zeros(grid.size, dtype=np.float64)
        np.add.at(counts, idx, self.counts)
        return Histogram(grid, counts)


def common_grid(*histograms: Histogram) -> FloatArray:
    """The union of the histograms' bounds, for comparing them bucket by bucket."""
    grid = np.zeros(0, dtype=np.float64)
    for h in histograms:
        grid = np.union1d(grid, h.upper_bounds)
    return grid


@dataclass(frozen=True)
class Counts:
    """Events out of trials in one window, e.g. 5xx responses out of requests."""

    events: float
    trials: float

    def __post_init__(self) -> None:
        if self.events < 0 or self.trials < 0 or self.events > self.trials:
            raise ValueError(f"counts need 0 <= events <= trials, got {self.events}/{self.trials}")


@dataclass(frozen=True)
class MetricData:
    """Everything one source could say about one metric for one version.

    A source fills what it has: the mesh fills all three for latency and errors,
    Prometheus a series or a histogram, a file replay a series. Each judge uses the
    richest form it understands.
    """

    series: Series | None = None
    histogram: Histogram | None = None
    counts: Counts | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        no_series = self.series is None or not np.any(np.isfinite(self.series.values))
        no_hist = self.histogram is None or self.histogram.total == 0
        no_counts = self.counts is None or self.counts.trials == 0
        return no_series and no_hist and no_counts


@dataclass(frozen=True)
class MetricPair:
    """Baseline (Kayenta's control) and canary (Kayenta's experiment) data of one metric."""

    baseline: MetricData
    canary: MetricData
