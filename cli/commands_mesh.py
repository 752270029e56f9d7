"""`canaryctl mesh proxy | set-weight | status`: run the built-in proxy and steer it
through its admin API."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Any

import typer

from cli import exit_codes

_TOKEN_HELP = "File holding the admin bearer token [default: $CANARYCTL_MESH_TOKEN]."


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    mesh_app.command("proxy")(proxy)
    mesh_app.command("set-weight")(set_weight)
    mesh_app.command("status")(status)
    ca_app = typer.Typer(help="The mesh's own CA: per-service identities for mTLS.",
                         no_args_is_help=True)
    ca_app.command("init")(ca_init)
    ca_app.command("issue")(ca_issue)
    mesh_app.add_typer(ca_app, name="ca")


def ca_init(
    directory: Annotated[str, typer.Option("--dir", help="Where ca.crt and ca.key go.")],
    name: Annotated[str, typer.Option(help="The CA's common name.")] = "canaryctl mesh CA",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 3650,
    force: Annotated[bool, typer.Option(help="Replace an existing CA.")] = False,
) -> None:
    """Create the mesh CA (ECDSA P-256; the key is written owner-only)."""
    from mesh.identity import IdentityError, init_ca

    if days < 1:
        raise _fail(f"--days: expected a positive integer, got {days}", exit_codes.INVALID_INPUT)
    try:
        cert, key = init_ca(directory, name=name, days=days, force=force)
    except (IdentityError, OSError) as exc:
        raise _fail(str(exc), exit_codes.INVALID_INPUT) from None
    print(f"{cert}\n{key}")


def ca_issue(
    service: Annotated[str, typer.Argument(help="Service name: the identity to issue.")],
    directory: Annotated[str, typer.Option("--dir", help="The CA's directory.")],
    out: Annotated[str | None, typer.Option(
        help="Where SERVICE.crt and SERVICE.key go [default: the CA's directory].")] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 90,
) -> None:
    """Issue SERVICE's certificate (URI SAN spiffe://canaryctl.mesh/service/SERVICE and
    DNS SAN SERVICE), signed by the mesh CA, for server and client use."""
    import re

    from mesh.identity import IdentityError, issue

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", service):
        raise _fail(f"SERVICE: expected a service name ([A-Za-z0-9_.-], up to 63), got "
                    f"{service!r}", exit_codes.INVALID_INPUT)
    if days < 1:
        raise _fail(f"--days: expected a positive integer, got {days}", exit_codes.INVALID_INPUT)
    try:
        cert, key = issue(directory, service, out=out, days=days)
    except (IdentityError, OSError) as exc:
        raise _fail(str(exc), exit_codes.INVALID_INPUT) from None
    print(f"{cert}\n{key}")


def _fail(message: str, code: int) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def proxy(
    config: Annotated[str | None, typer.Option(
        "--config", help="Routing table (YAML); replaces the flags below.")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve (port 0: any free).")]
    = "127.0.0.1:8080",
    service: Annotated[str, typer.Option(help="Service name.")] = "app",
    version: Annotated[list[str] | None, typer.Option(
        "--version", help="NAME=HOST:PORT of a version's endpoint; repeatable.")] = None,
    weight: Annotated[list[str] | None, typer.Option(
        "--weight", help="NAME=N; with two versions the other gets the rest of 100.")] = None,
    admin: Annotated[str | None, typer.Option(
        help="HOST:PORT of the admin API (keep it on loopback).")] = None,
    admin_token_file: Annotated[str | None, typer.Option(help=_TOKEN_HELP)] = None,
    workers: Annotated[int, typer.Option(
        help="Processes sharing the listeners (SO_REUSEPORT); one admin API and metrics.")]
    = 1,
    access_log: Annotated[str | None, typer.Option(
        help="Write a JSON-lines access log to this file (rotated).")] = None,
) -> None:
    """Run the proxy. Prints one JSON line with the bound addresses when ready, then
    serves until SIGTERM or Ctrl-C."""
    from mesh.config import MeshConfigError, config_from_flags, load_config, with_access_log
    from mesh.runner import run
    from mesh.server import MeshError, read_token

    try:
        if config is not None:
            mesh_config = load_config(config)
        else:
            if not version:
                raise MeshConfigError("--version: at least one NAME=HOST:PORT (or --config)")
            mesh_config = config_from_flags(
                listen=listen, service=service, versions=version, weights=weight or [],
                admin=admin,
            )
        if workers < 1:
            raise MeshConfigError(f"--workers: expected a positive integer, got {workers}")
        if access_log is not None:
            mesh_config = with_access_log(mesh_config, access_log)
        token_file = admin_token_file or (
            mesh_config.admin.token_file if mesh_config.admin else None
        )
        run(mesh_config, read_token(token_file), workers=workers, config_path=config)
    except (MeshConfigError, MeshError) as exc:
        raise _fail(str(exc), exit_codes.INVALID_INPUT) from None
    except KeyboardInterrupt:
        pass


def _token(token_file: str | None) -> str:
    from mesh.server import TOKEN_ENV, MeshError, read_token

    try:
        token = read_token(token_file)
    except MeshError as exc:
        raise _fail(str(exc), exit_codes.INVALID_INPUT) from None
    if not token:
        raise _fail(f"--token-file: no admin token given (or set {TOKEN_ENV})",
                    exit_codes.INVALID_INPUT)
    return token


def set_weight(
    service: Annotated[str, typer.Argument(help="Service name.")],
    weights: Annotated[list[str], typer.Argument(
        help="VERSION=N ...; with one version left out it gets the rest of 100.")],
    admin: Annotated[str, typer.Option(help="Admin API URL.")] = "http://127.0.0.1:9901",
    token_file: Annotated[str | None, typer.Option(help=_TOKEN_HELP)] = None,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Set a service's weights; they apply to the proxy's next request."""
    from mesh.client import MeshClient, MeshClientError
    from mesh.config import MeshConfigError, complete_weights, parse_weights

    token = _token(token_file)
    try:
        given = parse_weights(weights, "WEIGHTS")
    except MeshConfigError as exc:
        raise _fail(str(exc), exit_codes.INVALID_INPUT) from None

    async def go() -> dict[str, int]:
        async with MeshClient(admin, token) as client:
            current = await client.get_weights(service)
            await client.set_weights(service, complete_weights(list(current), given))
            return await client.get_weights(service)

    try:
        applied = asyncio.run(go())
    except MeshConfigError as exc:
        raise _fail(f"WEIGHTS: {exc}", exit_codes.INVALID_INPUT) from None
    except MeshClientError as exc:
        code = exit_codes.INVALID_INPUT if "HTTP 4" in str(exc) else exit_codes.OPERATIONAL
        raise _fail(str(exc), code) from None
    if output_format == "json":
        print(json.dumps({"service": service, "weights": applied}))
    else:
        print(f"{service}: " + " ".join(f"{k}={v}" for k, v in applied.items()))


