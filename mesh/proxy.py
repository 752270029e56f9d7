"""The data plane: one asyncio Protocol per client connection and one per upstream
connection, both driven by httptools callbacks.

A request becomes an `Exchange`. Exchanges on one client connection are served in
order (pipelined requests wait, with reading paused so they cannot pile up). Bytes
produced by the parser callbacks are collected and written once per `data_received`,
so a small request or response costs one write in each direction. Timeouts are
checked by one sweep per process (`ProxyState.sweep`) against deadlines the hot path
sets with a plain attribute store, instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from typing import cast

import httptools

from mesh.access_log import AccessLog
from mesh.config import LimitConfig, TimeoutConfig
from mesh.identity import peer_service
from mesh.metrics import MeshMetrics
from mesh.routing import Endpoint, RouteTable, VersionRoute
from mesh.upstream_pool import UpstreamPool

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing headers the proxy writes itself.
_REQUEST_SPECIAL = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"content-length",
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"cookie", b"x-request-id",
})
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"content-length",
})
_BODYLESS_STATUS = frozenset({204, 304})
# Formatting a status line costs more than looking it up; upstreams use a handful.
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_RETRYABLE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT", b"TRACE"})
_VIA_11 = b"via: 1.1 canaryctl\r\n"
_VIA_10 = b"via: 1.0 canaryctl\r\n"
_XFP = b"x-forwarded-proto: http\r\n"
_XFP_TLS = b"x-forwarded-proto: https\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CLOSE = b"connection: close\r\n"
_KEEP_ALIVE = b"connection: keep-alive\r\n"

_REASONS = {
    400: b"Bad Request", 404: b"Not Found", 408: b"Request Timeout",
    431: b"Request Header Fields Too Large", 501: b"Not Implemented",
    502: b"Bad Gateway", 504: b"Gateway Timeout",
}

# Pause reading a client whose request body waits for an upstream connection beyond this.
_MAX_PENDING_BODY = 256 * 1024
# Mirrored requests carry at most this much body (buffered whole, never streamed, so a
# slow mirror cannot hold the primary back); and at most this many are in flight.
_MAX_MIRROR_BODY = 64 * 1024
_MAX_MIRRORS_IN_FLIGHT = 256
_PAUSE_UPSTREAM = 1  # upstream socket buffer is full
_PAUSE_QUEUE = 2  # a pipelined request or a pending body is waiting


def error_response(status: int, version: VersionRoute | None, keep_alive: bool) -> bytes:
    reason = _REASONS.get(status, b"Error")
    body = reason + b"\n"
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason),
        b"content-type: text/plain\r\ncontent-length: %d\r\n" % len(body),
        version.response_header if version is not None else b"",
        _VIA_11,
        b"" if keep_alive else _CLOSE,
        b"\r\n",
    ]
    return b"".join(head) + body


class _HeaderLimit(Exception):
    pass


class ProxyState:
    """What all connections of one process share: pool, metrics, limits, the clock."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: MeshMetrics,
        timeouts: TimeoutConfig,
        limits: LimitConfig,
    ) -> None:
        self.loop = loop
        self.metrics = metrics
        self.configure(timeouts, limits)
        self.pool: UpstreamPool[UpstreamProtocol] = UpstreamPool(limits.max_idle_per_endpoint)
        self.upstreams: set[UpstreamProtocol] = set()
        self.downstreams: set[DownstreamProtocol] = set()
        self.now = loop.time()
        self.connect_failures = 0
        self.retries = 0
        self.ejections = 0
        self.tls_refused = 0
        self.access_log: AccessLog | None = None
        self.mirrors_in_flight = 0
        self.mirrors_dropped = 0
        self.mirror_pool: UpstreamPool[MirrorProtocol] = UpstreamPool(
            limits.max_idle_per_endpoint)
        self.mirror_conns: set[MirrorProtocol] = set()
        self._request_ids = 0
        self._id_prefix = f"{os.getpid():x}-"

    def configure(self, timeouts: TimeoutConfig, limits: LimitConfig) -> None:
        """New timeouts and limits; the hot path reads the copies, one lookup fewer."""
        self.timeouts = timeouts
        self.limits = limits
        self.client_idle = timeouts.client_idle
        self.client_header = timeouts.client_header
        self.client_body = timeouts.client_body
        self.upstream_read = timeouts.upstream_read
        self.max_header_bytes = limits.max_header_bytes
        self.max_header_count = limits.max_header_count

    def new_request_id(self) -> bytes:
        self._request_ids += 1
        return f"{self._id_prefix}{self._request_ids:x}".encode()

    def endpoint_ok(self, ep: Endpoint | None) -> None:
        if ep is not None:
            ep.failures = 0

    def endpoint_failed(self, version: VersionRoute, ep: Endpoint | None) -> None:
        if ep is not None and version.endpoint_failed(ep, self.now):
            self.ejections += 1

    def sweep(self) -> None:
        """Enforces deadlines; called a few times a second."""
        now = self.now = self.loop.time()
        for up in [u for u in self.upstreams if u.deadline and u.deadline < now]:
            up.timed_out()
        for down in [d for d in self.downstreams if d.deadline and d.deadline < now]:
            down.timed_out()
        self.pool.close_idle(now - self.timeouts.pool_idle)
        self.mirror_pool.close_idle(now - self.timeouts.pool_idle)
        # A mirror that does not answer in time loses its connection (and its slot).
        for m in [m for m in self.mirror_conns if m.busy and m.deadline < now]:
            m.timed_out()
        if self.access_log is not None:
            self.access_log.flush()


