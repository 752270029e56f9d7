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
  /hold...        stop reading the body until the test calls release()
  /stream?bytes=N answer with an N-byte body written in 256 KiB pieces as the socket
                  drains (flow control), so big downloads cost the upstream no memory
  Upgrade: ...    answered 101; from then on the connection echoes what it receives,
                  prefixed with "echo:" per read
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Any, ClassVar, cast
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
        # Requests whose path starts with /hold stop being read after their head until
        # release(): a slow consumer, so a test can see backpressure reach the client.
        self.held: list[asyncio.Transport] = []

    def release(self) -> None:
        for transport in self.held:
            transport.resume_reading()
        self.held.clear()

    def paused_writers(self) -> int:
        """Connections whose writes are paused: the proxy stopped reading them."""
        return sum(1 for c in _Conn.live.get(self, set()) if not c.writable.is_set())

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
        self.tunnel = False
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.up.connections += 1
        _Conn.live.setdefault(self.up, set()).add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Conn.live.get(self.up, set()).discard(self)
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.transport.write(b"echo:" + data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.up.requests += 1
            self.tunnel = True
            upgrade = dict(self.headers).get("upgrade", "")
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                b"upgrade: " + upgrade.encode() + b"\r\nx-upstream: " + self.up.name.encode()
                + b"\r\n\r\n"
            )
            rest = data[int(exc.args[0]):]
            if rest:
                self.transport.write(b"echo:" + rest)
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
        if self.url.startswith(b"/hold"):
            self.transport.pause_reading()
            self.up.held.append(self.transport)

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
        if path == "/stream":
            await self._stream(int(query.get("bytes", "0")))
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


    async def _stream(self, size: int) -> None:
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-upstream: %s\r\n\r\n"
            % (size, self.up.name.encode())
        )
        piece = b"s" * (256 * 1024)
        left = size
        while left > 0 and not self.transport.is_closing():
            await self.writable.wait()
            n = min(left, len(piece))
            self.transport.write(piece if n == len(piece) else piece[:n])
            left -= n


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

    def json(self) -> dict[str, Any]:
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
        self.leftover = b""
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
                try:
                    self.parser.feed_data(data)
                except httptools.HttpParserUpgrade as exc:
                    # A 101: what follows is not HTTP; keep it for the caller.
                    self.leftover = data[int(exc.args[0]):]
                    self.parser = httptools.HttpResponseParser(self)
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
) -> dict[str, Any]:
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


async def start_mesh(config: dict[str, Any]):  # type: ignore[no-untyped-def]
    from mesh.config import parse_config
    from mesh.server import MeshServer

    server = MeshServer(parse_config(config, "test"), TOKEN)
    await server.start()
    return server


class MeshProcess:
    """`python -m mesh` as a child process (needed for --workers and signals)."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready
        self.stderr = b""

    @property
    def address(self) -> str:
        return str(self.ready["listeners"][0])

    @property
    def admin_url(self) -> str:
        return str(self.ready["admin_url"])

    @staticmethod
    async def start(config: dict[str, Any], workdir: str, *args: str) -> MeshProcess:
        import os
        import sys

        import yaml

        path = os.path.join(workdir, "mesh.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        token = os.path.join(workdir, "token")
        with open(token, "w", encoding="utf-8") as f:
            f.write(TOKEN)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh", "--config", path, "--admin-token-file", token, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"mesh did not start: {err.decode(errors='replace')}")
        return MeshProcess(proc, json.loads(line))

    async def stop(self) -> int:
        import signal

        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self.proc.stderr is not None:
            self.stderr = await self.proc.stderr.read()
        return code
