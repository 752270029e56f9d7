"""Idle keep-alive connections to upstream endpoints, reused LIFO.

Reuse is what makes the proxy fast: opening a connection per request costs several
times the proxying itself. LIFO keeps a few connections hot and lets the rest age out
(`close_idle`), so a burst does not leave hundreds of connections open for long.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from mesh.routing import Endpoint


class PooledConnection(Protocol):
    endpoint: Endpoint
    idle_since: float

    @property
    def usable(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)


class UpstreamPool(Generic[C]):
    def __init__(self, max_idle_per_endpoint: int) -> None:
        self._idle: dict[Endpoint, list[C]] = {}
        self._max_idle = max_idle_per_endpoint
        self.reused = 0
        self.opened = 0

    def take(self, endpoint: Endpoint) -> C | None:
        idle = self._idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if conn.usable:
                self.reused += 1
                return conn
        return None

    def give_back(self, conn: C, now: float) -> None:
        if conn.usable:
            self.put(conn, now)

    def put(self, conn: C, now: float) -> None:
        """give_back() for a connection known to be open (it just finished a response)."""
        idle = self._idle.get(conn.endpoint)
        if idle is None:
            idle = self._idle[conn.endpoint] = []
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def discard(self, conn: C) -> None:
        idle = self._idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    def close_idle(self, older_than: float) -> None:
        """Closes connections idle since before `older_than` (loop time)."""
        for idle in self._idle.values():
            # Oldest first: the list is used as a stack, so they sit at the bottom.
            while idle and idle[0].idle_since < older_than:
                idle.pop(0).close()

    def close_all(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())
