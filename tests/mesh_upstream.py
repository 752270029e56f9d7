"""A tiny HTTP/1.1 upstream for the mesh tests, on loopback with a free port.

It answers every request with JSON describing what it received (its name, method,
path, headers, body size and a hash of the body), and counts connections and requests
so tests can see keep-alive reuse from the upstream's side. Paths steer it:
  /chunked?n=K    answer with a chunked body of K parts
  /status/NNN     answer with that status
  /slow?ms=N      wait N ms before answering
  /close          answer with `connection: close` and close
  /reset          close the connection without answering
  /big?bytes=N    answer with an N-byte body
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import ClassVar, cast
from urllib.parse import parse_qs, urlsplit

import httptools


class MeshUpstream:
    def __init__(self, name: str, *, delay: float = 0.0, fail_every: int = 0) -> None:
        """`delay` seconds before each answer; every `fail_every`-th request gets 500."""
        self.name = name
        self.delay = delay
        self.fail_every = fail_every
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.seen: list[dict[str, object]] = []

    async def start(self) -> MeshUpstream:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for conn in list(_Conn.live.get(self, set())):
                conn.transport.close()
            await self.server.wait_closed()


class _Conn(asyncio.Protocol):
    live: ClassVar[dict[MeshUpstream, set[_Conn]]] = {}

    def __init__(self, upstream: MeshUpstream) -> None:
        self.up = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport
        self.headers: list[tuple[str, str]] = []
        self.url = b""
        self.body = hashlib.sha256()
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.up.connections += 1
        _Conn.live.setdefault(self.up, set()).add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Conn.live.get(self.up, set()).discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = []
        self.url = b""
        self.body = hashlib.sha256()
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode().lower(), value.decode()))

    def on_headers_complete(self) -> None:
        if ("expect", "100-continue") in self.headers:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.update(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.up.requests += 1
        method = self.parser.get_method().decode()
        keep_alive = self.parser.should_keep_alive()
        url = urlsplit(self.url.decode())
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        info: dict[str, object] = {
            "upstream": self.up.name,
            "method": method,
            "path": url.path,
            "headers": self.headers,
            "body_bytes": self.size,
            "body_sha256": self.body.hexdigest(),
        }
        self.up.seen.append(info)
        asyncio.get_running_loop().create_task(
            self._answer(method, url.path, query, info, keep_alive, self.up.requests)
        )

    async def _answer(
        self, method: str, path: str, query: dict[str, str], info: dict[str, object],
        keep_alive: bool, number: int,
    ) -> None:
        if path == "/slow":
            await asyncio.sleep(int(query.get("ms", "100")) / 1000)
        elif self.up.delay:
            await asyncio.sleep(self.up.delay)
        if path == "/reset":
            self.transport.abort()
            return
        status = 200
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        elif self.up.fail_every and number % self.up.fail_every == 0:
            status = 500
        payload = json.dumps(info).encode()
        if path == "/big":
            payload = b"x" * int(query.get("bytes", "1000"))
        close = path == "/close" or not keep_alive
        extra = b"connection: close\r\n" if close else b""
        extra += b"keep-alive: timeout=5\r\nx-upstream: " + self.up.name.encode() + b"\r\n"
        head = b"HTTP/1.1 %d Answer\r\ncontent-type: application/json\r\n" % status + extra
        if status in (204, 304):
            self.transport.write(head + b"\r\n")
        elif path == "/chunked":
            parts = int(query.get("n", "3"))
            size = -(-len(payload) // parts)
            chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
            self.transport.write(head + b"transfer-encoding: chunked\r\n\r\n" + body)
        else:
            length = b"content-length: %d\r\n\r\n" % len(payload)
            self.transport.write(head + length + (b"" if method == "HEAD" else payload))
        if close:
            self.transport.close()


class Reply:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done = False
        self.chunked = False

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name.lower():
                return v
        return None

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class RawHttp:
    """One client connection that writes raw bytes and parses the replies, so a test
    controls framing exactly and sees exactly what the proxy sent back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._replies: list[Reply] = []
        self._current = Reply()
        self._head_only = False
        self.parser = httptools.HttpResponseParser(self)

    @staticmethod
    async def connect(address: str) -> RawHttp:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return RawHttp(reader, writer)

    def on_message_begin(self) -> None:
        self._current = Reply()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers.append((name.decode().lower(), value.decode()))

    def on_headers_complete(self) -> None:
        self._current.status = self.parser.get_status_code()
        if self._head_only and self._current.status >= 200:
            self._current.done = True
            self._replies.append(self._current)

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_chunk_header(self) -> None:
        self._current.chunked = True

    def on_message_complete(self) -> None:
        if not self._current.done:
            self._current.done = True
            self._replies.append(self._current)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_reply(self, *, head: bool = False, timeout: float = 10.0) -> Reply:
        """The next final (>= 200) reply; interim 1xx replies are returned too."""
        self._head_only = head
        async with asyncio.timeout(timeout):
            while not self._replies:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed before a full reply")
                self.parser.feed_data(data)
                if head and self._replies:
                    self.parser = httptools.HttpResponseParser(self)
        return self._replies.pop(0)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> Reply:
        lines = [f"{method} {path} HTTP/1.1", "host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"content-length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await self.read_reply(head=method == "HEAD")

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


TOKEN = "test-token-0123456789"


def mesh_config(
    versions: dict[str, list[str]], weights: dict[str, int], **service: object
) -> dict[str, object]:
    """A one-listener, one-service config on free ports, as the YAML would hold it."""
    return {
        "listeners": [{
            "address": "127.0.0.1:0",
            "services": [{
                "name": "web",
                "versions": [
                    {"name": n, "endpoints": eps, "weight": weights.get(n, 0)}
                    for n, eps in versions.items()
                ],
                **service,
            }],
        }],
        "admin": {"address": "127.0.0.1:0"},
        "stats": {"interval": 0.5},
    }


async def start_mesh(config: dict[str, object]):  # type: ignore[no-untyped-def]
    from mesh.config import parse_config
    from mesh.server import MeshServer

    server = MeshServer(parse_config(config, "test"), TOKEN)
    await server.start()
    return server
