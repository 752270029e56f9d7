"""The data plane through real sockets on loopback: framing, headers, keep-alive,
errors counted under the version that failed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.mesh_upstream import MeshUpstream, RawHttp, mesh_config, start_mesh


def run(body: Callable[[], Awaitable[None]], *, default_loop: bool = False) -> None:
    """Runs a test body on uvloop, as the proxy runs in production, or on asyncio's own
    loop, the proxy's fallback."""
    from mesh.runner import new_event_loop

    factory = asyncio.new_event_loop if default_loop else new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(body(), 60))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _one_upstream(**service: object) -> tuple[Any, MeshUpstream]:
    up = await MeshUpstream("baseline").start()
    server = await start_mesh(mesh_config({"baseline": [up.address]}, {"baseline": 100}, **service))
    return server, up


def test_get_keep_alive_reuses_upstream_connection() -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            for i in range(20):
                reply = await client.request("GET", f"/item/{i}")
                assert reply.status == 200
                assert reply.header("x-canaryctl-version") == "baseline"
                assert reply.json()["path"] == f"/item/{i}"
            await client.close()
            assert up.requests == 20
            assert up.connections == 1  # one client connection, one upstream connection
            # A second client reuses the pooled upstream connection too.
            other = await RawHttp.connect(server.listener_addresses()[0])
            assert (await other.request("GET", "/again")).status == 200
            await other.close()
            assert up.connections == 1
        finally:
            await server.close()
            await up.close()

    run(body)


def test_headers_hop_by_hop_stripped_forwarding_added() -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("GET", "/h", {
                "connection": "keep-alive, x-secret-hop",
                "keep-alive": "timeout=5",
                "x-secret-hop": "1",
                "te": "trailers",
                "proxy-authorization": "Basic eA==",
                "x-forwarded-for": "203.0.113.7",
                "x-end-to-end": "kept",
            })
            headers = dict(reply.json()["headers"])
            for hop in ("connection", "keep-alive", "x-secret-hop", "te", "proxy-authorization"):
                assert hop not in headers, hop
            assert headers["x-end-to-end"] == "kept"
            assert headers["host"] == "test"
            assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"
            assert headers["via"] == "1.1 canaryctl"
            # Response side: the upstream's keep-alive header is hop-by-hop too.
            assert reply.header("keep-alive") is None
            assert reply.header("x-upstream") == "baseline"
            assert reply.header("via") == "1.1 canaryctl"
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body)


@pytest.mark.parametrize("default_loop", [False, True], ids=["uvloop", "asyncio"])
def test_content_length_and_chunked_request_bodies(default_loop: bool) -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            payload = bytes(range(256)) * 1000  # 256 kB, several reads and writes
            reply = await client.request("POST", "/upload", body=payload)
            info = reply.json()
            assert info["body_bytes"] == len(payload)
            assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()
            # Chunked upload on the same connection.
            parts = [b"hello ", b"chunked ", b"world" * 5000]
            chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
            await client.send(
                b"PUT /c HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n" + chunked
            )
            reply = await client.read_reply()
            info = reply.json()
            whole = b"".join(parts)
            assert info["method"] == "PUT"
            assert info["body_bytes"] == len(whole)
            assert info["body_sha256"] == hashlib.sha256(whole).hexdigest()
            assert ("transfer-encoding", "chunked") in [tuple(h) for h in info["headers"]]
            assert up.connections == 1
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body, default_loop=default_loop)


@pytest.mark.parametrize("default_loop", [False, True], ids=["uvloop", "asyncio"])
def test_chunked_and_large_response_bodies(default_loop: bool) -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("GET", "/chunked?n=4")
            assert reply.status == 200
            assert reply.chunked
            assert reply.header("transfer-encoding") == "chunked"
            assert reply.json()["path"] == "/chunked"
            reply = await client.request("GET", "/big?bytes=3000000")
            assert reply.header("content-length") == "3000000"
            assert reply.body == b"x" * 3_000_000
            # Still the same connections after both.
            assert (await client.request("GET", "/after")).status == 200
            assert up.connections == 1
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body, default_loop=default_loop)


