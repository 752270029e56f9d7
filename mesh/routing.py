"""The compiled routing table: which service a request is for, and which version serves it.

A table is immutable once built. Changing weights builds a new `ServiceRoute` and swaps
one reference, so the next request sees the new weights and in-flight ones are not
touched. Picking by weight walks a precomputed smooth schedule: over any run of
`len(schedule)` requests the split equals the weights exactly, and the versions are
interleaved rather than bunched.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from mesh.config import ListenerConfig, ServiceConfig, split_address
from mesh.metrics import MeshMetrics, VersionStats

# A schedule longer than this is scaled down; the split then tracks the weights to
# within 1/_MAX_SCHEDULE.
_MAX_SCHEDULE = 10_000


class Endpoint:
    """One upstream address; identity is the pool key."""

    __slots__ = ("address", "host", "port")

    def __init__(self, address: str) -> None:
        self.address = address
        self.host, self.port = split_address(address)


class VersionRoute:
    """One version of one service, with everything the hot path needs precomputed."""

    __slots__ = ("_rr", "endpoints", "name", "response_header", "stats", "sticky_header")

    def __init__(
        self, service: str, name: str, endpoints: list[Endpoint], stats: VersionStats,
        sticky_header: bytes,
    ) -> None:
        self.name = name
        self.endpoints = tuple(endpoints)
        self.stats = stats
        self.response_header = b"x-canaryctl-version: " + name.encode() + b"\r\n"
        self.sticky_header = sticky_header
        self._rr = 0

    def next_endpoint(self) -> Endpoint:
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        i = self._rr
        self._rr = (i + 1) % len(eps)
        return eps[i]


def smooth_schedule(weights: list[int]) -> list[int]:
    """Indexes into `weights`, one cycle of smooth weighted round robin: each step adds
    every weight to its running credit and picks the largest credit, which then pays
    back the total. Shares are exact over the cycle and spread evenly within it."""
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    reduced = [w // g for w in weights] if g else list(weights)
    total = sum(reduced)
    if total > _MAX_SCHEDULE:
        reduced = _scale(reduced, _MAX_SCHEDULE)
        total = sum(reduced)
    credit = [0] * len(reduced)
    order: list[int] = []
    for _ in range(total):
        best = -1
        for i, w in enumerate(reduced):
            if w == 0:
                continue
            credit[i] += w
            if best < 0 or credit[i] > credit[best]:
                best = i
        credit[best] -= total
        order.append(best)
    return order


def _scale(weights: list[int], total: int) -> list[int]:
    """Largest-remainder apportionment of `total` slots; a positive weight keeps >= 1."""
    s = sum(weights)
    exact = [w * total / s for w in weights]
    out = [max(1, math.floor(x)) if w else 0 for x, w in zip(exact, weights, strict=True)]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - math.floor(exact[i]),
                          reverse=True)
    for i in by_remainder:
        if sum(out) >= total:
            break
        if weights[i]:
            out[i] += 1
    return out


@dataclass(frozen=True)
class _HeaderRule:
    name: bytes  # lower case
    value: bytes
    version: VersionRoute


@dataclass(frozen=True)
class _CookieRule:
    name: str
    value: str
    version: VersionRoute


class ServiceRoute:
    """One service's versions and its current weights."""

    __slots__ = (
        "_cursor", "_schedule", "config", "cookie_rules", "header_rules", "hosts", "name",
        "path_prefix", "sticky_cookie", "versions", "wants_cookies",
    )

    def __init__(self, config: ServiceConfig, versions: dict[str, VersionRoute]) -> None:
        self.config = config
        self.name = config.name
        self.versions = versions
        self.hosts = frozenset(h.lower().encode() for h in config.hosts)
        self.path_prefix = config.path_prefix.encode()
        self.header_rules = tuple(
            _HeaderRule(r.header.lower().encode(), r.value.encode(), versions[r.version])
            for r in config.match if r.header is not None
        )
        self.cookie_rules = tuple(
            _CookieRule(r.cookie, r.value, versions[r.version])
            for r in config.match if r.cookie is not None
        )
        self.sticky_cookie = config.sticky.cookie if config.sticky else None
        self.wants_cookies = bool(self.cookie_rules) or self.sticky_cookie is not None
        ordered = [versions[v.name] for v in config.versions]
        schedule = smooth_schedule([v.weight for v in config.versions])
        self._schedule = tuple(ordered[i] for i in schedule)
        # A random phase keeps several proxies with the same weights from sending
        # their canary requests in lockstep.
        self._cursor = random.randrange(len(self._schedule))

    def weights(self) -> dict[str, int]:
        return self.config.weights()

    def pick(self) -> VersionRoute:
        i = self._cursor
        n = i + 1
        self._cursor = n if n < len(self._schedule) else 0
        return self._schedule[i]

    def choose(
        self, headers: list[tuple[bytes, bytes]], cookie: bytes | None
    ) -> tuple[VersionRoute, bool]:
        """The version for a request, and whether the response should set the sticky
        cookie. Order: header rules, cookie rules, sticky cookie, weights."""
        for rule in self.header_rules:
            for name, value in headers:
                if name.lower() == rule.name and value == rule.value:
                    return rule.version, False
        if cookie is not None and self.wants_cookies:
            jar = parse_cookies(cookie)
            for crule in self.cookie_rules:
                if jar.get(crule.name) == crule.value:
                    return crule.version, False
            if self.sticky_cookie is not None:
                chosen = self.versions.get(jar.get(self.sticky_cookie, ""))
                # A version taken out of rotation (weight 0, e.g. after a rollback)
                # loses its sticky users too.
                if chosen is not None and self.config_weight(chosen.name) > 0:
                    return chosen, False
        return self.pick(), self.sticky_cookie is not None

    def config_weight(self, version: str) -> int:
        for v in self.config.versions:
            if v.name == version:
                return v.weight
        return 0


