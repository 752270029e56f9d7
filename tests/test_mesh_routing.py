"""Routing decisions: the weighted schedule, match rules, sticky cookies, Host and
path matching, and Expect: 100-continue through a real proxy."""

from __future__ import annotations

from collections import Counter

import pytest

from mesh.config import MeshConfigError, ServiceConfig, complete_weights, config_from_flags
from mesh.routing import smooth_schedule
from tests.mesh_upstream import MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run


@pytest.mark.parametrize("weights", [[90, 10], [1, 99], [33, 33, 34], [0, 5], [999_999, 1]])
def test_schedule_is_exact_and_spread(weights: list[int]) -> None:
    order = smooth_schedule(weights)
    counts = Counter(order)
    total = sum(weights)
    for i, w in enumerate(weights):
        assert counts[i] / len(order) == pytest.approx(w / total, abs=1e-4)
    # Spread: in any window of 100 picks the share is within 2 points of the weight.
    cycle = order * 3
    for start in range(0, len(order), max(1, len(order) // 50)):
        window = cycle[start : start + 100]
        if len(order) >= 100:
            for i, w in enumerate(weights):
                assert abs(window.count(i) / 100 - w / total) <= 0.02


def test_weight_completion_and_validation() -> None:
    assert complete_weights(["baseline", "canary"], {"canary": 10}) == {
        "canary": 10, "baseline": 90}
    with pytest.raises(MeshConfigError, match="more than 100"):
        complete_weights(["baseline", "canary"], {"canary": 110})
    config = config_from_flags(listen="127.0.0.1:0", service="web",
                               versions=["baseline=127.0.0.1:1", "canary=127.0.0.1:2"],
                               weights=["canary=25"], admin=None)
    assert config.listeners[0].services[0].weights() == {"baseline": 75, "canary": 25}
    with pytest.raises(MeshConfigError, match=r"flags: .*endpoints"):
        config_from_flags(listen="127.0.0.1:0", service="web", versions=["baseline=nope"],
                          weights=[], admin=None)
    service = config.listeners[0].services[0]
    with pytest.raises(ValueError, match="positive weight"):
        service.with_weights({"baseline": 0, "canary": 0})
    assert isinstance(service.with_weights({"canary": 1}), ServiceConfig)


def test_match_rules_and_sticky_cookie() -> None:
    async def body() -> None:
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary").start()
        server = await start_mesh(mesh_config(
            {"baseline": [base.address], "canary": [canary.address]},
            {"baseline": 50, "canary": 50},
            match=[{"header": "x-tester", "value": "yes", "version": "canary"},
                   {"cookie": "beta", "value": "1", "version": "canary"}],
            sticky={"cookie": "cv"},
        ))
        address = server.listener_addresses()[0]
        try:
            c = await RawHttp.connect(address)
            for _ in range(10):
                reply = await c.request("GET", "/", {"X-Tester": "yes"})
                assert reply.header("x-canaryctl-version") == "canary"
                assert reply.header("set-cookie") is None
                reply = await c.request("GET", "/", {"cookie": "a=b; beta=1"})
                assert reply.header("x-canaryctl-version") == "canary"
            # New users get a cookie naming the version picked for them...
            users: dict[str, str] = {}
            for i in range(20):
                reply = await c.request("GET", "/")
                cookie = reply.header("set-cookie") or ""
                assert cookie.startswith("cv=")
                users[f"u{i}"] = cookie.split(";")[0]
                assert cookie.split(";")[0] == f"cv={reply.header('x-canaryctl-version')}"
            assert set(users.values()) == {"cv=baseline", "cv=canary"}
            # ...and keep it when the weights move; only a version taken out of
            # rotation loses its users.
            await _set(server, {"baseline": 99, "canary": 1})
            for cookie in users.values():
                reply = await c.request("GET", "/", {"cookie": cookie})
                assert f"cv={reply.header('x-canaryctl-version')}" == cookie
                assert reply.header("set-cookie") is None
            await _set(server, {"baseline": 100, "canary": 0})
            reply = await c.request("GET", "/", {"cookie": "cv=canary"})
            assert reply.header("x-canaryctl-version") == "baseline"
            await c.close()
        finally:
            await server.close()
            await base.close()
            await canary.close()

    run(body)


async def _set(server: object, weights: dict[str, int]) -> None:
    server.set_weights("web", weights)  # type: ignore[attr-defined]


def test_host_and_path_prefix_routing() -> None:
    async def body() -> None:
        a = await MeshUpstream("a").start()
        b = await MeshUpstream("b").start()
        c_up = await MeshUpstream("c").start()
        config = {
            "listeners": [{
                "address": "127.0.0.1:0",
                "services": [
                    {"name": "shop", "hosts": ["shop.example"],
                     "versions": [{"name": "v1", "endpoints": [a.address], "weight": 1}]},
                    {"name": "shop-api", "hosts": ["shop.example"], "path_prefix": "/api/",
                     "versions": [{"name": "v1", "endpoints": [b.address], "weight": 1}]},
                    {"name": "other", "versions": [
                        {"name": "v1", "endpoints": [c_up.address], "weight": 1}]},
                ],
            }],
        }
        server = await start_mesh(config)
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            for host, path, upstream in (
                ("shop.example", "/", "a"), ("SHOP.example:80", "/api/x", "b"),
                ("shop.example", "/apix", "a"), ("elsewhere", "/api/x", "c"),
            ):
                await c.send(f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
                reply = await c.read_reply()
                assert reply.header("x-upstream") == upstream, (host, path)
            await c.close()
        finally:
            await server.close()
            for u in (a, b, c_up):
                await u.close()

    run(body)


def test_expect_100_continue_is_relayed() -> None:
    async def body() -> None:
        up = await MeshUpstream("baseline").start()
        server = await start_mesh(mesh_config({"baseline": [up.address]}, {"baseline": 1}))
        try:
            c = await RawHttp.connect(server.listener_addresses()[0])
            await c.send(b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
                         b"expect: 100-continue\r\n\r\n")
            interim = await c.read_reply()
            assert interim.status == 100  # relayed from the upstream before any body
            await c.send(b"hello")
            reply = await c.read_reply()
            assert reply.status == 200
            assert reply.json()["body_bytes"] == 5
            await c.close()
        finally:
            await server.close()
            await up.close()

    run(body)
