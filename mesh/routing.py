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
from ssl import SSLContext

from mesh.config import ListenerConfig, OutlierConfig, ServiceConfig, UpstreamTLS, split_address
from mesh.metrics import MeshMetrics, VersionStats

# A schedule longer than this is scaled down; the split then tracks the weights to
# within 1/_MAX_SCHEDULE.
_MAX_SCHEDULE = 10_000


class Endpoint:
    """One upstream address; identity is the pool key. Also holds what passive health
    checking learns about it, so that survives routing changes."""

    __slots__ = ("active", "address", "ejected_until", "ejections", "failures", "host", "port")

    def __init__(self, address: str) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.active = 0  # requests in flight, for least-requests
        self.failures = 0  # consecutive
        self.ejected_until = 0.0  # loop time
        self.ejections = 0


# An endpoint ejected again and again stays out at most this long.
_MAX_EJECTION = 300.0


class VersionRoute:
    """One version of one service, with everything the hot path needs precomputed."""

    __slots__ = ("_rr", "endpoints", "least_requests", "name", "only", "outlier",
                 "response_header", "server_hostname", "service", "ssl", "stats",
                 "sticky_header")

    def __init__(
        self, service: str, name: str, endpoints: list[Endpoint], stats: VersionStats,
        sticky_header: bytes, *, least_requests: bool = False,
        outlier: OutlierConfig | None = None, ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        # mTLS to the endpoints: the context, and the service name their certificate
        # must carry (checked as the TLS server name).
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.service = service
        self.name = name
        self.endpoints = tuple(endpoints)
        # The endpoint when there is just one: the hot path skips choosing.
        self.only = self.endpoints[0] if len(self.endpoints) == 1 else None
        self.stats = stats
        self.response_header = b"x-canaryctl-version: " + name.encode() + b"\r\n"
        self.sticky_header = sticky_header
        self.least_requests = least_requests
        self.outlier = outlier or OutlierConfig()
        self._rr = 0

    def next_endpoint(self, now: float = 0.0, avoid: Endpoint | None = None) -> Endpoint:
        """Round robin (or fewest requests in flight) over the endpoints not ejected
        and not `avoid` (the one a retry moves away from); if none is left, any."""
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        start = self._rr
        self._rr = (start + 1) % n
        best: Endpoint | None = None
        for k in range(n):
            ep = eps[(start + k) % n]
            if ep is avoid or ep.ejected_until > now:
                continue
            if not self.least_requests:
                return ep
            if best is None or ep.active < best.active:
                best = ep
        if best is not None:
            return best
        for k in range(n):
            ep = eps[(start + k) % n]
            if ep is not avoid:
                return ep
        return eps[start]

    def endpoint_failed(self, ep: Endpoint, now: float) -> bool:
        """Counts a failure; True when it ejected the endpoint."""
        ep.failures += 1
        rule = self.outlier
        if ep.failures < rule.consecutive_failures or ep.ejected_until > now:
            return False
        eps = self.endpoints
        out = sum(1 for e in eps if e.ejected_until > now)
        if (out + 1) * 100 > rule.max_ejected_percent * len(eps):
            return False
        ep.ejected_until = now + min(_MAX_EJECTION, rule.eject_seconds * 2 ** ep.ejections)
        ep.ejections += 1
        ep.failures = 0
        return True


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
        "_cursor", "_length", "_mirror_credit", "_schedule", "by_weight_only", "config",
        "cookie_rules", "header_rules", "hosts", "mirror", "mirror_percent", "name",
        "path_prefix", "retries", "sticky_cookie", "versions", "wants_cookies",
    )

    def __init__(
        self, config: ServiceConfig, versions: dict[str, VersionRoute],
        mirror: VersionRoute | None = None,
    ) -> None:
        self.config = config
        self.mirror = mirror
        self.mirror_percent = config.mirror.percent if config.mirror is not None else 0.0
        self._mirror_credit = 0.0
        self.retries = config.retries
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
        # No rule, no cookie: the hot path may call pick() directly.
        self.by_weight_only = not self.header_rules and not self.wants_cookies
        ordered = [versions[v.name] for v in config.versions]
        schedule = smooth_schedule([v.weight for v in config.versions])
        self._schedule = tuple(ordered[i] for i in schedule)
        self._length = len(self._schedule)
        # A random phase keeps several proxies with the same weights from sending
        # their canary requests in lockstep.
        self._cursor = random.randrange(len(self._schedule))

    def weights(self) -> dict[str, int]:
        return self.config.weights()

    def mirror_next(self) -> bool:
        """Whether this request is copied to the mirror: exactly `percent` of requests,
        spread evenly (a credit counter, not a coin toss)."""
        credit = self._mirror_credit + self.mirror_percent
        if credit >= 100.0:
            self._mirror_credit = credit - 100.0
            return True
        self._mirror_credit = credit
        return False

    def pick(self) -> VersionRoute:
        i = self._cursor
        n = i + 1
        self._cursor = n if n < self._length else 0
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


EndpointOf = Callable[[str, str], Endpoint]  # (address, pool key suffix) -> Endpoint
TlsOf = Callable[[UpstreamTLS], SSLContext]


def build_service(
    config: ServiceConfig,
    metrics: MeshMetrics,
    endpoint_of: EndpointOf,
    tls_of: TlsOf | None = None,
) -> ServiceRoute:
    least = config.balance == "least_requests"
    versions: dict[str, VersionRoute] = {}
    for v in config.versions:
        ctx = None
        hostname = None
        suffix = ""
        if v.tls is not None and tls_of is not None:
            ctx = tls_of(v.tls)
            hostname = v.tls.service
            # Connections are pooled per identity pair: a connection opened with one
            # client certificate must never carry a request configured with another.
            suffix = f"|tls:{hostname}|{v.tls.cert}|{v.tls.ca}"
        versions[v.name] = VersionRoute(
            config.name, v.name, [endpoint_of(a, suffix) for a in v.endpoints],
            metrics.stats_for(config.name, v.name), sticky_header(config, v.name),
            least_requests=least, outlier=config.outlier, ssl=ctx, server_hostname=hostname,
        )
    mirror = None
    if config.mirror is not None:
        target = versions[config.mirror.version]
        # Counted apart from the version's own traffic, which the judge compares.
        mirror = VersionRoute(
            config.name, target.name, list(target.endpoints),
            metrics.stats_for(config.name, mirror_key(target.name)), b"",
            least_requests=least, outlier=config.outlier, ssl=target.ssl,
            server_hostname=target.server_hostname,
        )
    return ServiceRoute(config, versions, mirror)


def mirror_key(version: str) -> str:
    """The metrics label of a version's mirrored traffic (no version name has ':')."""
    return f"mirror:{version}"


def build_table(
    listener: ListenerConfig, metrics: MeshMetrics, endpoint_of: EndpointOf,
    tls_of: TlsOf | None = None,
) -> RouteTable:
    return RouteTable([build_service(s, metrics, endpoint_of, tls_of) for s in listener.services])
