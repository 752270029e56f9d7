"""Sequential test on per-interval series (CPU, memory, provider aggregates).

Per-interval values of the two versions are paired by timestamp and accumulated into
batches of a fixed number of intervals, whatever the look size (so consulting the
judge more often does not change the test). For a batch, D = mean(canary) -
(1 + margin) * mean(baseline): the batch means of an autocorrelated series are close to
independent once a batch spans several correlation times, and their variance is unknown,
so the scale-invariant sequential t test (e_processes.t_log_e) is run on the D's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from analysis.judge_result import SideStats
from analysis.metric_config import Direction
from analysis.metric_data import Series
from analysis.sequential.confidence_sequences import mean_ratio_cs
from analysis.sequential.e_processes import T_EFFECTS, FloatArray, t_log_e
from analysis.sequential.reading import Reading

DEFAULT_BATCH = 10


def paired_values(baseline: Series, canary: Series) -> tuple[FloatArray, FloatArray]:
    """Values of both versions at the timestamps they share, NaN pairs dropped."""
    common, ib, ic = np.intersect1d(baseline.timestamps, canary.timestamps,
                                    return_indices=True)
    b = baseline.values[ib]
    c = canary.values[ic]
    ok = np.isfinite(b) & np.isfinite(c)
    order = np.argsort(common[ok], kind="stable")
    return b[ok][order], c[ok][order]


def batch_log_e(batch_b: FloatArray, batch_c: FloatArray,
                margin: float) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Running log e-values along the last axis (batches): (canary worse upward,
    within upward, canary worse downward, within downward)."""
    up = np.asarray(batch_c) - (1.0 + margin) * np.asarray(batch_b)
    down = np.asarray(batch_b) - (1.0 + margin) * np.asarray(batch_c)
    return (t_log_e(up, T_EFFECTS), t_log_e(up, -T_EFFECTS),
            t_log_e(down, T_EFFECTS), t_log_e(down, -T_EFFECTS))


def series_update(state: Mapping[str, Any] | None, baseline: Series | None,
                  canary: Series | None, *, direction: Direction, margin: float,
                  alpha: float, batch: int = DEFAULT_BATCH) -> tuple[Reading, dict[str, Any]]:
    """Fold one look of series into the test; returns the reading and the new state.

    State: {"kind": "series", "pending": [[b, c]...] (intervals not yet in a full
    batch), "batches": [[mean_b, mean_c]...]}.
    """
    prev = state or {}
    pending: list[list[float]] = [list(p) for p in prev.get("pending", [])]
    batches: list[list[float]] = [list(p) for p in prev.get("batches", [])]
    if baseline is not None and canary is not None:
        b, c = paired_values(baseline, canary)
        pending.extend([float(x), float(y)] for x, y in zip(b, c, strict=True))
    while len(pending) >= batch:
        chunk = np.asarray(pending[:batch])
        batches.append([float(chunk[:, 0].mean()), float(chunk[:, 1].mean())])
        pending = pending[batch:]
    new_state: dict[str, Any] = {"kind": "series", "pending": pending, "batches": batches}
    all_pairs = np.asarray([[*bm] for bm in batches] + pending, dtype=np.float64)
    if all_pairs.size == 0:
        return Reading(0.0, 0.0, math.nan, (math.nan, math.nan), "sequential series",
                       has_data=False), new_state
    arr = np.asarray(batches, dtype=np.float64).reshape(-1, 2)
    if arr.shape[0] >= 2:
        wu, iu, wd, idn = (float(x[-1]) for x in batch_log_e(arr[:, 0], arr[:, 1], margin))
    else:
        wu = iu = wd = idn = 0.0
    if direction == "increase":
        terms, within, worse_side = [wu], iu, "increase"
    elif direction == "decrease":
        terms, within, worse_side = [wd], idn, "decrease"
    else:
        terms, within = [wu, wd], min(iu, idn)
        worse_side = "increase" if wu >= wd else "decrease"
    log_worse = float(np.logaddexp.reduce(terms) - math.log(len(terms)))
    # Effect and side statistics from every paired interval seen, batched or not.
    weights = [batch] * arr.shape[0]
    pend = np.asarray(pending, dtype=np.float64).reshape(-1, 2)
    total_b = float(arr[:, 0] @ np.asarray(weights, dtype=np.float64) + pend[:, 0].sum())
    total_c = float(arr[:, 1] @ np.asarray(weights, dtype=np.float64) + pend[:, 1].sum())
    ratio = total_c / total_b if total_b != 0 else math.nan
    lo, hi = mean_ratio_cs(arr[:, 0], arr[:, 1], alpha) if arr.shape[0] >= 2 else (
        -math.inf, math.inf)
    reading = Reading(
        log_e_worse=log_worse,
        log_e_within=within,
        effect=ratio - 1.0,
        interval=(lo - 1.0, hi - 1.0),
        method=(f"sequential series: t e-process on batch means of {batch} paired "
                "intervals; effect = mean ratio - 1"),
        worse_side=worse_side,
        details={"batches": float(arr.shape[0]), "pending_intervals": float(len(pending))},
        baseline=_stats(arr[:, 0], pend[:, 0], batch),
        canary=_stats(arr[:, 1], pend[:, 1], batch),
        ratio=ratio,
    )
    return reading, new_state


def _stats(batch_means: FloatArray, pending: FloatArray, batch: int) -> SideStats:
    n = batch_means.size * batch + pending.size
    if n == 0:
        return SideStats(0, math.nan, math.nan, math.nan, math.nan)
    values = np.concatenate([batch_means, pending])
    mean = float((batch_means.sum() * batch + pending.sum()) / n)
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    # Min/max/std are over batch means and unbatched intervals: the state keeps no more.
    return SideStats(int(n), mean, float(values.min()), float(values.max()), std)
