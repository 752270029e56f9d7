"""The proxy under sustained load: weights moved 100 times while a load generator runs,
gigabyte-scale streaming without memory growth, and the real Prometheus scraping
/metrics."""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile

import pytest

from mesh.client import MeshClient
from tests.mesh_upstream import TOKEN, MeshProcess, MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run

STEPS = 100
PER_STEP = 300  # 30k requests: the split is checked per step, to 1 percentage point
CLIENTS = 3


def test_weights_moved_100_times_under_load_split_exact_and_nothing_fails() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary").start()
        server = await start_mesh(mesh_config(
            {"baseline": [base.address], "canary": [canary.address]},
            {"baseline": 100, "canary": 0}))
        client = MeshClient(f"http://{server.admin_address()}", TOKEN)
        address = server.listener_addresses()[0]
        rng = random.Random(4)
        targets = [0, 100] + [rng.randrange(0, 101) for _ in range(STEPS - 2)]
        # The step in force: -1 while a change is in flight. A request counts for step
        # k only if it was sent and answered while k was in force, so it was routed by
        # step k's weights; the others still have to succeed.
        phase = [-1]
        valid: list[dict[str, int]] = [{} for _ in range(STEPS)]
        done = [0] * STEPS
        statuses: dict[int, int] = {}
        errors: list[BaseException] = []
        stop = asyncio.Event()

        async def load() -> None:
            try:
                c = await RawHttp.connect(address)
                while not stop.is_set():
                    sent = phase[0]
                    reply = await c.request("GET", "/load")
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
                    if sent >= 0 and phase[0] == sent:
                        v = reply.header("x-canaryctl-version") or "?"
                        valid[sent][v] = valid[sent].get(v, 0) + 1
                        done[sent] += 1
                await c.close()
            except BaseException as exc:  # reported below, not lost in a task
                errors.append(exc)
                raise

        tasks = [asyncio.create_task(load()) for _ in range(CLIENTS)]
        try:
            for k, w in enumerate(targets):
                phase[0] = -1
                await client.set_weights("web", {"baseline": 100 - w, "canary": w})
                phase[0] = k
                async with asyncio.timeout(30):
                    while done[k] < PER_STEP and not errors:
                        await asyncio.sleep(0.001)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            await client.aclose()
            await server.close()
            await base.close()
            await canary.close()
        assert not errors
        total = sum(statuses.values())
        assert statuses == {200: total} and total >= STEPS * PER_STEP
        # Every request reached the version whose header came back.
        assert base.requests + canary.requests == total
        for k, w in enumerate(targets):
            n = sum(valid[k].values())
            share = valid[k].get("canary", 0) / n
            assert abs(share - w / 100) <= 0.01, (k, w, valid[k])

    run(body)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_streaming_hundreds_of_megabytes_both_ways_without_memory_growth() -> None:
    size = 256 * 1024 * 1024

    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        with tempfile.TemporaryDirectory() as d:
            mesh = await MeshProcess.start(
                mesh_config({"baseline": [up.address]}, {"baseline": 1}), d)
            pid = int(mesh.ready["pid"])
            peak = [0]
            sampling = asyncio.Event()

            async def sample() -> None:
                while not sampling.is_set():
                    peak[0] = max(peak[0], _rss(pid))
                    await asyncio.sleep(0.02)

            try:
                # Warm up (pool, parser, first allocations) before the baseline reading.
                c = await RawHttp.connect(mesh.address)
                assert (await c.request("GET", "/warm")).status == 200
                await c.close()
                start_rss = _rss(pid)
                sampler = asyncio.create_task(sample())

                host, port = mesh.address.rsplit(":", 1)
                reader, writer = await asyncio.open_connection(host, int(port))
                # Upload to an upstream that stops reading: the proxy must stop reading
                # us too, so what piles up is in our buffer, not in the proxy.
                writer.write(b"PUT /hold/upload HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n"
                             % size)
                piece = bytes(range(256)) * 1024
                digest = hashlib.sha256()
                sent = 0
                async with asyncio.timeout(30):
                    while writer.transport.get_write_buffer_size() < 8 * 1024 * 1024:
                        writer.write(piece)
                        digest.update(piece)
                        sent += len(piece)
                        await asyncio.sleep(0)  # let the loop flush what the kernel takes
                assert sent < size  # the proxy pushed back long before the end
                held_rss = _rss(pid) - start_rss
                assert held_rss < 48 * 1024 * 1024, held_rss
                up.release()
                while sent < size:
                    writer.write(piece)
                    digest.update(piece)
                    sent += len(piece)
                    await writer.drain()
                c = RawHttp(reader, writer)
                reply = await c.read_reply(timeout=120)
                assert reply.status == 200
                assert reply.json()["body_bytes"] == size
                assert reply.json()["body_sha256"] == digest.hexdigest()

                # Download to a client that stops reading: the upstream must be paused.
                writer.write(b"GET /stream?bytes=%d HTTP/1.1\r\nhost: t\r\n\r\n" % size)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert b"content-length: %d" % size in head.lower()
                async with asyncio.timeout(30):
                    while up.paused_writers() == 0:
                        await asyncio.sleep(0.01)
                held_rss = _rss(pid) - start_rss
                assert held_rss < 48 * 1024 * 1024, held_rss
                got = 0
                async with asyncio.timeout(120):
                    while got < size:
                        chunk = await reader.read(1 << 20)
                        assert chunk
                        got += len(chunk)
                assert got == size
                writer.close()
                sampling.set()
                await sampler
                # Flow control both ways: the proxy never holds more than socket buffers.
                assert peak[0] - start_rss < 48 * 1024 * 1024, (start_rss, peak[0])
            finally:
                sampling.set()
                assert await mesh.stop() == 0
                await up.close()

    run(body)


