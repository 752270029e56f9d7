"""Data-plane features beyond plain proxying, through real sockets: WebSocket upgrade,
mirroring, retries to another endpoint, passive ejection, least-requests, the request
body timeout and the access log."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from typing import Any

from tests.mesh_upstream import MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import free_port, run


def _stats(server: Any) -> dict[str, Any]:
    return {s.version: s for s in server.metrics.all_stats()}


def test_websocket_upgrade_is_tunnelled_both_ways() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        server = await start_mesh(mesh_config({"baseline": [up.address]}, {"baseline": 1}))
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            await c.send(b"GET /ws HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\n"
                         b"upgrade: websocket\r\nsec-websocket-version: 13\r\n\r\n")
            reply = await c.read_reply(head=True)
            assert reply.status == 101
            assert reply.header("upgrade") == "websocket"
            assert reply.header("x-canaryctl-version") == "baseline"
            for message in (b"hello", b"\x81\x05world", b"x" * 100_000):
                c.writer.write(message)
                await c.writer.drain()
                expected = len(message) + 5  # the upstream echoes with "echo:" per read
                got = b""
                async with asyncio.timeout(10):
                    while not got.endswith(message[-10:]) or len(got) < expected:
                        chunk = await c.reader.read(65536)
                        assert chunk, "tunnel closed"
                        got += chunk
                assert got.startswith(b"echo:") and got.replace(b"echo:", b"") == message
            # The upstream closing the tunnel closes the client's connection.
            for conn in list(__import__("tests.mesh_upstream").mesh_upstream._Conn.live[up]):
                conn.transport.close()
            assert await c.closed_by_peer()
            assert _stats(server)["baseline"].by_class[1] == 1  # counted as 1xx
        finally:
            await server.close()
            await up.close()

    run(body)


def test_upgrade_refused_by_upstream_is_an_ordinary_response() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        server = await start_mesh(mesh_config({"baseline": [up.address]}, {"baseline": 1}))
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            # No `Connection: upgrade`: not an upgrade request, answered as usual.
            reply = await c.request("GET", "/status/200", {"upgrade": "websocket"})
            assert reply.status == 200
            await c.close()
        finally:
            await server.close()
            await up.close()

    run(body)


class _BlackHole:
    """Accepts connections and never answers: a mirror that would hang whoever waits."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received = 0

    async def start(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            while data := await reader.read(65536):
                self.received += len(data)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


def test_mirror_copies_a_share_and_its_answers_are_dropped() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        shadow = await MeshUpstream("shadow").start()
        config = mesh_config(
            {"baseline": [base.address], "shadow": [shadow.address]},
            {"baseline": 100, "shadow": 0}, mirror={"version": "shadow", "percent": 25},
        )
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            for i in range(40):
                reply = await c.request("POST", f"/m/{i}", body=b"payload-%d" % i)
                assert reply.status == 200
                assert reply.header("x-upstream") == "baseline"
            await c.close()
            async with asyncio.timeout(5):
                while shadow.requests < 10:
                    await asyncio.sleep(0.01)
            assert base.requests == 40
            assert shadow.requests == 10  # exactly 25%, evenly spread
            seen = [s for s in shadow.seen if s["method"] == "POST"]
            assert all(int(str(s["body_bytes"])) >= len(b"payload-0") for s in seen)
            stats = _stats(server)
            assert stats["mirror:shadow"].by_class[2] == 10
            assert stats["shadow"].count == 0  # the judge's numbers stay the real traffic
        finally:
            await server.close()
            await base.close()
            await shadow.close()

    run(body)


def test_a_mirror_that_never_answers_does_not_hold_the_primary() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        hole = _BlackHole()
        hole_address = await hole.start()
        config = mesh_config(
            {"baseline": [base.address], "shadow": [hole_address]},
            {"baseline": 1, "shadow": 0}, mirror={"version": "shadow", "percent": 100},
        )
        config["timeouts"] = {"upstream_read": 0.3}
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            # Bounded: were the primary waiting for the mirror, this would never finish.
            async with asyncio.timeout(10):
                for i in range(30):
                    assert (await c.request("GET", f"/p/{i}")).status == 200
            await c.close()
            assert base.requests == 30
            assert hole.accepted >= 1 and hole.received > 0
            # Unanswered copies time out like any upstream request: 504, slot freed.
            mirror = _stats(server)["mirror:shadow"]
            async with asyncio.timeout(10):
                while mirror.by_class[5] < 30:
                    await asyncio.sleep(0.05)
            assert mirror.by_class[5] == 30 and mirror.count == 30
            assert server.state.mirrors_in_flight == 0
            assert _stats(server)["baseline"].by_class[2] == 30
        finally:
            await server.close()
            await base.close()
            hole.server.close()

    run(body)


def test_connect_failure_retried_on_another_endpoint_then_ejected() -> None:
    async def body() -> None:
        live = await MeshUpstream("live").start()
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
        config = mesh_config({"baseline": [dead, live.address]}, {"baseline": 1},
                             outlier={"consecutive_failures": 2, "eject_seconds": 60})
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            for i in range(10):
                # POST too: a refused connection means nothing reached any upstream.
                method = "POST" if i % 2 else "GET"
                reply = await c.request(method, f"/r/{i}", body=b"b" if i % 2 else b"")
                assert reply.status == 200, (i, reply.status)
            await c.close()
            assert live.requests == 10
            stats = _stats(server)
            assert stats["baseline"].by_class[2] == 10 and stats["baseline"].by_class[5] == 0
            state = server.state
            # Two refusals ejected the dead endpoint; no connect attempt after that.
            assert state.connect_failures == 2
            assert state.retries == 2
            assert state.ejections == 1
        finally:
            await server.close()
            await live.close()

    run(body)


def test_endpoint_failing_with_5xx_is_ejected_passively() -> None:
    async def body() -> None:
        good = await MeshUpstream("good").start()
        bad = await MeshUpstream("bad", fail_every=1).start()
        config = mesh_config(
            {"baseline": [bad.address, good.address]}, {"baseline": 1},
            outlier={"consecutive_failures": 3, "eject_seconds": 60, "on_5xx": True},
        )
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            statuses = [(await c.request("GET", f"/e/{i}")).status for i in range(40)]
            await c.close()
            # Round robin alternates until the third 500 in a row ejects `bad`.
            assert statuses.count(500) == 3
            assert bad.requests == 3 and good.requests == 37
            assert server.state.ejections == 1
        finally:
            await server.close()
            await good.close()
            await bad.close()

    run(body)


def test_no_more_than_max_ejected_percent_is_ejected() -> None:
    async def body() -> None:
        bad1 = await MeshUpstream("bad1", fail_every=1).start()
        bad2 = await MeshUpstream("bad2", fail_every=1).start()
        config = mesh_config(
            {"baseline": [bad1.address, bad2.address]}, {"baseline": 1},
            outlier={"consecutive_failures": 1, "eject_seconds": 60, "on_5xx": True,
                     "max_ejected_percent": 50},
        )
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            for i in range(10):
                assert (await c.request("GET", f"/e/{i}")).status == 500
            await c.close()
            assert server.state.ejections == 1  # the second stays: a version keeps one
            assert bad1.requests + bad2.requests == 10
        finally:
            await server.close()
            await bad1.close()
            await bad2.close()

    run(body)


def test_least_requests_prefers_the_endpoint_with_fewer_in_flight() -> None:
    async def body() -> None:
        slow = await MeshUpstream("slow", delay=0.05).start()
        fast = await MeshUpstream("fast").start()

        async def client(address: str, n: int) -> None:
            c = await RawHttp.connect(address)
            for i in range(n):
                assert (await c.request("GET", f"/l/{i}")).status == 200
            await c.close()

        shares = {}
        for balance in ("round_robin", "least_requests"):
            slow.requests = fast.requests = 0
            config = mesh_config({"baseline": [slow.address, fast.address]}, {"baseline": 1},
                                 balance=balance)
            server = await start_mesh(config)
            try:
                address = server.listener_addresses()[0]
                await asyncio.gather(*(client(address, 25) for _ in range(4)))
            finally:
                await server.close()
            shares[balance] = fast.requests / (fast.requests + slow.requests)
        await slow.close()
        await fast.close()
        assert abs(shares["round_robin"] - 0.5) <= 0.05
        assert shares["least_requests"] >= 0.7, shares

    run(body)


def test_request_body_that_stops_coming_gets_408() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        config = mesh_config({"baseline": [up.address]}, {"baseline": 1})
        config["timeouts"] = {"client_body": 0.3}
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            await c.send(b"POST /slow-upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
                         b"only-some")
            reply = await c.read_reply()
            assert reply.status == 408
            assert await c.closed_by_peer()
            assert _stats(server)["baseline"].by_class[4] == 1
            # A body that keeps coming, slowly but within the deadline each time, is fine.
            c = await RawHttp.connect(server.listener_addresses()[0])
            await c.send(b"POST /trickle HTTP/1.1\r\nhost: t\r\ncontent-length: 6\r\n\r\n")
            for piece in (b"ab", b"cd", b"ef"):
                await asyncio.sleep(0.15)
                await c.send(piece)
            reply = await c.read_reply()
            assert reply.status == 200 and reply.json()["body_bytes"] == 6
            await c.close()
        finally:
            await server.close()
            await up.close()

    run(body)


def test_access_log_json_lines_with_rotation() -> None:
    async def body() -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "access.log")
            up = await MeshUpstream("baseline").start()
            config = mesh_config({"baseline": [up.address]}, {"baseline": 1})
            config["access_log"] = {"path": path, "max_bytes": 8192, "backups": 50}
            server = await start_mesh(config)
            try:
                c = await RawHttp.connect(server.listener_addresses()[0])
                reply = await c.request("POST", "/given", {"x-request-id": "abc-123"},
                                        body=b"12345")
                assert reply.status == 200
                assert ("x-request-id", "abc-123") in [tuple(h) for h in reply.json()["headers"]]
                reply = await c.request("GET", "/generated")
                generated = dict(reply.json()["headers"])["x-request-id"]
                for i in range(200):
                    await c.request("GET", f"/status/{404 if i % 10 == 0 else 200}")
                await c.close()
                lines: list[dict[str, Any]] = []
                async with asyncio.timeout(5):
                    while len(lines) < 202:
                        await asyncio.sleep(0.05)
                        lines = []
                        for name in sorted(os.listdir(d)):
                            with open(os.path.join(d, name), encoding="utf-8") as f:
                                lines += [json.loads(line) for line in f]
                assert len(lines) == 202
                assert len(os.listdir(d)) > 1  # rotated
                first = next(x for x in lines if x["path"] == "/given")
                assert first["request_id"] == "abc-123"
                assert first["service"] == "web" and first["version"] == "baseline"
                assert first["status"] == 200 and first["bytes_in"] == 5
                assert first["bytes_out"] > 0 and 0 < first["latency"] < 10
                assert first["method"] == "POST" and first["time"] > 1.6e9
                assert any(x["request_id"] == generated for x in lines)
                assert sum(x["status"] == 404 for x in lines) == 20
            finally:
                await server.close()
                await up.close()

    run(body)


def test_observe_puts_every_latency_in_the_bucket_bucket_index_names() -> None:
    from mesh.metrics import BOUNDS, VersionStats, bucket_index

    values = [0.0, 1e-6, BOUNDS[0], BOUNDS[0] * 1.0001, 0.00123, 0.5, BOUNDS[-2], BOUNDS[-1],
              61.0, 1e4, *BOUNDS[::37]] + [b * 1.000001 for b in BOUNDS[::41]]
    for v in values:
        stats = VersionStats("s", "v")
        stats.observe(200, v)
        assert stats.buckets.index(1) == bucket_index(v), v
        i = bucket_index(v)
        assert v <= BOUNDS[i] or i == len(BOUNDS) - 1
        assert i == 0 or v > BOUNDS[i - 1]
