"""Control of a running proxy: the whole routing table replaced over the admin API,
config reload on SIGHUP and on change (an invalid config is refused whole and the
running one kept), and the admin API on a unix socket."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from typing import Any

import httpx
import pytest
import yaml

from mesh.client import MeshClient, MeshClientError
from tests.mesh_upstream import TOKEN, MeshProcess, MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run


async def _versions_seen(address: str, n: int, path: str = "/") -> dict[str, int]:
    c = await RawHttp.connect(address)
    seen: dict[str, int] = {}
    for _ in range(n):
        reply = await c.request("GET", path)
        assert reply.status == 200
        v = reply.header("x-canaryctl-version") or "?"
        seen[v] = seen.get(v, 0) + 1
    await c.close()
    return seen


def test_put_routes_replaces_the_table_atomically_or_not_at_all() -> None:
    async def body() -> None:
        a = await MeshUpstream("a").start()
        b = await MeshUpstream("b").start()
        server = await start_mesh(mesh_config({"baseline": [a.address]}, {"baseline": 1}))
        client = MeshClient(f"http://{server.admin_address()}", TOKEN)
        address = server.listener_addresses()[0]
        try:
            routes = await client.routes()
            listener = routes["listeners"][0]
            service = listener["services"][0]
            # New versions, new endpoints, a second service by path: all in one call.
            service["versions"] = [
                {"name": "green", "endpoints": [a.address], "weight": 1},
                {"name": "blue", "endpoints": [b.address], "weight": 1},
            ]
            listener["services"].append({
                "name": "api", "path_prefix": "/api/",
                "versions": [{"name": "v2", "endpoints": [b.address], "weight": 1}],
            })
            answer = await client.replace_routes(routes)
            assert [s["name"] for s in answer["listeners"][0]["services"]] == ["web", "api"]
            assert await _versions_seen(address, 10) == {"green": 5, "blue": 5}
            assert await _versions_seen(address, 3, "/api/x") == {"v2": 3}

            before = await client.routes()
            bad = yaml.safe_load(yaml.safe_dump(before))
            bad["listeners"][0]["services"][0]["weights"] = None
            bad["listeners"][0]["services"][1]["versions"][0]["weight"] = -1  # invalid
            bad["listeners"][0]["services"][0]["versions"][0]["weight"] = 100  # valid
            with pytest.raises(MeshClientError, match=r"HTTP 400: body: listeners\.0\.services"):
                await client.replace_routes(bad)
            # Nothing of the refused table applied, not even its valid part.
            assert await client.routes() == before
            assert await _versions_seen(address, 10) == {"green": 5, "blue": 5}
            with pytest.raises(MeshClientError, match="HTTP 400"):
                await client.replace_routes({"listeners": []})
        finally:
            await client.aclose()
            await server.close()
            await a.close()
            await b.close()

    run(body)


def _write(path: str, config: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    os.replace(tmp, path)


def test_sighup_reload_and_fail_static() -> None:
    async def body() -> None:
        a = await MeshUpstream("a").start()
        b = await MeshUpstream("b").start()
        with tempfile.TemporaryDirectory() as d:
            config = mesh_config({"baseline": [a.address], "canary": [b.address]},
                                 {"baseline": 100, "canary": 0})
            mesh = await MeshProcess.start(config, d)
            path = os.path.join(d, "mesh.yaml")
            client = MeshClient(mesh.admin_url, TOKEN)
            try:
                assert await _versions_seen(mesh.address, 4) == {"baseline": 4}
                # The listener address in the file is the configured one (port 0).
                config["listeners"][0]["services"][0]["versions"][1]["weight"] = 100
                _write(path, config)
                mesh.proc.send_signal(signal.SIGHUP)
                async with asyncio.timeout(10):
                    while (await client.get_weights("web"))["canary"] != 100:
                        await asyncio.sleep(0.05)
                assert await _versions_seen(mesh.address, 4) == {"baseline": 2, "canary": 2}

                # An invalid file: refused whole, the running config kept.
                invalid = yaml.safe_load(yaml.safe_dump(config))
                invalid["listeners"][0]["services"][0]["versions"][0]["weight"] = 5
                invalid["listeners"][0]["services"][0]["match"] = [
                    {"header": "x-beta", "value": "1", "version": "nightly"}]
                _write(path, invalid)
                mesh.proc.send_signal(signal.SIGHUP)
                async with httpx.AsyncClient() as http:
                    async with asyncio.timeout(10):
                        while True:
                            health = (await http.get(
                                f"{mesh.admin_url}/admin/v1/health",
                                headers={"authorization": f"Bearer {TOKEN}"})).json()
                            if health["last_reload_error"]:
                                break
                            await asyncio.sleep(0.05)
                assert "mesh.yaml: listeners.0.services.0: match rule names unknown version" \
                    in health["last_reload_error"]
                assert await client.get_weights("web") == {"baseline": 100, "canary": 100}
                assert await _versions_seen(mesh.address, 4) == {"baseline": 2, "canary": 2}

                # A changed file is picked up without a signal too.
                config["listeners"][0]["services"][0]["versions"][0]["weight"] = 0
                _write(path, config)
                async with asyncio.timeout(10):
                    while (await client.get_weights("web"))["baseline"] != 0:
                        await asyncio.sleep(0.1)
                assert await _versions_seen(mesh.address, 4) == {"canary": 4}
            finally:
                await client.aclose()
                assert await mesh.stop() == 0
                await a.close()
                await b.close()
            assert b"reload rejected, running config kept" in mesh.stderr

    run(body)


def test_admin_on_a_unix_socket() -> None:
    async def body() -> None:
        a = await MeshUpstream("a").start()
        with tempfile.TemporaryDirectory() as d:
            sock = os.path.join(d, "admin.sock")
            config = mesh_config({"baseline": [a.address]}, {"baseline": 1})
            config["admin"] = {"address": f"unix:{sock}"}
            server = await start_mesh(config)
            try:
                assert server.admin_address() == f"unix:{sock}"
                assert os.stat(sock).st_mode & 0o077 == 0  # owner only
                async with MeshClient(f"unix:{sock}", TOKEN) as client:
                    assert await client.health()
                    assert await client.get_weights("web") == {"baseline": 1}
                async with MeshClient(f"unix:{sock}", "wrong") as client:
                    with pytest.raises(MeshClientError, match="HTTP 401"):
                        await client.get_weights("web")
            finally:
                await server.close()
                await a.close()

    run(body)
