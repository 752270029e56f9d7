"""Admin API, weights and metrics of a real proxy on loopback."""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

import httpx
import pytest

from mesh.client import MeshClient, MeshClientError
from mesh.metrics import BOUNDS, bucket_index, quantile
from tests.mesh_upstream import TOKEN, MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run


async def _two_versions(weights: dict[str, int]) -> tuple[Any, MeshUpstream, MeshUpstream]:
    base = await MeshUpstream("baseline").start()
    canary = await MeshUpstream("canary").start()
    server = await start_mesh(mesh_config(
        {"baseline": [base.address], "canary": [canary.address]}, weights
    ))
    return server, base, canary


async def _load(address: str, n: int, clients: int = 8, path: str = "/") -> dict[str, int]:
    """n requests over `clients` keep-alive connections; counts per version header and
    fails on any non-200."""
    counts: dict[str, int] = {}
    failures: list[str] = []

    async def one_client(k: int) -> None:
        c = await RawHttp.connect(address)
        for _ in range(k):
            reply = await c.request("GET", path)
            if reply.status != 200:
                failures.append(f"{reply.status}")
            v = reply.header("x-canaryctl-version") or "?"
            counts[v] = counts.get(v, 0) + 1
        await c.close()

    await asyncio.gather(*(one_client(n // clients) for _ in range(clients)))
    assert not failures, failures[:5]
    return counts


def test_split_tracks_weights_over_2000_requests() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 90, "canary": 10})
        try:
            counts = await _load(server.listener_addresses()[0], 2400)
            share = counts["canary"] / 2400
            assert abs(share - 0.10) <= 0.02, counts
            # The upstreams saw exactly what the headers said.
            assert canary.requests == counts["canary"]
            assert base.requests == counts["baseline"]
            # Reuse counted at the upstreams: at most one connection per client each.
            assert base.connections <= 8 and canary.connections <= 8
        finally:
            await server.close()
            await base.close()
            await canary.close()

    run(body)


def test_weights_changed_under_load_without_failures() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 100, "canary": 0})
        admin = f"http://{server.admin_address()}"
        client = MeshClient(admin, TOKEN)
        address = server.listener_addresses()[0]
        try:
            assert await client.get_weights("web") == {"baseline": 100, "canary": 0}
            steps = [0, 10, 25, 50, 75, 100, 50, 0]
            for w in steps:
                # Change the weights while requests are in flight, then measure the
                # split over a run that starts after the change.
                load = asyncio.create_task(_load(address, 400, clients=4))
                await asyncio.sleep(0.01)
                await client.set_weights("web", {"baseline": 100 - w, "canary": w})
                await load
                counts = await _load(address, 800, clients=4)
                share = counts.get("canary", 0) / 800
                assert abs(share - w / 100) <= 0.02, (w, counts)
            assert await client.get_weights("web") == {"baseline": 100, "canary": 0}
            # Connections were never dropped by a change: still one per client.
            assert base.connections <= 4 * 2 * len(steps)
        finally:
            await client.aclose()
            await server.close()
            await base.close()
            await canary.close()

    run(body)


def test_admin_requires_token_and_validates_weights() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 90, "canary": 10})
        admin = f"http://{server.admin_address()}"
        try:
            async with httpx.AsyncClient(base_url=admin) as http:
                for path in ("/admin/v1/health", "/admin/v1/routes",
                             "/admin/v1/stats?service=web"):
                    assert (await http.get(path)).status_code == 401
                    bad = await http.get(path, headers={"authorization": "Bearer nope"})
                    assert bad.status_code == 401
                r = await http.put("/admin/v1/services/web/weights", json={"canary": 100})
                assert r.status_code == 401
                auth = {"authorization": f"Bearer {TOKEN}"}
                routes = (await http.get("/admin/v1/routes", headers=auth)).json()
                service = routes["listeners"][0]["services"][0]
                assert service["weights"] == {"baseline": 90, "canary": 10}
                for body_json, status in (
                    ({"nightly": 5}, 400), ({"canary": -1}, 400), ({"canary": "x"}, 400),
                    ({"baseline": 0, "canary": 0}, 400),
                ):
                    r = await http.put("/admin/v1/services/web/weights", json=body_json,
                                       headers=auth)
                    assert r.status_code == status, (body_json, r.text)
                r = await http.put("/admin/v1/services/nope/weights", json={"a": 1},
                                   headers=auth)
                assert r.status_code == 404
            client = MeshClient(admin, TOKEN)
            assert await client.health()
            with pytest.raises(MeshClientError, match="HTTP 400") as info:
                await client.set_weights("web", {"nightly": 5})
            assert TOKEN not in str(info.value)
            await client.set_weights("web", {"canary": 30})  # baseline keeps 90
            assert await client.get_weights("web") == {"baseline": 90, "canary": 30}
            await client.aclose()
            wrong = MeshClient(admin, "wrong")
            assert not await wrong.health()
            await wrong.aclose()
        finally:
            await server.close()
            await base.close()
            await canary.close()
        # Unreachable proxy: a clear error, no token in it.
        gone = MeshClient(admin, TOKEN, timeout=1.0)
        with pytest.raises(MeshClientError, match="mesh admin") as info:
            await gone.set_weights("web", {"canary": 0})
        assert TOKEN not in str(info.value)
        await gone.aclose()

    run(body)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict little parser of the text format: every line a comment or a sample."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels_text = m.group(2) or ""
        labels = dict(_LABEL.findall(labels_text))
        assert ",".join(f'{k}="{v}"' for k, v in labels.items()) == labels_text, line
        value = float(m.group(3))
        family = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert family in types or m.group(1) in types, f"sample without TYPE: {line}"
        samples.setdefault(m.group(1), []).append((labels, value))
    return samples