def status(
    admin: Annotated[str, typer.Option(help="Admin API URL.")] = "http://127.0.0.1:9901",
    token_file: Annotated[str | None, typer.Option(help=_TOKEN_HELP)] = None,
    window: Annotated[float, typer.Option(help="Seconds of traffic to summarise.")] = 60.0,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Show a proxy's services, weights and recent traffic per version."""
    from mesh.client import MeshClient, MeshClientError

    token = _token(token_file)

    async def go() -> dict[str, Any]:
        async with MeshClient(admin, token) as client:
            routes = await client.routes()
            end = time.time()
            traffic = {}
            for listener in routes["listeners"]:
                for svc in listener["services"]:
                    traffic[svc["name"]] = await client.stats(
                        svc["name"], end - window, end, step=window)
            return {"routes": routes, "traffic": traffic}

    try:
        result = asyncio.run(go())
    except MeshClientError as exc:
        raise _fail(str(exc), exit_codes.OPERATIONAL) from None
    if output_format == "json":
        print(json.dumps(result))
        return
    for listener in result["routes"]["listeners"]:
        print(f"listener {listener['address']}")
        for svc in listener["services"]:
            print(f"  service {svc['name']} (prefix {svc['path_prefix']})")
            versions = result["traffic"][svc["name"]]["versions"]
            for name, w in svc["weights"].items():
                v = versions.get(name, {"requests": 0, "by_class": {"5xx": 0}})
                n = v["requests"]
                errors = v["by_class"]["5xx"]
                rate = f"{errors / n:.2%}" if n else "-"
                print(f"    {name:<12} weight {w:>4}  {n:>8} req/{window:g}s  5xx {rate}")
