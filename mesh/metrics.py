"""Request counters and latency histograms of the data plane, their Prometheus text
exposition, and the ring of snapshots the `mesh` provider reads (mesh/README.md).

The hot path is `VersionStats.observe`: two list increments, a float add and one
`math.log`. Everything else (exposition, deltas, percentiles) runs off the hot path.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Log-spaced bucket upper bounds: each bucket is 2% wider than the one before, so a
# quantile read off the histogram (interpolated inside its bucket) is within 1% of the
# true value, and never off by more than the 2% bucket width.
FIRST_BOUND = 50e-6
RATIO = 1.02
LAST_BOUND = 60.0


def _bounds() -> tuple[float, ...]:
    bounds = [FIRST_BOUND]
    while bounds[-1] < LAST_BOUND:
        bounds.append(FIRST_BOUND * RATIO ** len(bounds))
    return tuple(bounds)


BOUNDS: tuple[float, ...] = _bounds()
_N = len(BOUNDS)
_INV_LOG_RATIO = 1.0 / math.log(RATIO)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def bucket_index(seconds: float) -> int:
    """Index of the bucket (BOUNDS[i-1], BOUNDS[i]] holding `seconds`; slower than the
    last bound lands in the last bucket."""
    if seconds <= FIRST_BOUND:
        return 0
    i = math.ceil(math.log(seconds / FIRST_BOUND) * _INV_LOG_RATIO)
    # Float rounding may put a value that sits on a bound one bucket off either way.
    if i < _N and seconds > BOUNDS[i]:
        i += 1
    elif i > 0 and i - 1 < _N and seconds <= BOUNDS[i - 1]:
        i -= 1
    return i if i < _N else _N - 1


class VersionStats:
    """Cumulative counters of one (service, version).

    `by_class`, `buckets` and `sum_cell` are any mutable sequences: plain lists in a
    single process, views of a shared-memory slot in a worker (mesh/shared_stats.py).
    """

    __slots__ = ("buckets", "by_class", "service", "sum_cell", "version")

    def __init__(
        self, service: str, version: str, *,
        by_class: Any = None, buckets: Any = None, sum_cell: Any = None,
    ) -> None:
        self.service = service
        self.version = version
        # Index = status // 100; index 0 collects nonsense status codes.
        self.by_class = [0] * 6 if by_class is None else by_class
        self.buckets = [0] * _N if buckets is None else buckets
        self.sum_cell = [0.0] if sum_cell is None else sum_cell

    @property
    def latency_sum(self) -> float:
        return float(self.sum_cell[0])

    @property
    def count(self) -> int:
        return int(sum(self.by_class))

    def observe(self, status: int, seconds: float) -> None:
        cls = status // 100
        self.by_class[cls if 0 < cls < 6 else 0] += 1
        self.sum_cell[0] += seconds
        if seconds <= FIRST_BOUND:
            self.buckets[0] += 1
            return
        # bucket_index() inlined: this runs once per request.
        i = math.ceil(math.log(seconds / FIRST_BOUND) * _INV_LOG_RATIO)
        if i < _N and seconds > BOUNDS[i]:
            i += 1
        elif i <= _N and seconds <= BOUNDS[i - 1]:
            i -= 1
        self.buckets[i if i < _N else _N - 1] += 1

    def totals(self) -> tuple[list[int], list[int], float]:
        """A copy of the counters, for readers off the hot path."""
        return list(self.by_class), list(self.buckets), self.latency_sum


@dataclass(frozen=True)
class _Delta:
    """What one (service, version) did between two ticks; histogram kept sparse."""

    by_class: tuple[int, ...]
    count: int
    latency_sum: float
    bucket_index: tuple[int, ...]
    bucket_count: tuple[int, ...]


@dataclass(frozen=True)
class _Tick:
    timestamp: float
    deltas: dict[tuple[str, str], _Delta]


class MeshMetrics:
    """All counters of one proxy process, plus the ring of per-tick deltas."""

    def __init__(
        self, *, interval: float = 0.5, retention: float = 1800.0,
        stats_factory: Callable[[str, str], VersionStats] = VersionStats,
    ) -> None:
        self._stats: dict[tuple[str, str], VersionStats] = {}
        self._factory = stats_factory
        self._last: dict[tuple[str, str], tuple[list[int], list[int], float]] = {}
        self.interval = interval
        # Room for twice the regular ticks: reads of the present add ticks of their own.
        self._ring: deque[_Tick] = deque(maxlen=max(4, 2 * math.ceil(retention / interval) + 2))
        self.started = time.time()

    def stats_for(self, service: str, version: str) -> VersionStats:
        key = (service, version)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = self._factory(service, version)
        return stats

    def all_stats(self) -> list[VersionStats]:
        return list(self._stats.values())

    # -- snapshot ring ------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Records what changed since the last tick. Sparse: an idle version costs a
        comparison of its totals, a busy one a pass over its buckets."""
        now = time.time() if now is None else now
        deltas: dict[tuple[str, str], _Delta] = {}
        for key, stats in self._stats.items():
            last = self._last.get(key)
            if last is None:
                prev_class, prev_buckets, prev_sum = [0] * 6, [0] * _N, 0.0
            else:
                prev_class, prev_buckets, prev_sum = last
            cur_class, cur_buckets, cur_sum = stats.totals()
            if last is not None and cur_class == prev_class:
                continue
            idx: list[int] = []
            cnt: list[int] = []
            for i, (c, p) in enumerate(zip(cur_buckets, prev_buckets, strict=True)):
                if c != p:
                    idx.append(i)
                    cnt.append(c - p)
            by_class = tuple(c - p for c, p in zip(cur_class, prev_class, strict=True))
            deltas[key] = _Delta(
                by_class, sum(by_class), cur_sum - prev_sum, tuple(idx), tuple(cnt)
            )
            self._last[key] = (cur_class, cur_buckets, cur_sum)
        if deltas or not self._ring or now - self._ring[-1].timestamp >= self.interval:
            self._ring.append(_Tick(now, deltas))

    def last_tick(self) -> float:
        return self._ring[-1].timestamp if self._ring else 0.0

    def window(self, service: str, versions: list[str], start: float, end: float,
               step: float = 1.0) -> dict[str, Any]:
        """The wire answer of GET /admin/v1/stats (mesh/README.md): what happened in
        (start, end] per version, whole and per `step`-long sub-interval."""
        intervals = max(1, math.ceil((end - start) / step - 1e-9))
        keys = {(service, v) for v in versions}
        keys.update(k for k in self._stats if k[0] == service)
        names = sorted({k[1] for k in keys}, key=lambda n: (n not in versions, n))
        ticks = [t for t in self._ring if start < t.timestamp <= end]
        out: dict[str, Any] = {}
        for name in names:
            key = (service, name)
            by_class = [0] * 6
            total_sum = 0.0
            hist: dict[int, int] = {}
            per_count = [0] * intervals
            per_err = [0] * intervals
            per_sum = [0.0] * intervals
            per_hist: list[dict[int, int]] = [{} for _ in range(intervals)]
            for t in ticks:
                d = t.deltas.get(key)
                if d is None:
                    continue
                k = min(intervals - 1, max(0, math.ceil((t.timestamp - start) / step) - 1))
                for i, v in enumerate(d.by_class):
                    by_class[i] += v
                total_sum += d.latency_sum
                per_count[k] += d.count
                per_err[k] += d.by_class[5]
                per_sum[k] += d.latency_sum
                ph = per_hist[k]
                for i, c in zip(d.bucket_index, d.bucket_count, strict=True):
                    hist[i] = hist.get(i, 0) + c
                    ph[i] = ph.get(i, 0) + c
            requests = sum(by_class)
            out[name] = {
                "requests": requests,
                "by_class": {cls: by_class[i + 1] for i, cls in enumerate(CLASSES)},
                "latency": _dense(hist),
                "latency_sum": total_sum,
                "series": {
                    "timestamps": [start + k * step for k in range(intervals)],
                    "requests": per_count,
                    "errors": per_err,
                    "latency_mean": [
                        s / c if c else None for s, c in zip(per_sum, per_count, strict=True)
                    ],
                    "latency_p50": [quantile(h, 0.50) for h in per_hist],
                    "latency_p99": [quantile(h, 0.99) for h in per_hist],
                },
            }
        return {"service": service, "start": start, "end": end, "step": step, "versions": out}

    # -- Prometheus text format -----------------------------------------------------

    def exposition(self) -> bytes:
        lines = [
            "# HELP canaryctl_mesh_requests_total Requests proxied, by status class.",
            "# TYPE canaryctl_mesh_requests_total counter",
        ]
        stats = sorted(self._stats.values(), key=lambda s: (s.service, s.version))
        totals = {id(s): s.totals() for s in stats}
        for s in stats:
            labels = f'service="{_esc(s.service)}",version="{_esc(s.version)}"'
            by_class = totals[id(s)][0]
            for i, cls in enumerate(CLASSES):
                lines.append(
                    f'canaryctl_mesh_requests_total{{{labels},code_class="{cls}"}} '
                    f"{by_class[i + 1]}"
                )
        lines.append(
            "# HELP canaryctl_mesh_request_duration_seconds "
            "Time from request head to last response byte."
        )
        lines.append("# TYPE canaryctl_mesh_request_duration_seconds histogram")
        name = "canaryctl_mesh_request_duration_seconds"
        for s in stats:
            labels = f'service="{_esc(s.service)}",version="{_esc(s.version)}"'
            cumulative = 0
            _, buckets, latency_sum = totals[id(s)]
            count = sum(buckets)
            for bound, c in zip(BOUNDS, buckets, strict=True):
                cumulative += c
                lines.append(f'{name}_bucket{{{labels},le="{bound:.6g}"}} {cumulative}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
            lines.append(f"{name}_sum{{{labels}}} {latency_sum!r}")
            lines.append(f"{name}_count{{{labels}}} {count}")
        lines.append("")
        return "\n".join(lines).encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dense(hist: dict[int, int]) -> dict[str, list[float] | list[int]]:
    """Bounds and counts from the first to the last non-empty bucket. Dropping empty
    buckets at either end keeps the meaning: bucket i still holds (ub[i-1], ub[i]]."""
    if not hist:
        return {"upper_bounds": [], "counts": []}
    lo, hi = min(hist), max(hist)
    return {
        "upper_bounds": list(BOUNDS[lo : hi + 1]),
        "counts": [hist.get(i, 0) for i in range(lo, hi + 1)],
    }


def quantile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile of a sparse histogram, interpolated geometrically inside its
    bucket (the buckets are log-spaced); None when empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    target = q * total
    seen = 0
    for i in sorted(hist):
        c = hist[i]
        if c and seen + c >= target:
            upper = BOUNDS[i]
            lower = BOUNDS[i - 1] if i > 0 else FIRST_BOUND / RATIO
            frac = (target - seen) / c
            return float(lower * (upper / lower) ** frac)
        seen += c
    return BOUNDS[max(hist)]