class Listener:
    """One listening socket; `table` is swapped whole when routes change."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.server: asyncio.AbstractServer | None = None
        self.tls = False
        self.xfp = _XFP
        # With mTLS: the client services let in (empty: any the mesh CA signed).
        self.allowed: frozenset[str] = frozenset()

    def set_tls(self, client_services: list[str]) -> None:
        self.tls = True
        self.xfp = _XFP_TLS
        self.allowed = frozenset(client_services)


class Exchange:
    """One request and its response.

    No __slots__: most fields keep their class-level default for most requests, and
    setting only the few that vary measurably shortens the hot path.
    """

    upstream: UpstreamProtocol | None = None
    endpoint: Endpoint | None = None
    status = 0
    request_done = False
    request_chunked = False
    response_started = False
    response_done = False
    keep_alive = True
    http10 = False
    is_head = False
    set_cookie = False
    reused = False
    upgrade = False
    retry_head: bytes | None = None
    attempts = 0
    bytes_in = 0
    bytes_out = 0
    method = b""
    url = b""
    request_id = b""
    mirror: Mirror | None = None
    out_bytes = 0

    def __init__(self, down: DownstreamProtocol, version: VersionRoute | None) -> None:
        self.down = down
        self.version = version
        self.out: list[bytes] = []
        self.started = time.perf_counter()

    def finish(self, status: int) -> None:
        """Counts the exchange under its version (and logs it): exactly once."""
        version = self.version
        if version is None:
            return
        seconds = time.perf_counter() - self.started
        version.stats.observe(status, seconds)
        ep = self.endpoint
        if ep is not None:
            ep.active -= 1
            self.endpoint = None
        log = self.down.state.access_log
        if log is not None:
            log.record(
                version.service, version.name, status, seconds, self.bytes_in,
                self.bytes_out, self.request_id.decode("latin-1"), self.method, self.url,
            )


class DownstreamProtocol(asyncio.Protocol):
    """A client connection."""

    def __init__(self, state: ProxyState, listener: Listener) -> None:
        self.state = state
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.paused = 0
        self.writing_paused = False
        self.closed = False
        self.deadline = 0.0
        self.peer = b""
        self.xff = b""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._host = b""
        self._cookie: bytes | None = None
        self._forwarded_for: bytes | None = None
        self._has_xfp = False
        self._content_length: int | None = None
        self._chunked = False
        self._conn_tokens: bytes = b""
        self._request_id: bytes | None = None
        self._upgrade: bytes | None = None
        self._body_expected = False
        self.tunnel: UpstreamProtocol | None = None
        self._tunnel_pending: list[bytes] | None = None
        self._in_head = False

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b"unknown"
        self.xff = b"x-forwarded-for: " + self.peer + b"\r\n"
        # The usual ending of a forwarded head, built once per connection.
        self._tail = self.xff + self.listener.xfp + _VIA_11
        self.state.downstreams.add(self)
        self.deadline = self.state.now + self.state.client_idle
        if self.listener.tls:
            # The handshake verified the certificate against the mesh CA; the identity
            # in it decides whether this service may call us.
            service = peer_service(transport.get_extra_info("peercert"))
            allowed = self.listener.allowed
            if service is None or (allowed and service not in allowed):
                self.state.tls_refused += 1
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.downstreams.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        for ex in self.exchanges:
            ep = ex.endpoint
            if ep is not None:
                # The client left before its answer: not counted, but no longer in flight.
                ep.active -= 1
                ex.endpoint = None
            up = ex.upstream
            if up is not None:
                ex.upstream = None
                up.exchange = None
                up.close()
        self.exchanges.clear()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write_raw(data)
            return
        if self._tunnel_pending is not None:
            # Bytes after an Upgrade request, before the upstream agreed: held (with
            # reading paused) until the 101 arrives.
            self._tunnel_pending.append(data)
            self.pause(_PAUSE_QUEUE)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_requested(data[int(exc.args[0]):])
            return
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; the original is the context.
            self._reject(431 if isinstance(exc.__context__, _HeaderLimit) else 400)
            return
        if self.exchanges:
            ex = self.exchanges[0]
            up = ex.upstream
            if up is not None and ex.out:
                up.send(ex)
            if len(self.exchanges) > 1 or ex.out_bytes > _MAX_PENDING_BODY:
                self.pause(_PAUSE_QUEUE)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.exchanges and (up := self.exchanges[0].upstream) is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.exchanges and (up := self.exchanges[0].upstream) is not None:
            up.resume_reading()

    def timed_out(self) -> None:
        # Idle keep-alive, a client too slow to send its headers (slowloris), or a
        # request body that stopped coming.
        self.deadline = 0.0
        ex = self.parsing
        if ex is not None and self._body_expected:
            if self.paused:
                # Reading is paused by us (the upstream is slow): not the client's fault.
                self.deadline = self.state.now + self.state.client_body
                return
            if self.exchanges and self.exchanges[0] is ex:
                self.fail(ex, 408)
                return
            # A pipelined request: an answer now would overtake the one before it.
        if self.transport is not None:
            self.transport.close()

    def _upgrade_requested(self, rest: bytes) -> None:
        """The parser stopped after an Upgrade request head. Its exchange goes to the
        upstream as usual; what follows is raw and held until the upstream answers."""
        ex = self.exchanges[-1] if self.exchanges else None
        if ex is None or not ex.upgrade or ex.version is None:
            self._reject(400)
            return
        self._tunnel_pending = [rest] if rest else []

    def start_tunnel(self, up: UpstreamProtocol) -> None:
        """The upstream answered 101: from now on bytes flow both ways untouched."""
        self.tunnel = up
        self.deadline = 0.0
        pending = self._tunnel_pending or []
        self._tunnel_pending = None
        self.exchanges.clear()
        self.parsing = None
        for chunk in pending:
            up.write_raw(chunk)
        self.resume(_PAUSE_QUEUE)

    # -- parser callbacks ---------------------------------------------------------

    # No on_message_begin: every request line has a URL, so its first piece starts the
    # request. One parser callback fewer per request, measurably.
    def on_url(self, url: bytes) -> None:
        if self._in_head:
            self._url += url
            return
        self._in_head = True
        self._url = url
        self._headers = []
        self._header_bytes = 0
        self._host = b""
        self._cookie = None
        self._forwarded_for = None
        self._has_xfp = False
        self._content_length = None
        self._chunked = False
        self._conn_tokens = b""
        self._request_id = None
        self._upgrade = None
        self.deadline = self.state.now + self.state.client_header

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if (
            self._header_bytes > self.state.max_header_bytes
            or len(self._headers) >= self.state.max_header_count
        ):
            raise _HeaderLimit
        lname = name.lower()
        if lname not in _REQUEST_SPECIAL:
            self._headers.append((name, value))
        elif lname == b"host":
            self._host = value
            self._headers.append((name, value))
        elif lname == b"content-length":
            # llhttp refuses duplicate and conflicting lengths and CL with TE.
            self._content_length = int(value)
        elif lname == b"cookie":
            self._cookie = value if self._cookie is None else self._cookie + b"; " + value
            self._headers.append((name, value))
        elif lname == b"x-forwarded-for":
            self._forwarded_for = (
                value if self._forwarded_for is None else self._forwarded_for + b", " + value
            )
        elif lname == b"x-forwarded-proto":
            self._has_xfp = True
            self._headers.append((name, value))
        elif lname == b"connection":
            self._conn_tokens += b"," + value.lower()
        elif lname == b"transfer-encoding":
            # llhttp refuses a request whose last coding is not chunked.
            self._chunked = value.lower().rstrip().endswith(b"chunked")
        elif lname == b"x-request-id":
            self._request_id = value
            self._headers.append((name, value))
        elif lname == b"upgrade":
            self._upgrade = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        state = self.state
        chunked = self._chunked
        self._body_expected = chunked or bool(self._content_length)
        self.deadline = state.now + state.client_body if self._body_expected else 0.0
        route = self.listener.table.match(self._host, self._url)
        if route is None:
            ex = Exchange(self, None)
            ex.status = 404
        else:
            headers = self._headers
            if self._conn_tokens:
                headers = self._headers = _drop_connection_tokens(headers, self._conn_tokens)
            if route.by_weight_only:
                ex = Exchange(self, route.pick())
            else:
                version, set_cookie = route.choose(headers, self._cookie)
                ex = Exchange(self, version)
                if set_cookie:
                    ex.set_cookie = True
        # Fields are set only when they differ from the class default (see Exchange).
        method = parser.get_method()
        http10 = parser.get_http_version() == "1.0"
        if http10:
            ex.http10 = True
        if method == b"HEAD":
            ex.is_head = True
        if not parser.should_keep_alive():
            ex.keep_alive = False
        if chunked:
            ex.request_chunked = True
        if self._upgrade is not None and parser.should_upgrade():
            ex.upgrade = True
            ex.keep_alive = False  # whatever the answer, this connection ends with it
        if state.access_log is not None:
            ex.method = method
            ex.url = self._url
            rid = self._request_id
            if rid is None:
                rid = state.new_request_id()
                self._headers.append((b"x-request-id", rid))
            ex.request_id = rid
        if ex.version is not None:
            parts = [method, b" ", self._url, b" HTTP/1.1\r\n"]
            for name, value in self._headers:
                parts += (name, b": ", value, b"\r\n")
            if self._forwarded_for is None and not self._has_xfp and not http10:
                parts.append(self._tail)
            else:
                if self._forwarded_for is not None:
                    parts += (b"x-forwarded-for: ", self._forwarded_for, b", ", self.peer,
                              b"\r\n")
                else:
                    parts.append(self.xff)
                if not self._has_xfp:
                    parts.append(self.listener.xfp)
                parts.append(_VIA_10 if http10 else _VIA_11)
            if chunked:
                parts.append(_CHUNKED)
            elif self._content_length is not None:
                parts.append(b"content-length: %d\r\n" % self._content_length)
            if ex.upgrade:
                parts += (b"connection: upgrade\r\nupgrade: ", self._upgrade or b"", b"\r\n")
            parts.append(b"\r\n")
            head = b"".join(parts)
            ex.out.append(head)  # out_bytes counts body bytes only: the head is bounded
            if not chunked and not self._content_length and method in _RETRYABLE_METHODS \
                    and not ex.upgrade:
                ex.retry_head = head
            if route is not None and route.mirror is not None and not ex.upgrade \
                    and (self._content_length or 0) <= _MAX_MIRROR_BODY and not chunked \
                    and route.mirror_next():
                ex.mirror = Mirror.begin(state, route.mirror, head, self._content_length or 0)
        self.parsing = ex
        self.exchanges.append(ex)
        if len(self.exchanges) == 1:
            self._start(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is None or ex.response_done or ex.version is None:
            return
        if ex.request_chunked:
            ex.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            ex.out.append(body)
        ex.out_bytes += len(body)
        ex.bytes_in += len(body)
        self.deadline = self.state.now + self.state.client_body
        if ex.mirror is not None:
            ex.mirror.body(body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.parsing = None
        if self._body_expected:
            self._body_expected = False
            self.deadline = 0.0
        ex.keep_alive = ex.keep_alive and self.parser.should_keep_alive()
        ex.request_done = True
        if ex.mirror is not None:
            ex.mirror.send()
            ex.mirror = None
        if ex.request_chunked and not ex.response_done and ex.version is not None:
            ex.out.append(_LAST_CHUNK)
        if ex.response_done and self.exchanges and self.exchanges[0] is ex:
            self._exchange_done(ex)

    # -- exchange lifecycle -------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        version = ex.version
        if version is None:
            self.write(error_response(ex.status, None, ex.keep_alive))
            ex.response_started = ex.response_done = True
            if ex.request_done:
                self._exchange_done(ex)
            return
        endpoint = version.only or version.next_endpoint(self.state.now)
        ex.endpoint = endpoint
        endpoint.active += 1
        conn = self.state.pool.take(endpoint) if not ex.upgrade else None
        if conn is not None:
            ex.reused = True
            conn.attach(ex)
        else:
            self.state.loop.create_task(self._connect(ex, endpoint))

    def _move(self, ex: Exchange, endpoint: Endpoint) -> None:
        old = ex.endpoint
        if old is not None:
            old.active -= 1
        ex.endpoint = endpoint
        endpoint.active += 1

    async def _connect(self, ex: Exchange, endpoint: Endpoint) -> None:
        state = self.state
        try:
            version = ex.version
            assert version is not None
            _, conn = await asyncio.wait_for(
                state.loop.create_connection(
                    lambda: UpstreamProtocol(state, endpoint), endpoint.host, endpoint.port,
                    ssl=version.ssl, server_hostname=version.server_hostname,
                ),
                state.timeouts.connect,
            )
        except (TimeoutError, OSError) as exc:
            state.connect_failures += 1
            version = ex.version
            assert version is not None
            state.endpoint_failed(version, endpoint)  # ssl.SSLError is an OSError too
            # Nothing reached the upstream, so any request may go to another endpoint
            # of the same version (its bytes are all still in ex.out).
            if ex.attempts < self._retries(ex) and len(version.endpoints) > 1 \
                    and not self.closed and not ex.response_done:
                ex.attempts += 1
                state.retries += 1
                other = version.next_endpoint(state.now, avoid=endpoint)
                self._move(ex, other)
                await self._connect(ex, other)
                return
            self.fail(ex, 504 if isinstance(exc, TimeoutError) else 502)
            return
        state.pool.opened += 1
        if self.closed or ex.response_done or not self.exchanges or self.exchanges[0] is not ex:
            if ex.upgrade:
                conn.close()
            else:
                state.pool.give_back(conn, state.now)
            return
        conn.attach(ex)

    def _retries(self, ex: Exchange) -> int:
        route = self.listener.table.services.get(ex.version.service) if ex.version else None
        return route.retries if route is not None else 1

    def retry(self, ex: Exchange) -> None:
        """A connection died before answering a request without a body (an idle pooled
        connection the upstream closed, or an endpoint that resets): sent again, to
        another endpoint of the same version when there is one."""
        assert ex.retry_head is not None and ex.version is not None
        state = self.state
        state.retries += 1
        ex.attempts += 1
        ex.reused = False
        ex.out = [ex.retry_head]
        other = ex.version.next_endpoint(state.now, avoid=ex.endpoint)
        self._move(ex, other)
        state.loop.create_task(self._connect(ex, other))

    def can_retry(self, ex: Exchange) -> bool:
        return ex.retry_head is not None and not self.closed and (
            ex.reused or ex.attempts < self._retries(ex)
        )

    def fail(self, ex: Exchange, status: int) -> None:
        """The upstream could not answer (refused, reset, timed out), or the client's
        request body stopped (408)."""
        if ex.response_done or self.closed:
            return
        if ex.version is not None and status != 408:
            self.state.endpoint_failed(ex.version, ex.endpoint)
        if ex.response_started:
            # Part of a response is out; the client can only learn by the close.
            ex.response_done = True
            ex.finish(502)
            if self.transport is not None:
                self.transport.close()
            return
        ex.status = status
        ex.response_started = ex.response_done = True
        if not ex.request_done:
            ex.keep_alive = False
        self.write(error_response(status, ex.version, ex.keep_alive))
        ex.finish(status)
        if ex.request_done:
            self._exchange_done(ex)
        elif self.transport is not None:
            self.transport.close()

    def response_finished(self, ex: Exchange, upstream_reusable: bool) -> None:
        ex.response_done = True
        assert ex.version is not None
        state = self.state
        if ex.status >= 500 and ex.version.outlier.on_5xx:
            state.endpoint_failed(ex.version, ex.endpoint)
        elif (ep := ex.endpoint) is not None:
            ep.failures = 0
        ex.finish(ex.status)
        conn = ex.upstream
        if conn is not None:
            conn.exchange = None  # detach(), inlined on this per-request path
            conn.deadline = 0.0
            if conn.reading_paused:
                conn.resume_reading()
            ex.upstream = None
            if upstream_reusable and ex.request_done and not conn.closed:
                state.pool.put(conn, state.now)
            else:
                conn.close()
        if ex.request_done:
            self._exchange_done(ex)
        else:
            # Answered before the request body ended: drop the rest, then close.
            ex.keep_alive = False

    def _exchange_done(self, ex: Exchange) -> None:
        if self.exchanges and self.exchanges[0] is ex:
            self.exchanges.popleft()
        if not ex.keep_alive:
            if self.transport is not None:
                self.transport.close()
            return
        if self.exchanges:
            self._start(self.exchanges[0])
            if len(self.exchanges) == 1:
                self.resume(_PAUSE_QUEUE)
        else:
            self.deadline = self.state.now + self.state.client_idle
            if self.paused:
                self.resume(_PAUSE_QUEUE)

    def write(self, data: bytes) -> None:
        """Bytes for the client, dropped once it is gone."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _reject(self, status: int) -> None:
        if self.transport is None:
            return
        if not self.exchanges:
            self.transport.write(error_response(status, None, False))
        self.transport.close()

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def upstream_paused(self) -> None:
        self.pause(_PAUSE_UPSTREAM)

    def upstream_resumed(self) -> None:
        self.resume(_PAUSE_UPSTREAM)


