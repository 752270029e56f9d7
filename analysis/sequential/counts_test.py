"""Sequential test of an event rate (errors, any ratio metric) between two versions.

Conditioning on the events both versions produced in a look, the canary's share of
them is binomial with a success probability fixed by the traffic each version got in
that look; so the traffic split may change at every step. At the null boundary "canary
rate = (1 + margin) * baseline rate" that probability is
p0 = n_c (1 + m) / (n_c (1 + m) + n_b). The e-process is a mixture over alternatives
of the product of per-look likelihood ratios (e_processes.share_log_e).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from analysis.judge_result import SideStats
from analysis.metric_config import Direction
from analysis.metric_data import Counts
from analysis.sequential.confidence_sequences import rate_ratio_cs
from analysis.sequential.e_processes import SHARE_LOG_RATIOS, FloatArray, share_log_e
from analysis.sequential.reading import Reading


def boundary_share(n_worse: FloatArray, n_ref: FloatArray, ratio: float) -> FloatArray:
    """Share of events expected on the `worse` side when its rate is `ratio` x the other's."""
    nw = np.asarray(n_worse, dtype=np.float64)
    nr = np.asarray(n_ref, dtype=np.float64)
    with np.errstate(all="ignore"):
        p = nw * ratio / (nw * ratio + nr)
    return np.where(np.isfinite(p), p, 0.5)


def rate_log_e(k_w: FloatArray, k_r: FloatArray, n_w: FloatArray, n_r: FloatArray,
               margin: float) -> tuple[FloatArray, FloatArray]:
    """Running log e-values (last axis = looks) that side w's rate exceeds (1+margin) x
    side r's (rollback evidence), and that it stays below it (promotion evidence)."""
    p0 = boundary_share(n_w, n_r, 1.0 + margin)
    total = np.asarray(k_w, dtype=np.float64) + np.asarray(k_r, dtype=np.float64)
    worse = share_log_e(k_w, total, p0, SHARE_LOG_RATIOS)
    within = share_log_e(k_w, total, p0, -SHARE_LOG_RATIOS)
    return worse, within


def _orientations(direction: Direction) -> tuple[str, ...]:
    if direction == "increase":
        return ("increase",)
    if direction == "decrease":
        return ("decrease",)
    return ("increase", "decrease")


def counts_update(state: Mapping[str, Any] | None, baseline: Counts | None,
                  canary: Counts | None, *, direction: Direction, margin: float,
                  alpha: float) -> tuple[Reading, dict[str, Any]]:
    """Fold one look of counts into the test; returns the reading and the new state.

    State: {"kind": "counts", "looks": [[k_canary, n_canary, k_baseline, n_baseline]...]}.
    A look where either version served nothing adds no evidence.
    """
    looks: list[list[float]] = [list(x) for x in (state or {}).get("looks", [])]
    if (baseline is not None and canary is not None
            and baseline.trials > 0 and canary.trials > 0):
        looks.append([float(canary.events), float(canary.trials),
                      float(baseline.events), float(baseline.trials)])
    new_state: dict[str, Any] = {"kind": "counts", "looks": looks}
    if not looks:
        reading = Reading(0.0, 0.0, math.nan, (math.nan, math.nan), "sequential counts",
                          has_data=False)
        return reading, new_state
    arr = np.asarray(looks, dtype=np.float64)
    kc, nc, kb, nb = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
    worse_best = -math.inf
    worse_side = "increase"
    within_all = math.inf
    worse_terms = []
    for side in _orientations(direction):
        if side == "increase":
            w, wi = rate_log_e(kc, kb, nc, nb, margin)
        else:
            w, wi = rate_log_e(kb, kc, nb, nc, margin)
        worse_terms.append(float(w[-1]))
        if w[-1] > worse_best:
            worse_best, worse_side = float(w[-1]), side
        within_all = min(within_all, float(wi[-1]))
    # Two sides: the average of their e-values is an e-value.
    log_worse = float(np.logaddexp.reduce(worse_terms) - math.log(len(worse_terms)))
    rate_c = float(kc.sum() / nc.sum())
    rate_b = float(kb.sum() / nb.sum())
    ratio = rate_c / rate_b if rate_b > 0 else (math.inf if rate_c > 0 else 1.0)
    lo, hi = rate_ratio_cs(kc, kb, nc, nb, alpha)
    reading = Reading(
        log_e_worse=log_worse,
        log_e_within=within_all,
        effect=ratio - 1.0,
        interval=(lo - 1.0, hi - 1.0),
        method="sequential counts: mixture likelihood ratio of the canary's share of events",
        worse_side=worse_side,
        details={"canary_events": float(kc.sum()), "canary_trials": float(nc.sum()),
                 "baseline_events": float(kb.sum()), "baseline_trials": float(nb.sum()),
                 "looks": float(len(looks))},
        baseline=_rate_stats(kb, nb),
        canary=_rate_stats(kc, nc),
        ratio=float(ratio),
    )
    return reading, new_state


def _rate_stats(k: FloatArray, n: FloatArray) -> SideStats:
    with np.errstate(all="ignore"):
        rates = np.where(n > 0, k / n, np.nan)
    finite = rates[np.isfinite(rates)]
    if finite.size == 0:
        return SideStats(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(k.sum() / n.sum())
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return SideStats(int(finite.size), mean, float(finite.min()), float(finite.max()), std)
