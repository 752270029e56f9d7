"""mTLS between proxies with identities from the mesh's own CA: a proxy calls another
over TLS with its service certificate; the callee checks the caller's identity, the
caller checks the callee's; anything else is refused."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mesh.config import MeshConfigError, parse_config
from mesh.identity import identity_uri, init_ca, issue
from mesh.server import MeshServer
from tests.mesh_upstream import TOKEN, MeshUpstream, RawHttp, mesh_config, start_mesh
from tests.test_mesh_proxy import run


def _tls(d: Path, identity: str, **extra: object) -> dict[str, Any]:
    return {"cert": str(d / f"{identity}.crt"), "key": str(d / f"{identity}.key"),
            "ca": str(d / "ca.crt"), **extra}


def test_proxy_to_proxy_mtls_checks_identities_both_ways(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    init_ca(ca)
    for service in ("web", "frontend", "intruder"):
        issue(ca, service)
    other = tmp_path / "other-ca"
    init_ca(other)
    issue(other, "frontend")  # right name, wrong CA

    async def body() -> None:
        up = await MeshUpstream("app").start()
        inner_config = mesh_config({"baseline": [up.address]}, {"baseline": 1})
        inner_config["listeners"][0]["tls"] = _tls(ca, "web", client_services=["frontend"])
        inner = await start_mesh(inner_config)
        inner_address = inner.listener_addresses()[0]

        def calling(name: str, tls: dict[str, Any]) -> dict[str, Any]:
            return {"name": name, "path_prefix": f"/{name}/", "versions": [
                {"name": "baseline", "endpoints": [inner_address], "weight": 1, "tls": tls}]}

        outer_config = {
            "listeners": [{"address": "127.0.0.1:0", "services": [
                calling("ok", _tls(ca, "frontend", service="web")),
                calling("intruder", _tls(ca, "intruder", service="web")),
                calling("wrong-ca", _tls(other, "frontend", service="web")
                        | {"ca": str(ca / "ca.crt")}),
                calling("impostor", _tls(ca, "frontend", service="payments")),
            ]}],
        }
        outer = await start_mesh(outer_config)
        try:
            c = await RawHttp.connect(outer.listener_addresses()[0])
            for i in range(5):
                reply = await c.request("GET", f"/ok/{i}")
                assert reply.status == 200
                assert reply.header("x-upstream") == "app"
                headers = reply.json()["headers"]
                # Both proxies on the way; the client's own protocol is kept.
                assert [v for n, v in headers if n == "via"] == ["1.1 canaryctl"] * 2
                assert dict(headers)["x-forwarded-proto"] == "http"
            assert up.connections == 1  # one pooled TLS connection carried all five
            # Not let in: an identity the callee does not allow, a certificate from
            # another CA; and the caller refuses a callee that is not who it expected.
            for path in ("/intruder/x", "/wrong-ca/x", "/impostor/x"):
                reply = await c.request("GET", path)
                assert reply.status == 502, path
            await c.close()
            # The intruder got through the handshake (its certificate is the mesh's) and
            # was turned away by identity, twice: the caller retries a request that got
            # no answer once. The others failed in the handshake itself.
            assert inner.state.tls_refused == 2
            assert up.requests == 5

            # A plain client, or a TLS client without a certificate, never gets in.
            host, port = inner_address.rsplit(":", 1)
            plain = await RawHttp.connect(inner_address)
            await plain.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            assert await plain.closed_by_peer()
            anonymous = ssl.create_default_context(cafile=str(ca / "ca.crt"))
            anonymous.check_hostname = False
            with pytest.raises((ssl.SSLError, ConnectionError)):
                reader, writer = await asyncio.open_connection(host, int(port), ssl=anonymous)
                writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
                await writer.drain()
                if not await reader.read(1):
                    raise ConnectionError("closed")
            assert up.requests == 5
        finally:
            await outer.close()
            await inner.close()
            await up.close()

    run(body)


def test_unreadable_certificates_are_refused_with_the_config(tmp_path: Path) -> None:
    config = mesh_config({"baseline": ["127.0.0.1:1"]}, {"baseline": 1})
    config["listeners"][0]["services"][0]["versions"][0]["tls"] = {
        "cert": str(tmp_path / "missing.crt"), "key": str(tmp_path / "missing.key"),
        "ca": str(tmp_path / "ca.crt"), "service": "web"}
    with pytest.raises(MeshConfigError, match=(
            r"^mesh.yaml: listeners\.0\.services\.0\.versions\.0\.tls: cannot load "
            r"certificate, key or CA: No such file")):
        MeshServer(parse_config(config, "mesh.yaml"), TOKEN, config_path="mesh.yaml")


def test_ca_commands(tmp_path: Path) -> None:
    from cryptography import x509

    from cli.main import _register, app

    if not any(c.name == "analyze" for c in app.registered_commands):
        _register()
    runner = CliRunner()
    d = tmp_path / "ca"
    result = runner.invoke(app, ["mesh", "ca", "init", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    assert (d / "ca.key").stat().st_mode & 0o077 == 0
    result = runner.invoke(app, ["mesh", "ca", "issue", "checkout", "--dir", str(d),
                                 "--out", str(tmp_path / "ids")])
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate((tmp_path / "ids" / "checkout.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        identity_uri("checkout")]
    assert san.get_values_for_type(x509.DNSName) == ["checkout"]
    # Again without --force: refused, nothing replaced.
    result = runner.invoke(app, ["mesh", "ca", "init", "--dir", str(d)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["mesh", "ca", "issue", "bad name", "--dir", str(d)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["mesh", "ca", "issue", "x", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 2