def test_real_prometheus_scrapes_metrics() -> None:
    from tests.prometheus_server import PrometheusUnavailable, start_prometheus

    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary", fail_every=5).start()
        with tempfile.TemporaryDirectory() as d:
            mesh = await MeshProcess.start(mesh_config(
                {"baseline": [base.address], "canary": [canary.address]},
                {"baseline": 75, "canary": 25}), d)
            admin = mesh.ready["admin"]
            try:
                c = await RawHttp.connect(mesh.address)
                for i in range(400):
                    await c.request("GET", f"/p/{i}")
                await c.close()
                try:
                    prom = await asyncio.to_thread(
                        start_prometheus, scrape_targets=[admin], scrape_interval="0.5s")
                except PrometheusUnavailable as exc:
                    pytest.fail(str(exc))
                try:
                    await asyncio.to_thread(prom.wait_for, 'up{job="test"} == 1')
                    result = await asyncio.to_thread(
                        prom.wait_for,
                        'sum by (version, code_class) (canaryctl_mesh_requests_total) > 0')
                    got = {(r["metric"]["version"], r["metric"]["code_class"]):
                           int(float(r["value"][1])) for r in result}
                    assert got == {("baseline", "2xx"): 300, ("canary", "2xx"): 80,
                                   ("canary", "5xx"): 20}
                    p99 = await asyncio.to_thread(
                        prom.wait_for,
                        "histogram_quantile(0.99, sum by (le) "
                        "(canaryctl_mesh_request_duration_seconds_bucket))")
                    assert 0 < float(p99[0]["value"][1]) < 1.0
                    count = await asyncio.to_thread(
                        prom.query, "sum(canaryctl_mesh_request_duration_seconds_count)")
                    assert int(float(count[0]["value"][1])) == 400
                finally:
                    await asyncio.to_thread(prom.stop)
            finally:
                assert await mesh.stop() == 0
                await base.close()
                await canary.close()

    run(body)
