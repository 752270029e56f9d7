"""The proxying half of a process: its listening sockets, the shared proxy state and
the compiled routing tables. A single-process proxy has one; with `--workers N` each
worker has one and the supervisor none."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, cast

from mesh.access_log import AccessLog
from mesh.config import MeshConfig
from mesh.identity import TlsContexts
from mesh.metrics import MeshMetrics
from mesh.proxy import DownstreamProtocol, Listener, ProxyState
from mesh.routing import Endpoint, build_table


class DataPlane:
    def __init__(self, config: MeshConfig, metrics: MeshMetrics, *, log_suffix: str = "") -> None:
        self.config = config
        self.metrics = metrics
        self.listeners: list[Listener] = []
        self._endpoints: dict[str, Endpoint] = {}
        self._state: ProxyState | None = None
        self._log_suffix = log_suffix
        self._tls = TlsContexts()

    @property
    def state(self) -> ProxyState:
        assert self._state is not None, "DataPlane.start() first"
        return self._state

    def endpoint(self, address: str, suffix: str = "") -> Endpoint:
        # One Endpoint per address (and TLS identity): the pool's key, and where
        # ejection state lives, so both survive a routing change.
        key = address + suffix
        ep = self._endpoints.get(key)
        if ep is None:
            ep = self._endpoints[key] = Endpoint(address)
        return ep

    async def start(self, binds: list[tuple[str, int]], *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self._state = state = ProxyState(loop, self.metrics, config.timeouts, config.limits)
        state.access_log = self._open_log(config)
        try:
            for lc, (host, port) in zip(config.listeners, binds, strict=True):
                listener = Listener(build_table(lc, self.metrics, self.endpoint, self._tls.client))
                ssl_ctx = None
                if lc.tls is not None:
                    ssl_ctx = self._tls.server(lc.tls)
                    listener.set_tls(lc.tls.client_services)
                listener.server = await loop.create_server(
                    lambda lst=listener: DownstreamProtocol(state, lst),
                    host, port, backlog=1024, reuse_port=reuse_port or None, ssl=ssl_ctx,
                )
                self.listeners.append(listener)
        except OSError:
            await self.close()
            raise

    def _open_log(self, config: MeshConfig) -> AccessLog | None:
        if config.access_log is None:
            return None
        return AccessLog(config.access_log, suffix=self._log_suffix)

    def apply(self, config: MeshConfig) -> None:
        """Swaps every listener's table at once; requests in flight keep the route they
        were given, the next request reads the new table."""
        tables = [build_table(lc, self.metrics, self.endpoint, self._tls.client)
                  for lc in config.listeners]
        state = self.state
        state.configure(config.timeouts, config.limits)
        if config.access_log != self.config.access_log:
            old = state.access_log
            state.access_log = self._open_log(config)
            if old is not None:
                old.close()
        for listener, table, lc in zip(self.listeners, tables, config.listeners, strict=True):
            listener.table = table
            if lc.tls is not None:
                listener.set_tls(lc.tls.client_services)
        self.config = config

    def sweep(self) -> None:
        self.state.sweep()

    def bound(self) -> list[str]:
        return [bound_address(lst.server) for lst in self.listeners]

    def gauges(self) -> dict[str, int]:
        state = self.state
        return {
            "downstream": len(state.downstreams),
            "upstream": len(state.upstreams),
            "upstream_idle": state.pool.idle_count(),
            "upstream_opened": state.pool.opened,
            "upstream_reused": state.pool.reused,
            "retries": state.retries,
            "ejections": state.ejections,
        }

    async def close(self) -> None:
        servers = [lst.server for lst in self.listeners if lst.server is not None]
        for server in servers:
            server.close()
        if self._state is not None:
            for down in list(self._state.downstreams):
                if down.transport is not None:
                    down.transport.close()
            self._state.pool.close_all()
            self._state.mirror_pool.close_all()
            for mirror in list(self._state.mirror_conns):
                mirror.close()
            if self._state.access_log is not None:
                self._state.access_log.close()
                self._state.access_log = None
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)


def bound_address(server: asyncio.AbstractServer | None) -> str:
    # asyncio.Server and uvloop's Server both have `sockets`; AbstractServer does not.
    sock = cast(Any, server).sockets[0]
    return socket_address(sock)


def socket_address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, str):
        return "unix:" + name
    host = name[0] if ":" not in name[0] else f"[{name[0]}]"
    return f"{host}:{name[1]}"
