"""The admin HTTP API of a proxy process (mesh/README.md): routes, weights, stats,
health, and /metrics in Prometheus text format.

Small and separate from the data plane: whole requests are buffered (bodies are tiny
JSON), answered by plain functions, and every path under /admin/ needs the bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote

import httptools

if TYPE_CHECKING:
    from mesh.server import MeshServer

_MAX_BODY = 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Response = tuple[int, bytes, bytes]  # status, content type, body


def _json(status: int, payload: object) -> Response:
    return status, b"application/json", json.dumps(payload).encode()


class AdminApi:
    """Request routing of the admin API, independent of the socket handling."""

    def __init__(self, server: MeshServer, token: str) -> None:
        self._server = server
        self._token = ("Bearer " + token).encode()

    def authorized(self, header: bytes | None) -> bool:
        return header is not None and hmac.compare_digest(header.strip(), self._token)

    async def handle(self, method: bytes, url: bytes, auth: bytes | None, body: bytes
                     ) -> Response:
        parsed = httptools.parse_url(url)
        path = unquote(parsed.path.decode("latin-1"))
        query = parse_qs(parsed.query.decode("latin-1")) if parsed.query else {}
        try:
            if path == "/metrics":
                self._method(method, b"GET")
                return 200, b"text/plain; version=0.0.4; charset=utf-8", \
                    self._server.metrics.exposition()
            if not path.startswith("/admin/"):
                raise AdminError(404, f"no such path {path}")
            if not self.authorized(auth):
                return _json(401, {"error": "missing or wrong bearer token"})
            return await self._admin(method, path, query, body)
        except AdminError as exc:
            return _json(exc.status, {"error": str(exc)})

    @staticmethod
    def _method(method: bytes, *allowed: bytes) -> None:
        if method not in allowed:
            raise AdminError(405, f"method {method.decode()} not allowed here")

    async def _admin(
        self, method: bytes, path: str, query: dict[str, list[str]], body: bytes
    ) -> Response:
        server = self._server
        parts = path.strip("/").split("/")
        if path == "/admin/v1/health":
            self._method(method, b"GET")
            return _json(200, server.health())
        if path == "/admin/v1/routes":
            if method == b"GET":
                return _json(200, server.routes())
            self._method(method, b"PUT")
            try:
                server.replace_routes(json.loads(body or b"null"))
            except ValueError as exc:  # MeshConfigError and bad JSON alike
                raise AdminError(400, str(exc)) from None
            await self._settle()
            return _json(200, server.routes())
        if path == "/admin/v1/reload":
            self._method(method, b"POST")
            if server.config_path is None:
                raise AdminError(400, "the proxy was started without --config")
            if not await server.reload():
                raise AdminError(400, server.last_reload_error or "reload rejected")
            return _json(200, server.routes())
        if path == "/admin/v1/stats":
            self._method(method, b"GET")
            return _json(200, self._stats(query))
        if len(parts) == 5 and parts[:3] == ["admin", "v1", "services"] and parts[4] == "weights":
            service = parts[3]
            if method == b"GET":
                return _json(200, {"service": service, "weights": self._weights_of(service)})
            self._method(method, b"PUT", b"POST")
            weights = _parse_weights(body)
            self._weights_of(service)
            try:
                applied = server.set_weights(service, weights)
            except ValueError as exc:
                raise AdminError(400, str(exc)) from None
            await self._settle()
            return _json(200, {"service": service, "weights": applied})
        raise AdminError(404, f"no such path {path}")

    async def _settle(self) -> None:
        try:
            await self._server.settle()
        except TimeoutError:
            raise AdminError(500, "a worker did not take the change in time") from None

    def _weights_of(self, service: str) -> dict[str, int]:
        weights = self._server.weights(service)
        if weights is None:
            raise AdminError(404, f"no service {service!r}")
        return weights

    def _stats(self, query: dict[str, list[str]]) -> dict[str, Any]:
        service = _param(query, "service")
        now = time.time()
        end = _number(query, "end", now)
        start = _number(query, "start", end - 60.0)
        step = _number(query, "step", 1.0)
        if not end > start:
            raise AdminError(400, f"end {end} must be after start {start}")
        if not step > 0:
            raise AdminError(400, "step must be positive")
        # Bound the answer's size whatever the caller asks.
        step = max(step, (end - start) / 10_000)
        self._weights_of(service)
        return self._server.stats(service, start, end, step)


def _param(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values or not values[0]:
        raise AdminError(400, f"query parameter {name!r} is required")
    return values[0]


def _number(query: dict[str, list[str]], name: str, default: float) -> float:
    values = query.get(name)
    if not values:
        return default
    try:
        value = float(values[0])
    except ValueError:
        raise AdminError(400, f"query parameter {name!r}: expected a number") from None
    if not math.isfinite(value):
        raise AdminError(400, f"query parameter {name!r}: expected a finite number")
    return value


def _parse_weights(body: bytes) -> dict[str, int]:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise AdminError(400, "body: expected a JSON object of version weights") from None
    if isinstance(data, dict) and isinstance(data.get("weights"), dict):
        data = data["weights"]
    if not isinstance(data, dict) or not data:
        raise AdminError(400, 'body: expected {"<version>": <weight>, ...}')
    weights: dict[str, int] = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AdminError(400, f"body: {name}: expected a non-negative integer weight")
        weights[str(name)] = value
    return weights


class AdminProtocol(asyncio.Protocol):
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._auth: bytes | None = None
        self._body: list[bytes] = []
        self._size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            status = 413 if isinstance(exc.__context__, _TooLarge) else 400
            self._send(*_json(status, {"error": _REASONS[status]}), keep_alive=False)

    def on_message_begin(self) -> None:
        self._url = b""
        self._auth = None
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self._auth = value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > _MAX_BODY:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        request = (self.parser.get_method(), self._url, self._auth, b"".join(self._body))
        # One request at a time: a pipelined one waits until this answer is out.
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._answer(request, keep_alive))

    async def _answer(self, request: tuple[bytes, bytes, bytes | None, bytes],
                      keep_alive: bool) -> None:
        try:
            response = await self.api.handle(*request)
        except Exception as exc:  # an admin bug must not take the proxy down
            response = _json(500, {"error": f"{type(exc).__name__}: {exc}"})
        self._send(*response, keep_alive=keep_alive)
        if keep_alive and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _send(self, status: int, ctype: bytes, body: bytes, *, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"content-length: {len(body)}\r\n"
        ).encode() + b"content-type: " + ctype + b"\r\n"
        if status == 401:
            head += b'www-authenticate: Bearer realm="canaryctl-mesh"\r\n'
        if not keep_alive:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if not keep_alive:
            self.transport.close()


class _TooLarge(Exception):
    pass


def protocol_factory(api: AdminApi) -> Callable[[], AdminProtocol]:
    return lambda: AdminProtocol(api)