def _drop_connection_tokens(
    headers: list[tuple[bytes, bytes]], tokens: bytes
) -> list[tuple[bytes, bytes]]:
    named = {t.strip() for t in tokens.split(b",")} - {b"", b"close", b"keep-alive"}
    if not named:
        return headers
    return [(n, v) for n, v in headers if n.lower() not in named]




class UpstreamProtocol(asyncio.Protocol):
    """A connection to one upstream endpoint; serves one exchange at a time."""

    def __init__(self, state: ProxyState, endpoint: Endpoint) -> None:
        self.state = state
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.deadline = 0.0
        self.idle_since = 0.0
        self.reading_paused = False
        self._out: list[bytes] = []
        self._headers: list[bytes] = []
        self._reason = b""
        self._content_length: int | None = None
        self._chunked = False
        self._down_chunked = False
        self._until_close = False
        self._interim = False
        self._complete = False
        self._reusable = False
        self._reset_parser = False
        self._got_bytes = False
        self.tunnel: DownstreamProtocol | None = None
        self._upgrade = b""

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- used by DownstreamProtocol ----------------------------------------------

    def attach(self, ex: Exchange) -> None:
        self.exchange = ex
        ex.upstream = self
        self._got_bytes = False
        self.deadline = self.state.now + self.state.upstream_read
        down = ex.down
        if down.writing_paused:
            self.pause_reading()
        out = ex.out
        if out:
            # join() hands back a lone item itself: no copy for the common case.
            self.transport.write(b"".join(out))  # type: ignore[union-attr]
            out.clear()
            ex.out_bytes = 0
        if down.paused and len(down.exchanges) == 1:
            down.resume(_PAUSE_QUEUE)

    def send(self, ex: Exchange) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(ex.out) if len(ex.out) > 1 else ex.out[0])
        ex.out.clear()
        ex.out_bytes = 0

    def detach(self) -> None:
        self.exchange = None
        self.deadline = 0.0
        if self.reading_paused:
            self.resume_reading()

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def timed_out(self) -> None:
        ex = self.exchange
        self.deadline = 0.0
        if ex is not None:
            ex.upstream = None
            self.exchange = None
            self.close()
            ex.down.fail(ex, 504)

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.state.upstreams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.upstreams.discard(self)
        if self.tunnel is not None:
            down = self.tunnel
            self.tunnel = None
            if down.transport is not None:
                down.transport.close()
            return
        ex = self.exchange
        if ex is None:
            self.state.pool.discard(self)
            return
        self.exchange = None
        ex.upstream = None
        if ex.response_started and self._until_close:
            # A response delimited by the close of the connection is now complete.
            if self._down_chunked:
                ex.down.write(_LAST_CHUNK)
            ex.down.response_finished(ex, False)
        elif not self._got_bytes and ex.down.can_retry(ex):
            if not ex.reused:
                self.state.endpoint_failed(ex.version, ex.endpoint)  # type: ignore[arg-type]
            ex.down.retry(ex)
        else:
            ex.down.fail(ex, 502)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        ex = self.exchange
        if ex is None:
            # Nothing was asked: an upstream talking out of turn cannot be reused.
            self.close()
            return
        self._got_bytes = True
        ex.bytes_out += len(data)
        self.deadline = self.state.now + self.state.upstream_read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._switch(ex, data[int(exc.args[0]):])
            return
        except httptools.HttpParserError:
            self._out.clear()
            ex.upstream = None
            self.exchange = None
            self.close()
            ex.down.fail(ex, 502)
            return
        out = self._out
        if out:
            down = ex.down
            if not down.closed and down.transport is not None:
                down.transport.write(b"".join(out))
            out.clear()
        if self._complete:
            self._complete = False
            if self._reset_parser:
                # HEAD: httptools cannot be told the response has no body, so the
                # parser still waits for one; start over for the next response.
                self._reset_parser = False
                self.parser = httptools.HttpResponseParser(self)
                self._reset_message()
            ex.down.response_finished(ex, self._reusable)

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_paused()
        elif self.exchange is not None:
            self.exchange.down.upstream_paused()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_resumed()
        elif self.exchange is not None:
            self.exchange.down.upstream_resumed()

    def _switch(self, ex: Exchange, rest: bytes) -> None:
        """After a 101 to an Upgrade request: both connections become one raw tunnel.
        Neither is pooled again; the tunnel ends when either side closes."""
        down = ex.down
        out = self._out
        if out:
            down.write(b"".join(out))
            out.clear()
        if ex.status != 101 or not ex.upgrade:
            self.close()
            down.fail(ex, 502)
            return
        ex.response_done = True
        ex.finish(101)
        ex.upstream = None
        self.exchange = None
        self.deadline = 0.0
        self.tunnel = down
        down.start_tunnel(self)
        if rest:
            down.write(rest)

    # -- parser callbacks ---------------------------------------------------------

    # No on_message_begin: the per-message fields are reset when a message ends (and
    # when the parser is replaced), one parser callback fewer per response.
    def _reset_message(self) -> None:
        self._headers = []
        self._upgrade = b""
        self._reason = b""
        self._content_length = None
        self._chunked = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname not in _RESPONSE_DROP:
            self._headers += (name, b": ", value, b"\r\n")
        elif lname == b"upgrade":
            self._upgrade = value
        elif lname == b"content-length":
            self._content_length = int(value)
        elif lname == b"transfer-encoding":
            self._chunked = value.lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None and ex.version is not None
        status = self.parser.get_status_code()
        if status == 101 and ex.upgrade:
            ex.status = 101
            ex.response_started = True
            self._out.append(b"HTTP/1.1 101 %s\r\n%sconnection: upgrade\r\nupgrade: %s\r\n%s"
                             b"%s\r\n" % (self._reason, b"".join(self._headers),
                                           self._upgrade, ex.version.response_header, _VIA_11))
            return
        if status < 200:
            self._interim = True
            if not ex.http10 and status != 101:
                self._out.append(
                    b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, self._reason, b"".join(self._headers))
                )
            return
        ex.status = status
        ex.response_started = True
        reason = self._reason
        line = _STATUS_LINES.get((status, reason))
        if line is None:
            line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
            if len(_STATUS_LINES) < 1024:
                _STATUS_LINES[(status, reason)] = line
        parts = [line, *self._headers]
        self._down_chunked = False
        self._until_close = False
        if ex.is_head or status in _BODYLESS_STATUS:
            if self._content_length is not None and status != 204:
                parts.append(b"content-length: %d\r\n" % self._content_length)
        elif self._content_length is not None and not self._chunked:
            parts.append(b"content-length: %d\r\n" % self._content_length)
        else:
            self._until_close = not self._chunked
            if ex.http10:
                ex.keep_alive = False  # HTTP/1.0 has no chunked framing: close delimits.
            else:
                self._down_chunked = True
                parts.append(_CHUNKED)
        parts.append(ex.version.response_header)
        if ex.set_cookie:
            parts.append(ex.version.sticky_header)
        parts.append(_VIA_11)
        if not ex.keep_alive:
            parts.append(_CLOSE)
        elif ex.http10:
            parts.append(_KEEP_ALIVE)
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))
        if ex.is_head:
            self._complete = True
            self._reset_parser = True
            self._reusable = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._down_chunked:
            self._out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self._out.append(body)

    def on_message_complete(self) -> None:
        self._headers = []
        self._reason = b""
        self._content_length = None
        self._chunked = False
        if self._upgrade:
            self._upgrade = b""
        if self._interim:
            self._interim = False
            return
        if self._complete:  # HEAD, already finished at its headers
            return
        if self._down_chunked:
            self._out.append(_LAST_CHUNK)
        self._reusable = self.parser.should_keep_alive() and not self._until_close
        self._complete = True


