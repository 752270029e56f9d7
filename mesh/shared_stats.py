"""Counters of worker processes in shared memory, summed by the supervisor.

With `--workers N` every worker counts its own requests into its own region of one
shared mapping (a memfd the supervisor creates and hands to each worker), so the hot
path stays a plain in-place increment with no locking and no message per request. The
supervisor, which owns `/metrics` and the stats API, reads all regions and adds them
up: one truth for the admin API whatever worker served a request.

Layout: `workers` regions, each a header of `_HEADER` int64 (connection gauges the
worker refreshes in its sweep) then `MAX_KEYS` slots; a slot holds one (service,
version): 6 status-class counters, the latency buckets (int64) and the latency sum
(float64). The supervisor assigns slot numbers (`SlotRegistry`) and tells workers
which key lives where; a worker that is restarted keeps adding to its region, so the
counters stay monotonic.
"""

from __future__ import annotations

import mmap
import os

from mesh.metrics import BOUNDS, VersionStats

MAX_KEYS = 512
_N = len(BOUNDS)
_SLOT_INTS = 6 + _N
SLOT_BYTES = _SLOT_INTS * 8 + 8
HEADER_FIELDS = ("downstream", "upstream", "upstream_idle", "upstream_opened",
                 "upstream_reused", "retries", "ejections", "generation")
_HEADER = 16
REGION_BYTES = _HEADER * 8 + MAX_KEYS * SLOT_BYTES


class SharedCounters:
    """The mapping itself; `fd` is inherited by workers (pass_fds)."""

    def __init__(self, workers: int, fd: int | None = None) -> None:
        self.workers = workers
        size = workers * REGION_BYTES
        if fd is None:
            fd = os.memfd_create("canaryctl-mesh-stats", 0)
            os.ftruncate(fd, size)
        self.fd = fd
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._map)

    def _offset(self, worker: int, slot: int) -> int:
        if not 0 <= slot < MAX_KEYS:
            raise ValueError(f"more than {MAX_KEYS} service versions")
        return worker * REGION_BYTES + _HEADER * 8 + slot * SLOT_BYTES

    def worker_stats(self, worker: int, slot: int, service: str, version: str) -> VersionStats:
        """A VersionStats whose counters live in `worker`'s copy of `slot`."""
        off = self._offset(worker, slot)
        ints = self._view[off : off + _SLOT_INTS * 8].cast("q")
        cell = self._view[off + _SLOT_INTS * 8 : off + SLOT_BYTES].cast("d")
        return VersionStats(service, version, by_class=ints[:6], buckets=ints[6:], sum_cell=cell)

    def header(self, worker: int) -> memoryview:
        off = worker * REGION_BYTES
        return self._view[off : off + _HEADER * 8].cast("q")

    def sum_slot(self, slot: int) -> tuple[list[int], list[int], float]:
        by_class = [0] * 6
        buckets = [0] * _N
        total = 0.0
        for w in range(self.workers):
            off = self._offset(w, slot)
            ints = self._view[off : off + _SLOT_INTS * 8].cast("q").tolist()
            for i in range(6):
                by_class[i] += ints[i]
            # Mostly zeros: skip the per-bucket add when a worker's slot is idle.
            if any(ints[:6]):
                buckets = [a + b for a, b in zip(buckets, ints[6:], strict=True)]
            total += self._view[off + _SLOT_INTS * 8 : off + SLOT_BYTES].cast("d")[0]
        return by_class, buckets, total

    def sum_header(self) -> dict[str, int]:
        out = dict.fromkeys(HEADER_FIELDS, 0)
        for w in range(self.workers):
            h = self.header(w)
            for i, name in enumerate(HEADER_FIELDS):
                out[name] += h[i]
        return out


class SummedStats(VersionStats):
    """The supervisor's view of one (service, version): the sum over all workers."""

    __slots__ = ("_shared", "_slot")

    def __init__(self, service: str, version: str, shared: SharedCounters, slot: int) -> None:
        super().__init__(service, version)
        self._shared = shared
        self._slot = slot

    def totals(self) -> tuple[list[int], list[int], float]:
        return self._shared.sum_slot(self._slot)

    @property
    def latency_sum(self) -> float:
        return self.totals()[2]

    def observe(self, status: int, seconds: float) -> None:
        raise RuntimeError("the supervisor serves no requests")


class SlotRegistry:
    """(service, version) -> slot number, assigned once and never reused, so a slot's
    counters always belong to the same key."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], int] = {}

    def slot(self, service: str, version: str) -> int:
        key = (service, version)
        n = self.slots.get(key)
        if n is None:
            n = len(self.slots)
            if n >= MAX_KEYS:
                raise ValueError(f"more than {MAX_KEYS} service versions over the process life")
            self.slots[key] = n
        return n

    def wire(self) -> list[list[object]]:
        return [[s, v, n] for (s, v), n in self.slots.items()]