def test_metrics_exposition_parses_and_counts() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 50, "canary": 50})
        try:
            address = server.listener_addresses()[0]
            c = await RawHttp.connect(address)
            for i in range(10):
                await c.request("GET", "/status/503" if i % 2 else "/")
            await c.close()
            async with httpx.AsyncClient() as http:
                r = await http.get(f"http://{server.admin_address()}/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = parse_prometheus(r.text)
            total = {
                (lab["version"], lab["code_class"]): v
                for lab, v in samples["canaryctl_mesh_requests_total"]
            }
            # Alternating paths and a 50/50 schedule: each version sees 5 of 10, and
            # whether those are the 503s depends on the schedule's phase.
            assert total[("baseline", "2xx")] + total[("baseline", "5xx")] == 5
            assert total[("canary", "2xx")] + total[("canary", "5xx")] == 5
            assert total[("baseline", "2xx")] + total[("canary", "2xx")] == 5
            for version in ("baseline", "canary"):
                buckets = [
                    (lab["le"], v)
                    for lab, v in samples["canaryctl_mesh_request_duration_seconds_bucket"]
                    if lab["version"] == version
                ]
                values = [v for _, v in buckets]
                assert values == sorted(values)  # cumulative
                assert buckets[-1] == ("+Inf", 5.0)
                assert [float(le) for le, _ in buckets[:-1]] == sorted(
                    float(le) for le, _ in buckets[:-1])
                count = [v for lab, v in samples["canaryctl_mesh_request_duration_seconds_count"]
                         if lab["version"] == version]
                assert count == [5.0]
        finally:
            await server.close()
            await base.close()
            await canary.close()

    run(body)


def test_histogram_quantiles_within_two_percent() -> None:
    import random

    rng = random.Random(7)
    values = [rng.lognormvariate(math.log(0.02), 0.8) for _ in range(20000)]
    hist: dict[int, int] = {}
    for v in values:
        i = bucket_index(v)
        assert (BOUNDS[i - 1] if i else 0) < v <= BOUNDS[i]
        hist[i] = hist.get(i, 0) + 1
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        exact = ordered[int(q * len(ordered)) - 1]
        estimate = quantile(hist, q)
        assert estimate is not None
        assert abs(estimate / exact - 1) < 0.02, (q, estimate, exact)


def test_stats_deltas_per_window() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 100, "canary": 0})
        client = MeshClient(f"http://{server.admin_address()}", TOKEN)
        address = server.listener_addresses()[0]
        try:
            t0 = time.time()
            await _load(address, 100, clients=2)
            server.metrics.tick()
            t1 = time.time()
            await asyncio.sleep(0.01)
            c = await RawHttp.connect(address)
            for _ in range(30):
                assert (await c.request("GET", "/status/500")).status == 500
            await c.close()
            t2 = time.time()
            first = await client.stats("web", t0, t1)
            assert first["service"] == "web"
            b = first["versions"]["baseline"]
            assert b["requests"] == 100
            assert b["by_class"] == {"1xx": 0, "2xx": 100, "3xx": 0, "4xx": 0, "5xx": 0}
            assert sum(b["latency"]["counts"]) == 100
            assert len(b["latency"]["counts"]) == len(b["latency"]["upper_bounds"])
            assert first["versions"]["canary"]["requests"] == 0
            second = await client.stats("web", t1, t2 + 1)
            b2 = second["versions"]["baseline"]
            assert b2["by_class"]["5xx"] == 30 and b2["requests"] == 30
            series = b2["series"]
            assert sum(series["requests"]) == 30
            assert sum(series["errors"]) == 30
            assert len(series["timestamps"]) == len(series["latency_p99"])
            whole = await client.stats("web", t0, t2 + 1, step=0.5)
            assert whole["versions"]["baseline"]["requests"] == 130
            assert sum(whole["versions"]["baseline"]["series"]["requests"]) == 130
        finally:
            await client.aclose()
            await server.close()
            await base.close()
            await canary.close()

    run(body)


def test_upstream_killed_under_load_fails_only_its_version() -> None:
    async def body() -> None:
        server, base, canary = await _two_versions({"baseline": 50, "canary": 50})
        address = server.listener_addresses()[0]
        seen: list[tuple[str, int]] = []

        async def client() -> None:
            c = await RawHttp.connect(address)
            for _ in range(150):
                reply = await c.request("GET", "/")
                seen.append((reply.header("x-canaryctl-version") or "?", reply.status))
                if len(seen) == 200:
                    await canary.close()  # listener and live connections gone
            await c.close()

        try:
            await asyncio.gather(*(client() for _ in range(4)))
            assert len(seen) == 600
            failed = [s for s in seen if s[1] != 200]
            assert failed and all(s == ("canary", 502) for s in failed)
            assert all(status == 200 for v, status in seen if v == "baseline")
            stats = {s.version: s for s in server.metrics.all_stats()}
            assert stats["canary"].by_class[5] == len(failed)
            assert stats["baseline"].by_class[5] == 0
            assert stats["baseline"].by_class[2] == sum(v == "baseline" for v, _ in seen)
        finally:
            await server.close()
            await base.close()

    run(body)