def parse_cookies(header: bytes) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in header.decode("latin-1").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in jar:
            jar[name] = value.strip('"')
    return jar


def sticky_header(config: ServiceConfig, version: str) -> bytes:
    if config.sticky is None:
        return b""
    return (
        f"set-cookie: {config.sticky.cookie}={version}; Max-Age={config.sticky.max_age}; "
        "Path=/; HttpOnly; SameSite=Lax\r\n"
    ).encode()


class RouteTable:
    """The services of one listener, matched by Host then longest path prefix."""

    def __init__(self, services: list[ServiceRoute]) -> None:
        self.services = {s.name: s for s in services}
        ordered = sorted(services, key=lambda s: len(s.path_prefix), reverse=True)
        self._by_host: dict[bytes, tuple[ServiceRoute, ...]] = {}
        for host in {h for s in services for h in s.hosts}:
            self._by_host[host] = tuple(s for s in ordered if host in s.hosts)
        self._any_host = tuple(s for s in ordered if not s.hosts)
        self._single = services[0] if len(services) == 1 and not services[0].hosts and \
            services[0].path_prefix == b"/" else None

    def match(self, host: bytes, url: bytes) -> ServiceRoute | None:
        if self._single is not None:
            return self._single
        name = host.lower()
        # Drop the port; an IPv6 literal keeps its brackets.
        end = name.find(b"]") + 1 if name.startswith(b"[") else name.find(b":")
        if end > 0:
            name = name[:end]
        for candidates in (self._by_host.get(name, ()), self._any_host):
            for s in candidates:
                if url.startswith(s.path_prefix):
                    return s
        return None


def build_service(
    config: ServiceConfig,
    metrics: MeshMetrics,
    endpoint_of: Callable[[str], Endpoint],
) -> ServiceRoute:
    versions = {
        v.name: VersionRoute(
            config.name, v.name, [endpoint_of(a) for a in v.endpoints],
            metrics.stats_for(config.name, v.name), sticky_header(config, v.name),
        )
        for v in config.versions
    }
    return ServiceRoute(config, versions)


def build_table(
    listener: ListenerConfig, metrics: MeshMetrics, endpoint_of: Callable[[str], Endpoint]
) -> RouteTable:
    return RouteTable([build_service(s, metrics, endpoint_of) for s in listener.services])
