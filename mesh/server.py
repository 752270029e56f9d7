"""One proxy process: its listeners, the admin API, the sweep that enforces timeouts and
takes metric snapshots, and the operations the admin API exposes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, cast

from mesh.admin import AdminApi, protocol_factory
from mesh.config import MeshConfig, ServiceConfig, split_address
from mesh.metrics import MeshMetrics
from mesh.proxy import DownstreamProtocol, Listener, ProxyState
from mesh.routing import Endpoint, build_service, build_table

_SWEEP_EVERY = 0.1
TOKEN_ENV = "CANARYCTL_MESH_TOKEN"


class MeshError(Exception):
    """A proxy cannot start as configured; the message is one line for users."""


def read_token(token_file: str | None) -> str | None:
    """The admin token from a file (first line), else from CANARYCTL_MESH_TOKEN."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as exc:
            raise MeshError(f"{token_file}: cannot read admin token: {exc.strerror}") from None
        if not token:
            raise MeshError(f"{token_file}: admin token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class MeshServer:
    def __init__(self, config: MeshConfig, token: str | None) -> None:
        if config.admin is not None and not token:
            raise MeshError(
                f"admin.address {config.admin.address}: needs a token "
                f"(admin.token_file, --admin-token-file or {TOKEN_ENV})"
            )
        self.config = config
        self._token = token or ""
        self.metrics = MeshMetrics(
            interval=config.stats.interval, retention=config.stats.retention
        )
        self.listeners: list[Listener] = []
        self._listener_of: dict[str, Listener] = {}
        self._services: dict[str, ServiceConfig] = config.services()
        self._endpoints: dict[str, Endpoint] = {}
        self._state: ProxyState | None = None
        self._admin: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.started = time.time()

    @property
    def state(self) -> ProxyState:
        assert self._state is not None, "MeshServer.start() first"
        return self._state

    def _endpoint(self, address: str) -> Endpoint:
        # One Endpoint per address, so the pool keeps one stack of idle connections.
        ep = self._endpoints.get(address)
        if ep is None:
            ep = self._endpoints[address] = Endpoint(address)
        return ep

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self._state = state = ProxyState(loop, self.metrics, config.timeouts, config.limits)
        try:
            for lc in config.listeners:
                listener = Listener(build_table(lc, self.metrics, self._endpoint))
                host, port = split_address(lc.address)
                listener.server = await loop.create_server(
                    lambda lst=listener: DownstreamProtocol(state, lst),  # type: ignore[misc]
                    host, port, backlog=1024,
                )
                self.listeners.append(listener)
                for s in lc.services:
                    self._listener_of[s.name] = listener
            if config.admin is not None:
                host, port = split_address(config.admin.address)
                api = AdminApi(self, self._token)
                self._admin = await loop.create_server(protocol_factory(api), host, port)
        except OSError as exc:
            await self.close()
            raise MeshError(f"cannot listen: {exc.strerror or exc}") from None
        self.metrics.tick()
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        metrics = self.metrics
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            self.state.sweep()
            if time.time() - metrics.last_tick() >= metrics.interval:
                metrics.tick()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        servers = [lst.server for lst in self.listeners if lst.server is not None]
        if self._admin is not None:
            servers.append(self._admin)
        for server in servers:
            server.close()
        if self._state is not None:
            for down in list(self._state.downstreams):
                if down.transport is not None:
                    down.transport.close()
            self._state.pool.close_all()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    # -- addresses --------------------------------------------------------------------

    @staticmethod
    def _bound(server: asyncio.AbstractServer | None) -> str:
        # asyncio.Server and uvloop's Server both have `sockets`; AbstractServer does not.
        sock = cast(Any, server).sockets[0].getsockname()
        host = sock[0] if ":" not in sock[0] else f"[{sock[0]}]"
        return f"{host}:{sock[1]}"

    def listener_addresses(self) -> list[str]:
        return [self._bound(lst.server) for lst in self.listeners]

    def admin_address(self) -> str | None:
        return self._bound(self._admin) if self._admin is not None else None

    def ready_info(self) -> dict[str, Any]:
        admin = self.admin_address()
        return {
            "event": "ready",
            "pid": os.getpid(),
            "listeners": self.listener_addresses(),
            "admin": admin,
            "admin_url": f"http://{admin}" if admin else None,
            "services": sorted(self._services),
        }

    # -- operations of the admin API ------------------------------------------------

    def weights(self, service: str) -> dict[str, int] | None:
        config = self._services.get(service)
        return None if config is None else config.weights()

    def set_weights(self, service: str, weights: dict[str, int]) -> dict[str, int]:
        """Applies new weights to the next request; raises ValueError when invalid.
        Connections and in-flight requests are untouched: only the route object that
        new requests read is replaced."""
        config = self._services.get(service)
        if config is None:
            raise ValueError(f"no service {service!r}")
        updated = config.with_weights(weights)
        listener = self._listener_of[service]
        route = build_service(updated, self.metrics, self._endpoint)
        services = [route if s.name == service else s for s in listener.table.services.values()]
        listener.table = type(listener.table)(services)
        self._services[service] = updated
        return updated.weights()

    def routes(self) -> dict[str, Any]:
        listeners = []
        for lc, lst in zip(self.config.listeners, self.listeners, strict=True):
            listeners.append({
                "address": self._bound(lst.server),
                "configured_address": lc.address,
                "services": [
                    {**self._services[s.name].model_dump(), "weights": self.weights(s.name)}
                    for s in lc.services
                ],
            })
        return {"listeners": listeners}

    def stats(self, service: str, start: float, end: float, step: float) -> dict[str, Any]:
        # Requests since the last tick count too when the window reaches the present.
        if end > self.metrics.last_tick():
            self.metrics.tick()
        versions = [v.name for v in self._services[service].versions]
        return self.metrics.window(service, versions, start, end, step)

    def health(self) -> dict[str, Any]:
        state = self.state
        return {
            "status": "ok",
            "uptime": time.time() - self.started,
            "services": sorted(self._services),
            "connections": {
                "downstream": len(state.downstreams),
                "upstream": len(state.upstreams),
                "upstream_idle": state.pool.idle_count(),
                "upstream_opened": state.pool.opened,
                "upstream_reused": state.pool.reused,
                "retries": state.retries,
            },
        }