class Mirror:
    """A copy of one request for the mirror version. Buffered whole (bodies up to
    _MAX_MIRROR_BODY) and sent once the original is read, on a connection of its own;
    the answer is read only to know when the connection is free again, then dropped.
    Dropped outright, never waited for, when too many are in flight."""

    __slots__ = ("expected", "parts", "size", "state", "version")

    def __init__(self, state: ProxyState, version: VersionRoute, head: bytes,
                 expected: int) -> None:
        self.state = state
        self.version = version
        self.parts = [head]
        self.size = 0
        self.expected = expected

    @staticmethod
    def begin(state: ProxyState, version: VersionRoute, head: bytes, expected: int
              ) -> Mirror | None:
        if state.mirrors_in_flight >= _MAX_MIRRORS_IN_FLIGHT:
            state.mirrors_dropped += 1
            return None
        return Mirror(state, version, head, expected)

    def body(self, chunk: bytes) -> None:
        self.parts.append(chunk)
        self.size += len(chunk)

    def send(self) -> None:
        if self.size != self.expected:
            return  # the client went away mid-body
        state = self.state
        state.mirrors_in_flight += 1
        payload = b"".join(self.parts)
        endpoint = self.version.next_endpoint(state.now)
        conn = state.mirror_pool.take(endpoint)
        if conn is not None:
            conn.start(payload, time.perf_counter())
        else:
            state.loop.create_task(self._connect(endpoint, payload))

    async def _connect(self, endpoint: Endpoint, payload: bytes) -> None:
        state = self.state
        started = time.perf_counter()
        try:
            _, conn = await asyncio.wait_for(
                state.loop.create_connection(
                    lambda: MirrorProtocol(state, endpoint, self.version), endpoint.host,
                    endpoint.port, ssl=self.version.ssl,
                    server_hostname=self.version.server_hostname),
                state.timeouts.connect,
            )
        except (TimeoutError, OSError):
            state.mirrors_in_flight -= 1
            self.version.stats.observe(502, time.perf_counter() - started)
            return
        conn.start(payload, started)


