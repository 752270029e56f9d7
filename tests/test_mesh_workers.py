"""`--workers N`: several processes share the listeners, the admin API and /metrics
show one truth, a weight change is in force in every worker when the call returns, and
a worker that dies is replaced without counters going back."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile

import httpx

from mesh.client import MeshClient
from tests.mesh_upstream import TOKEN, MeshProcess, MeshUpstream, RawHttp, mesh_config
from tests.test_mesh_proxy import run


async def _clients(address: str, clients: int, each: int) -> dict[str, int]:
    seen: dict[str, int] = {}

    async def one() -> None:
        c = await RawHttp.connect(address)
        for _ in range(each):
            reply = await c.request("GET", "/w")
            assert reply.status == 200
            v = reply.header("x-canaryctl-version") or "?"
            seen[v] = seen.get(v, 0) + 1
        await c.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return seen


def _metric_totals(text: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for m in re.finditer(
        r'^canaryctl_mesh_requests_total\{service="web",version="(\w+)",code_class="2xx"\} '
        r"(\d+)$", text, re.M,
    ):
        totals[m.group(1)] = int(m.group(2))
    return totals


def test_two_workers_one_truth() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary").start()
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "access.log")
            config = mesh_config({"baseline": [base.address], "canary": [canary.address]},
                                 {"baseline": 90, "canary": 10})
            mesh = await MeshProcess.start(config, d, "--workers", "2", "--access-log", log)
            client = MeshClient(mesh.admin_url, TOKEN)
            http = httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"})
            try:
                assert mesh.ready["workers"] == 2 and len(mesh.ready["worker_pids"]) == 2
                seen = await _clients(mesh.address, 16, 100)
                assert sum(seen.values()) == 1600
                assert abs(seen.get("canary", 0) / 1600 - 0.10) <= 0.02
                # Both workers took connections: each wrote its own access log.
                async with asyncio.timeout(10):
                    while not all(os.path.exists(f"{log}.w{i}") and
                                  os.path.getsize(f"{log}.w{i}") for i in (0, 1)):
                        await asyncio.sleep(0.05)

                # /metrics and the stats API add up all workers, matching the upstreams.
                text = (await http.get(f"{mesh.admin_url}/metrics")).text
                assert _metric_totals(text) == {"baseline": base.requests,
                                                "canary": canary.requests}
                stats = await client.stats("web", 0.0, 4e9, step=4e9)
                assert stats["versions"]["baseline"]["requests"] == base.requests
                assert stats["versions"]["canary"]["requests"] == canary.requests

                # When the call returns, every worker routes by the new weights.
                for weights, only in (({"baseline": 0, "canary": 1}, "canary"),
                                      ({"baseline": 1, "canary": 0}, "baseline")):
                    await client.set_weights("web", weights)
                    assert await _clients(mesh.address, 8, 10) == {only: 80}
                # A whole new table, also in force in every worker when the call returns.
                routes = await client.routes()
                routes["listeners"][0]["services"][0]["versions"] = [
                    {"name": "green", "endpoints": [canary.address], "weight": 1}]
                await client.replace_routes(routes)
                assert await _clients(mesh.address, 8, 10) == {"green": 80}
                text = (await http.get(f"{mesh.admin_url}/metrics")).text
                assert _metric_totals(text)["green"] == 80
                health = (await http.get(f"{mesh.admin_url}/admin/v1/health")).json()
                assert health["workers"] == 2 and health["generation"] == 3
                assert health["connections"]["upstream_opened"] >= 2
            finally:
                await http.aclose()
                await client.aclose()
                assert await mesh.stop() == 0
                await base.close()
                await canary.close()

    run(body)


def test_a_killed_worker_is_replaced_and_counters_never_go_back() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        with tempfile.TemporaryDirectory() as d:
            config = mesh_config({"baseline": [base.address]}, {"baseline": 1})
            mesh = await MeshProcess.start(config, d, "--workers", "2")
            http = httpx.AsyncClient(headers={"authorization": f"Bearer {TOKEN}"})
            try:
                await _clients(mesh.address, 8, 20)
                before = _metric_totals((await http.get(f"{mesh.admin_url}/metrics")).text)
                assert before == {"baseline": 160}
                os.kill(mesh.ready["worker_pids"][0], signal.SIGKILL)
                async with asyncio.timeout(20):
                    while (await http.get(f"{mesh.admin_url}/admin/v1/health")).json() \
                            .get("worker_restarts", 0) < 1:
                        await asyncio.sleep(0.05)
                # The replacement serves and counts on top of what its region held.
                await _clients(mesh.address, 8, 20)
                after = _metric_totals((await http.get(f"{mesh.admin_url}/metrics")).text)
                assert after == {"baseline": 320}
                assert base.requests == 320
            finally:
                await http.aclose()
                assert await mesh.stop() == 0
                await base.close()
            assert b"exited (code -9); restarting" in mesh.stderr

    run(body)


def test_workers_refuse_a_port_another_process_shares_with_reuseport() -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as other:
        # Even a listener that allows SO_REUSEPORT sharing is not joined silently.
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mesh", "--listen", f"127.0.0.1:{port}",
             "--version", "baseline=127.0.0.1:1", "--workers", "2"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "error: cannot listen: Address already in use"