def test_head_204_and_pipelined_requests() -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("HEAD", "/big?bytes=1234")
            assert reply.status == 200
            assert reply.header("content-length") == "1234"
            reply = await client.request("GET", "/status/204")
            assert reply.status == 204
            assert reply.body == b""
            # Three requests in one write: answered in order.
            await client.send(b"".join(
                b"GET /p%d HTTP/1.1\r\nhost: test\r\n\r\n" % i for i in range(3)
            ))
            paths = [(await client.read_reply()).json()["path"] for _ in range(3)]
            assert paths == ["/p0", "/p1", "/p2"]
            assert up.connections == 1
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body)


def test_connection_close_and_http10() -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("GET", "/x", {"connection": "close"})
            assert reply.status == 200
            assert reply.header("connection") == "close"
            assert await client.closed_by_peer()
            # HTTP/1.0 without keep-alive: answered, then closed; chunked upstream
            # replies are delimited by the close instead.
            c10 = await RawHttp.connect(server.listener_addresses()[0])
            await c10.send(b"GET /chunked HTTP/1.0\r\nhost: test\r\n\r\n")
            data = await asyncio.wait_for(c10.reader.read(), 5)
            head, _, rest = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"transfer-encoding" not in head.lower()
            assert json.loads(rest)["path"] == "/chunked"
            await c10.close()
        finally:
            await server.close()
            await up.close()

    run(body)


def test_refused_upstream_is_502_counted_under_its_version() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        dead = f"127.0.0.1:{free_port()}"
        server = await start_mesh(mesh_config(
            {"baseline": [up.address], "canary": [dead]}, {"baseline": 50, "canary": 50}
        ))
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            seen: dict[str, list[int]] = {"baseline": [], "canary": []}
            for _ in range(40):
                reply = await client.request("GET", "/")
                seen[reply.header("x-canaryctl-version") or "?"].append(reply.status)
            assert seen["baseline"] == [200] * 20
            assert seen["canary"] == [502] * 20
            stats = {s.version: s for s in server.metrics.all_stats()}
            assert stats["canary"].by_class[5] == 20
            assert stats["canary"].by_class[2] == 0
            assert stats["baseline"].by_class[2] == 20
            assert stats["baseline"].by_class[5] == 0
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body)


def test_reset_upstream_is_502_and_timeout_is_504() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        config = mesh_config({"baseline": [up.address]}, {"baseline": 100})
        config["timeouts"] = {"upstream_read": 0.3}
        server = await start_mesh(config)
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("POST", "/reset", body=b"x")
            assert reply.status == 502
            assert reply.header("x-canaryctl-version") == "baseline"
            reply = await client.request("GET", "/slow?ms=2000")
            assert reply.status == 504
            # The connection survives both and keeps working.
            assert (await client.request("GET", "/fine")).status == 200
            stats = server.metrics.all_stats()[0]
            assert stats.by_class[5] == 2
            assert stats.by_class[2] == 1
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body)


def test_bad_requests_are_refused_and_closed() -> None:
    async def body() -> None:
        server, up = await _one_upstream()
        try:
            for raw in (
                # Request smuggling: both framings, or two different lengths.
                b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n"
                b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n"
                b"content-length: 5\r\n\r\nabcde",
                b"NOT HTTP\r\n\r\n",
            ):
                client = await RawHttp.connect(server.listener_addresses()[0])
                await client.send(raw)
                reply = await client.read_reply()
                assert reply.status == 400, raw
                assert await client.closed_by_peer()
                await client.close()
            client = await RawHttp.connect(server.listener_addresses()[0])
            many = "".join(f"x-h{i}: v\r\n" for i in range(200))
            await client.send(f"GET / HTTP/1.1\r\nhost: t\r\n{many}\r\n".encode())
            assert (await client.read_reply()).status == 431
            await client.close()
            assert up.requests == 0
        finally:
            await server.close()
            await up.close()

    run(body)


def test_unknown_route_is_404() -> None:
    async def body() -> None:
        server, up = await _one_upstream(hosts=["shop.example"])
        try:
            client = await RawHttp.connect(server.listener_addresses()[0])
            reply = await client.request("GET", "/", {})
            assert reply.status == 404
            await client.send(b"GET / HTTP/1.1\r\nhost: shop.example:8080\r\n\r\n")
            assert (await client.read_reply()).status == 200
            await client.close()
        finally:
            await server.close()
            await up.close()

    run(body)
