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
import time
from collections import deque
from typing import cast

import httptools

from mesh.config import LimitConfig, TimeoutConfig
from mesh.metrics import MeshMetrics
from mesh.routing import Endpoint, RouteTable, VersionRoute
from mesh.upstream_pool import UpstreamPool

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing headers the proxy writes itself.
_REQUEST_SPECIAL = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authorization", b"content-length",
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"cookie",
})
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"content-length",
})
_BODYLESS_STATUS = frozenset({204, 304})
_RETRYABLE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT", b"TRACE"})
_VIA_11 = b"via: 1.1 canaryctl\r\n"
_VIA_10 = b"via: 1.0 canaryctl\r\n"
_XFP = b"x-forwarded-proto: http\r\n"
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
        self.timeouts = timeouts
        self.limits = limits
        self.pool: UpstreamPool[UpstreamProtocol] = UpstreamPool(limits.max_idle_per_endpoint)
        self.upstreams: set[UpstreamProtocol] = set()
        self.downstreams: set[DownstreamProtocol] = set()
        self.now = loop.time()
        self.connect_failures = 0
        self.retries = 0

    def sweep(self) -> None:
        """Enforces deadlines; called a few times a second."""
        now = self.now = self.loop.time()
        for up in [u for u in self.upstreams if u.deadline and u.deadline < now]:
            up.timed_out()
        for down in [d for d in self.downstreams if d.deadline and d.deadline < now]:
            down.timed_out()
        self.pool.close_idle(now - self.timeouts.pool_idle)


