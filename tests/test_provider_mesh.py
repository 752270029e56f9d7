"""The `mesh` provider against a real proxy on loopback."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Literal

import numpy as np
import pytest

from providers.mesh import MeshProvider
from providers.provider import MetricQuery, ProviderError, Window
from tests.mesh_upstream import TOKEN, MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run


def _query(kind: str, version: str, window: Window) -> MetricQuery:
    scope: Literal["baseline", "canary"] = "canary" if version == "canary" else "baseline"
    return MetricQuery(metric=kind, query=kind, scope=scope, service="web",
                       version=version, window=window)


def test_provider_returns_per_version_data() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary", delay=0.03, fail_every=4).start()
        server = await start_mesh(mesh_config(
            {"baseline": [base.address], "canary": [canary.address]},
            {"baseline": 50, "canary": 50},
        ))
        provider = MeshProvider(f"http://{server.admin_address()}", TOKEN)
        try:
            start = time.time()
            clients = [await RawHttp.connect(server.listener_addresses()[0]) for _ in range(4)]

            async def drive(c: RawHttp) -> None:
                for _ in range(50):
                    await c.request("GET", "/")

            await asyncio.gather(*(drive(c) for c in clients))
            for c in clients:
                await c.close()
            window = Window(start - 0.5, time.time() + 0.5, step=0.5)

            errors = await provider.fetch(_query("error_rate", "canary", window))
            assert errors.counts is not None
            assert errors.counts.trials == 100 == canary.requests
            assert errors.counts.events == 25
            assert errors.series is not None
            finite = errors.series.values[np.isfinite(errors.series.values)]
            assert finite.size >= 1 and np.all((finite > 0) & (finite < 1))

            base_errors = await provider.fetch(_query("error_rate", "baseline", window))
            assert base_errors.counts is not None
            assert (base_errors.counts.events, base_errors.counts.trials) == (0, 100)

            p99 = await provider.fetch(_query("latency_p99", "canary", window))
            assert p99.histogram is not None and p99.histogram.total == 100
            assert p99.series is not None
            values = p99.series.values[np.isfinite(p99.series.values)]
            assert np.all(values >= 0.03)  # every canary answer waited 30 ms
            base_p50 = await provider.fetch(_query("latency_p50", "baseline", window))
            assert base_p50.series is not None
            assert np.nanmax(base_p50.series.values) < 0.03

            mean = await provider.fetch(_query("latency_mean", "canary", window))
            assert mean.series is not None and mean.histogram is not None
            latency = await provider.fetch(_query("latency", "baseline", window))
            assert latency.histogram is not None and latency.histogram.total == 100

            rate = await provider.fetch(_query("request_rate", "baseline", window))
            assert rate.series is not None
            assert math.isclose(float(np.sum(rate.series.values)) * 0.5, 100)

            success = await provider.fetch(_query("success_rate", "canary", window))
            assert success.counts is not None and success.counts.events == 75
            assert await provider.is_online()
        finally:
            await provider.aclose()
            await server.close()
            await base.close()
            await canary.close()

    run(body)


def test_provider_errors_name_the_problem_not_the_token() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        server = await start_mesh(mesh_config({"baseline": [up.address]}, {"baseline": 100}))
        admin = f"http://{server.admin_address()}"
        window = Window(time.time() - 10, time.time())
        try:
            provider = MeshProvider(admin, TOKEN)
            with pytest.raises(ProviderError, match="unknown mesh query"):
                await provider.fetch(_query("p42", "baseline", window))
            with pytest.raises(ProviderError, match="no version 'canary'"):
                await provider.fetch(_query("error_rate", "canary", window))
            await provider.aclose()
            wrong = MeshProvider(admin, "wrong-token-secret")
            with pytest.raises(ProviderError, match="HTTP 401") as info:
                await wrong.fetch(_query("error_rate", "baseline", window))
            assert "wrong-token-secret" not in str(info.value)
            assert not await wrong.is_online()
            await wrong.aclose()
        finally:
            await server.close()
            await up.close()
        gone = MeshProvider(admin, TOKEN, timeout=1.0)
        with pytest.raises(ProviderError, match="mesh") as info:
            await gone.fetch(_query("error_rate", "baseline", window))
        assert info.value.retryable
        assert TOKEN not in str(info.value)
        await gone.aclose()

    run(body)
