"""Per-side summary statistics as Kayenta reports them (`controlMetadata.stats`)."""

from __future__ import annotations

import numpy as np

from analysis.judge_result import SideStats


def summarize(values: object) -> SideStats:
    """count, mean, min, max and sample standard deviation; all 0 for no data, as
    Kayenta reports them, and std 0 for a single value."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return SideStats(count=0, mean=0.0, min=0.0, max=0.0, std=0.0)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return SideStats(count=int(v.size), mean=float(v.mean()), min=float(v.min()),
                     max=float(v.max()), std=std)