class MirrorProtocol(asyncio.Protocol):
    """A connection to a mirror endpoint: sends copies, reads and drops the answers."""

    def __init__(self, state: ProxyState, endpoint: Endpoint, version: VersionRoute) -> None:
        self.state = state
        self.endpoint = endpoint
        self.version = version
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.closed = False
        self.busy = False
        self.started = 0.0
        self.deadline = 0.0

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.state.mirror_conns.add(self)

    def start(self, payload: bytes, started: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.started = started
        self.deadline = self.state.now + self.state.upstream_read
        self.transport.write(payload)
        if self.transport.get_write_buffer_size() > _MAX_MIRROR_BODY:
            # The mirror does not keep up: give up on it rather than buffer more.
            self._done(504, reusable=False)

    def timed_out(self) -> None:
        self._done(504, reusable=False)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._done(502, reusable=False)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self._done(status, reusable=self.parser.should_keep_alive())

    def _done(self, status: int, *, reusable: bool) -> None:
        if not self.busy:
            return
        self.busy = False
        self.state.mirrors_in_flight -= 1
        self.version.stats.observe(status, time.perf_counter() - self.started)
        if reusable and self.usable:
            self.parser = httptools.HttpResponseParser(self)
            self.state.mirror_pool.give_back(self, self.state.now)
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.mirror_conns.discard(self)
        self._done(502, reusable=False)
        self.state.mirror_pool.discard(self)