class Listener:
    """One listening socket; `table` is swapped whole when routes change."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.server: asyncio.AbstractServer | None = None


class Exchange:
    """One request and its response."""

    __slots__ = (
        "down", "http10", "is_head", "keep_alive", "out", "out_bytes", "request_chunked",
        "request_done", "response_done", "response_started", "retry_head", "reused",
        "set_cookie", "started", "status", "upstream", "version",
    )

    def __init__(self, down: DownstreamProtocol, version: VersionRoute | None) -> None:
        self.down = down
        self.version = version
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.upstream: UpstreamProtocol | None = None
        self.started = time.perf_counter()
        self.status = 0
        self.request_done = False
        self.request_chunked = False
        self.response_started = False
        self.response_done = False
        self.keep_alive = True
        self.http10 = False
        self.is_head = False
        self.set_cookie = False
        self.reused = False
        self.retry_head: bytes | None = None


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

    # -- transport callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b"unknown"
        self.xff = b"x-forwarded-for: " + self.peer + b"\r\n"
        self.state.downstreams.add(self)
        self.deadline = self.state.now + self.state.timeouts.client_idle

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.downstreams.discard(self)
        for ex in self.exchanges:
            up = ex.upstream
            if up is not None:
                ex.upstream = None
                up.exchange = None
                up.close()
        self.exchanges.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(501)
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
        if self.exchanges and (up := self.exchanges[0].upstream) is not None:
            up.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchanges and (up := self.exchanges[0].upstream) is not None:
            up.resume_reading()

    def timed_out(self) -> None:
        # Idle keep-alive or a client too slow to send its headers (slowloris).
        self.deadline = 0.0
        if self.transport is not None:
            self.transport.close()

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._host = b""
        self._cookie = None
        self._forwarded_for = None
        self._has_xfp = False
        self._content_length = None
        self._chunked = False
        self._conn_tokens = b""
        self.deadline = self.state.now + self.state.timeouts.client_header

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if (
            self._header_bytes > self.state.limits.max_header_bytes
            or len(self._headers) >= self.state.limits.max_header_count
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

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.deadline = 0.0
        route = self.listener.table.match(self._host, self._url)
        if route is None:
            ex = Exchange(self, None)
            ex.status = 404
        else:
            headers = self._headers
            if self._conn_tokens:
                headers = self._headers = _drop_connection_tokens(headers, self._conn_tokens)
            version, set_cookie = route.choose(headers, self._cookie)
            ex = Exchange(self, version)
            ex.set_cookie = set_cookie
        method = parser.get_method()
        http10 = parser.get_http_version() == "1.0"
        ex.http10 = http10
        ex.is_head = method == b"HEAD"
        ex.keep_alive = parser.should_keep_alive()
        chunked = self._chunked
        ex.request_chunked = chunked
        if ex.version is not None:
            parts = [method, b" ", self._url, b" HTTP/1.1\r\n"]
            for name, value in self._headers:
                parts += (name, b": ", value, b"\r\n")
            if self._forwarded_for is not None:
                parts += (b"x-forwarded-for: ", self._forwarded_for, b", ", self.peer, b"\r\n")
            else:
                parts.append(self.xff)
            if not self._has_xfp:
                parts.append(_XFP)
            parts.append(_VIA_10 if http10 else _VIA_11)
            if chunked:
                parts.append(_CHUNKED)
            elif self._content_length is not None:
                parts.append(b"content-length: %d\r\n" % self._content_length)
            parts.append(b"\r\n")
            head = b"".join(parts)
            ex.out.append(head)
            ex.out_bytes = len(head)
            if not chunked and not self._content_length and method in _RETRYABLE_METHODS:
                ex.retry_head = head
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

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is None:
            return
        self.parsing = None
        ex.keep_alive = ex.keep_alive and self.parser.should_keep_alive()
        ex.request_done = True
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
        endpoint = version.next_endpoint()
        conn = self.state.pool.take(endpoint)
        if conn is not None:
            ex.reused = True
            conn.attach(ex)
        else:
            self.state.loop.create_task(self._connect(ex, endpoint))

    async def _connect(self, ex: Exchange, endpoint: Endpoint) -> None:
        state = self.state
        try:
            _, conn = await asyncio.wait_for(
                state.loop.create_connection(
                    lambda: UpstreamProtocol(state, endpoint), endpoint.host, endpoint.port
                ),
                state.timeouts.connect,
            )
        except TimeoutError:
            state.connect_failures += 1
            self.fail(ex, 504)
            return
        except OSError:
            state.connect_failures += 1
            self.fail(ex, 502)
            return
        state.pool.opened += 1
        if self.closed or ex.response_done or not self.exchanges or self.exchanges[0] is not ex:
            state.pool.give_back(conn, state.now)
            return
        conn.attach(ex)

    def retry(self, ex: Exchange) -> None:
        """A reused connection died before answering; the upstream may have closed it
        while idle. Requests without a body are sent again on a new connection."""
        assert ex.retry_head is not None and ex.version is not None
        self.state.retries += 1
        ex.reused = False
        ex.out = [ex.retry_head]
        self.state.loop.create_task(self._connect(ex, ex.version.next_endpoint()))

    def fail(self, ex: Exchange, status: int) -> None:
        """The upstream could not answer (refused, reset, timed out)."""
        if ex.response_done or self.closed:
            return
        if ex.response_started:
            # Part of a response is out; the client can only learn by the close.
            ex.response_done = True
            if ex.version is not None:
                ex.version.stats.observe(502, time.perf_counter() - ex.started)
            if self.transport is not None:
                self.transport.close()
            return
        ex.status = status
        ex.response_started = ex.response_done = True
        if not ex.request_done:
            ex.keep_alive = False
        self.write(error_response(status, ex.version, ex.keep_alive))
        if ex.version is not None:
            ex.version.stats.observe(status, time.perf_counter() - ex.started)
        if ex.request_done:
            self._exchange_done(ex)
        elif self.transport is not None:
            self.transport.close()

    def response_finished(self, ex: Exchange, upstream_reusable: bool) -> None:
        ex.response_done = True
        assert ex.version is not None
        ex.version.stats.observe(ex.status, time.perf_counter() - ex.started)
        conn = ex.upstream
        if conn is not None:
            conn.detach()
            ex.upstream = None
            if upstream_reusable and ex.request_done:
                self.state.pool.give_back(conn, self.state.now)
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
            self.deadline = self.state.now + self.state.timeouts.client_idle
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

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- used by DownstreamProtocol ----------------------------------------------

    def attach(self, ex: Exchange) -> None:
        self.exchange = ex
        ex.upstream = self
        self._got_bytes = False
        self.deadline = self.state.now + self.state.timeouts.upstream_read
        if ex.down.writing_paused:
            self.pause_reading()
        if ex.out:
            self.send(ex)
        if len(ex.down.exchanges) == 1:
            ex.down.resume(_PAUSE_QUEUE)

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
        elif not self._got_bytes and ex.reused and ex.retry_head is not None:
            ex.down.retry(ex)
        else:
            ex.down.fail(ex, 502)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Nothing was asked: an upstream talking out of turn cannot be reused.
            self.close()
            return
        self._got_bytes = True
        self.deadline = self.state.now + self.state.timeouts.upstream_read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._out.clear()
            ex.upstream = None
            self.exchange = None
            self.close()
            ex.down.fail(ex, 502)
            return
        out = self._out
        if out:
            ex.down.write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()
        if self._complete:
            self._complete = False
            if self._reset_parser:
                # HEAD: httptools cannot be told the response has no body, so the
                # parser still waits for one; start over for the next response.
                self._reset_parser = False
                self.parser = httptools.HttpResponseParser(self)
            ex.down.response_finished(ex, self._reusable)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.down.upstream_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.down.upstream_resumed()

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""
        self._content_length = None
        self._chunked = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname not in _RESPONSE_DROP:
            self._headers += (name, b": ", value, b"\r\n")
        elif lname == b"content-length":
            self._content_length = int(value)
        elif lname == b"transfer-encoding":
            self._chunked = value.lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        ex = self.exchange
        assert ex is not None and ex.version is not None
        status = self.parser.get_status_code()
        if status < 200:
            self._interim = True
            if not ex.http10 and status != 101:
                self._out.append(
                    b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, self._reason, b"".join(self._headers))
                )
            return
        ex.status = status
        ex.response_started = True
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, self._reason), *self._headers]
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
        if self._interim:
            self._interim = False
            return
        if self._complete:  # HEAD, already finished at its headers
            return
        if self._down_chunked:
            self._out.append(_LAST_CHUNK)
        self._reusable = self.parser.should_keep_alive() and not self._until_close
        self._complete = True
