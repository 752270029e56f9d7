"""One proxy: its data plane (in this process, or in `--workers N` worker processes
it supervises), the admin API, the sweep that enforces timeouts and takes metric
snapshots, and the operations the admin API exposes.

Every routing change (weights, a whole new table over the API, a config file reload)
goes through `_install`: the new config is validated whole first, so an invalid one
changes nothing (fail static), then swapped in at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mesh.admin import AdminApi, protocol_factory
from mesh.config import (
    MeshConfig,
    MeshConfigError,
    ServiceConfig,
    load_config,
    parse_config,
    split_address,
)
from mesh.data_plane import DataPlane, bound_address, socket_address
from mesh.identity import check_tls
from mesh.metrics import MeshMetrics, VersionStats
from mesh.routing import mirror_key
from mesh.shared_stats import SharedCounters, SlotRegistry, SummedStats
from mesh.workers import WorkerPool, WorkerStartError

_SWEEP_EVERY = 0.1
_WATCH_EVERY = 1.0
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


def _file_stamp(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size


class MeshServer:
    def __init__(
        self, config: MeshConfig, token: str | None, *, workers: int = 1,
        config_path: str | None = None, watch: bool = True,
    ) -> None:
        if config.admin is not None and not token:
            raise MeshError(
                f"admin.address {config.admin.address}: needs a token "
                f"(admin.token_file, --admin-token-file or {TOKEN_ENV})"
            )
        if workers < 1:
            raise MeshError(f"--workers: expected a positive integer, got {workers}")
        check_tls(config, config_path or "config")
        self.config = config
        self.config_path = config_path
        self.workers = workers
        self._watch = watch and config_path is not None
        self._token = token or ""
        self._shared: SharedCounters | None = None
        self._registry = SlotRegistry()
        factory: Any = VersionStats
        if workers > 1:
            self._shared = SharedCounters(workers)
            factory = self._summed
        self.metrics = MeshMetrics(
            interval=config.stats.interval, retention=config.stats.retention,
            stats_factory=factory,
        )
        self._plane: DataPlane | None = None
        self._pool: WorkerPool | None = None
        self._placeholders: list[socket.socket] = []
        self._services: dict[str, ServiceConfig] = config.services()
        self._admin: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._generation = 0
        self._stamp = _file_stamp(config_path) if config_path else None
        self.last_reload_error: str | None = None
        self.reloads = 0
        self.started = time.time()

    def _summed(self, service: str, version: str) -> VersionStats:
        assert self._shared is not None
        return SummedStats(service, version, self._shared, self._registry.slot(service, version))

    @property
    def listeners(self) -> list[Any]:
        return self._plane.listeners if self._plane is not None else []

    @property
    def state(self) -> Any:
        assert self._plane is not None, "single-process proxies only"
        return self._plane.state

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self._register_versions(config)
        try:
            binds = [split_address(lc.address) for lc in config.listeners]
            if self.workers == 1:
                self._plane = DataPlane(config, self.metrics)
                await self._plane.start(binds)
            else:
                binds = self._reserve_ports(binds)
                assert self._shared is not None
                self._pool = WorkerPool(self.workers, self._shared, binds)
                await self._pool.start(self._generation, self._wire(config),
                                       self._registry.wire())
            if config.admin is not None:
                api = AdminApi(self, self._token)
                address = config.admin.address
                if address.startswith("unix:"):
                    path = address[len("unix:"):]
                    with contextlib.suppress(FileNotFoundError):
                        if Path(path).is_socket():
                            os.unlink(path)
                    self._admin = await loop.create_unix_server(protocol_factory(api), path)
                    os.chmod(path, 0o600)
                else:
                    host, port = split_address(address)
                    self._admin = await loop.create_server(protocol_factory(api), host, port)
        except (OSError, WorkerStartError) as exc:
            await self.close()
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MeshError(f"cannot listen: {detail}") from None
        self.metrics.tick()
        self._sweeper = loop.create_task(self._sweep())

    def _reserve_ports(self, binds: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Binds (without listening) one SO_REUSEPORT socket per listener, so port 0
        becomes a real port the workers then share and the ready line reports."""
        resolved = []
        for host, port in binds:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # First without SO_REUSEPORT: a port another process serves (even one that
            # set SO_REUSEPORT itself) must be refused, not silently shared.
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
                port = int(probe.getsockname()[1])
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            self._placeholders.append(sock)
            resolved.append((host, int(sock.getsockname()[1])))
        return resolved

    async def _sweep(self) -> None:
        metrics = self.metrics
        next_watch = time.monotonic() + _WATCH_EVERY
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            if self._plane is not None:
                self._plane.sweep()
            if time.time() - metrics.last_tick() >= metrics.interval:
                metrics.tick()
            if self._watch and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + _WATCH_EVERY
                await self._watch_file()

    async def _watch_file(self) -> None:
        assert self.config_path is not None
        stamp = _file_stamp(self.config_path)
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            await self.reload()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._admin is not None:
            self._admin.close()
        if self._plane is not None:
            await self._plane.close()
        if self._pool is not None:
            await self._pool.close()
        for sock in self._placeholders:
            sock.close()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin.wait_closed(), 2.0)

    # -- addresses --------------------------------------------------------------------

    def listener_addresses(self) -> list[str]:
        if self._plane is not None:
            return self._plane.bound()
        return [socket_address(s) for s in self._placeholders]

    def admin_address(self) -> str | None:
        return bound_address(self._admin) if self._admin is not None else None

    def ready_info(self) -> dict[str, Any]:
        admin = self.admin_address()
        admin_url = None
        if admin is not None:
            admin_url = admin if admin.startswith("unix:") else f"http://{admin}"
        info: dict[str, Any] = {
            "event": "ready",
            "pid": os.getpid(),
            "listeners": self.listener_addresses(),
            "admin": admin,
            "admin_url": admin_url,
            "services": sorted(self._services),
            "workers": self.workers,
        }
        if self._pool is not None:
            info["worker_pids"] = self._pool.pids()
        return info

    # -- routing changes ------------------------------------------------------------

    @staticmethod
    def _wire(config: MeshConfig) -> dict[str, Any]:
        data: dict[str, Any] = config.model_dump(mode="json")
        return data

    def _register_versions(self, config: MeshConfig) -> None:
        # Every configured version shows in /metrics and stats from the start, and
        # workers learn the shared slot of each before they count into it.
        for svc in config.listeners:
            for s in svc.services:
                for v in s.versions:
                    self.metrics.stats_for(s.name, v.name)
                if s.mirror is not None:
                    self.metrics.stats_for(s.name, mirror_key(s.mirror.version))

    def _check_compatible(self, new: MeshConfig, source: str) -> None:
        old = [lc.address for lc in self.config.listeners]
        now = [lc.address for lc in new.listeners]
        if old != now:
            raise MeshConfigError(
                f"{source}: listeners: addresses {now} differ from the running {old}; "
                "listeners cannot change without a restart"
            )
        if (new.admin is None) != (self.config.admin is None) or (
            new.admin is not None and self.config.admin is not None
            and new.admin.address != self.config.admin.address
        ):
            raise MeshConfigError(f"{source}: admin.address: cannot change without a restart")
        if [lc.tls for lc in new.listeners] != [lc.tls for lc in self.config.listeners]:
            raise MeshConfigError(f"{source}: listeners.tls: cannot change without a restart")
        check_tls(new, source)

    def _install(self, config: MeshConfig) -> None:
        """Puts a validated config in force for the next request, everywhere."""
        self._register_versions(config)
        self._generation += 1
        if self._plane is not None:
            self._plane.apply(config)
        if self._pool is not None:
            self._pool.broadcast(self._generation, self._wire(config), self._registry.wire())
        self.config = config
        self._services = config.services()

    async def settle(self) -> None:
        """Returns once the last change runs in every worker (at once without workers)."""
        if self._pool is not None:
            await self._pool.wait_applied(self._generation)

    def weights(self, service: str) -> dict[str, int] | None:
        config = self._services.get(service)
        return None if config is None else config.weights()

    def set_weights(self, service: str, weights: dict[str, int]) -> dict[str, int]:
        """Applies new weights to the next request; raises ValueError when invalid.
        Connections and in-flight requests are untouched: only the route objects that
        new requests read are replaced. With workers, `await settle()` after."""
        config = self._services.get(service)
        if config is None:
            raise ValueError(f"no service {service!r}")
        updated = config.with_weights(weights)
        listeners = [
            lc.model_copy(update={"services": [
                updated if s.name == service else s for s in lc.services
            ]})
            for lc in self.config.listeners
        ]
        self._install(self.config.model_copy(update={"listeners": listeners}))
        return updated.weights()

    def replace_routes(self, data: object) -> None:
        """PUT /admin/v1/routes: a whole new set of services per listener (the shape
        GET answers: `weights`, `address` and `configured_address` are accepted and
        the running listener addresses kept). Invalid: MeshConfigError, nothing
        changes."""
        if not isinstance(data, dict) or not isinstance(data.get("listeners"), list):
            raise MeshConfigError('body: expected {"listeners": [{"services": [...]}, ...]}')
        listeners = []
        for i, item in enumerate(data["listeners"]):
            if not isinstance(item, dict):
                raise MeshConfigError(f"body: listeners.{i}: expected an object")
            services = item.get("services")
            if isinstance(services, list):
                services = [
                    {k: v for k, v in s.items() if k != "weights"} if isinstance(s, dict) else s
                    for s in services
                ]
            address = (self.config.listeners[i].address
                       if i < len(self.config.listeners) else item.get("address"))
            listeners.append({"address": address, "services": services})
        if len(listeners) != len(self.config.listeners):
            raise MeshConfigError(
                f"body: listeners: expected {len(self.config.listeners)} listeners "
                f"(as running), got {len(listeners)}"
            )
        whole = {**self.config.model_dump(mode="json"), "listeners": listeners}
        new = parse_config(whole, "body")
        self._check_compatible(new, "body")
        self._install(new)

    async def reload(self) -> bool:
        """Reads the config file again (SIGHUP, or the file changed). An invalid file
        changes nothing: the running config stays, the error is printed and kept."""
        if self.config_path is None:
            return False
        try:
            new = load_config(self.config_path)
            self._check_compatible(new, self.config_path)
        except MeshConfigError as exc:
            self.last_reload_error = str(exc)
            print(f"error: reload rejected, running config kept: {exc}", file=sys.stderr,
                  flush=True)
            return False
        self._install(new)
        await self.settle()
        self.last_reload_error = None
        self.reloads += 1
        print(f"info: reloaded {self.config_path}", file=sys.stderr, flush=True)
        return True

    # -- reads of the admin API -------------------------------------------------------

    def routes(self) -> dict[str, Any]:
        listeners = []
        for lc, address in zip(self.config.listeners, self.listener_addresses(), strict=True):
            listeners.append({
                "address": address,
                "configured_address": lc.address,
                "services": [
                    {**self._services[s.name].model_dump(mode="json"),
                     "weights": self.weights(s.name)}
                    for s in lc.services
                ],
            })
        return {"listeners": listeners, "generation": self._generation}

    def stats(self, service: str, start: float, end: float, step: float) -> dict[str, Any]:
        # Requests since the last tick count too when the window reaches the present.
        if end > self.metrics.last_tick():
            self.metrics.tick()
        versions = [v.name for v in self._services[service].versions]
        return self.metrics.window(service, versions, start, end, step)

    def health(self) -> dict[str, Any]:
        if self._plane is not None:
            gauges = self._plane.gauges()
        else:
            assert self._shared is not None
            gauges = self._shared.sum_header()
            gauges.pop("generation", None)
        answer: dict[str, Any] = {
            "status": "ok",
            "uptime": time.time() - self.started,
            "services": sorted(self._services),
            "connections": gauges,
            "workers": self.workers,
            "generation": self._generation,
            "reloads": self.reloads,
            "last_reload_error": self.last_reload_error,
        }
        if self._pool is not None:
            answer["worker_restarts"] = self._pool.restarts()
        return answer
