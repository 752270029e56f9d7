"""`canaryctl serve`: the HTTP API for pipelines (Spinnaker, Argo Rollouts, Flagger,
Kayenta clients)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import exit_codes


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free).")] = 8470,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="File holding the bearer token [default: $CANARYCTL_API_TOKEN].")
    ] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Where the state database lives.")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report-dir", help="Where rollout reports go [default: STATE_DIR/reports].")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    kayenta_without_auth: Annotated[bool, typer.Option(
        "--kayenta-without-auth",
        help="Serve the Kayenta endpoints without the token (Argo Rollouts' kayenta "
             "provider cannot send one).")] = False,
    flagger_without_auth: Annotated[bool, typer.Option(
        "--flagger-without-auth",
        help="Serve POST /api/v1/flagger/{hook} without the token (Flagger's webhooks "
             "cannot send one); gate changes still need it.")] = False,
    providers_file: Annotated[Path | None, typer.Option(
        "--providers",
        help="YAML mapping of metrics account names to provider settings (as under a "
             "rollout spec's providers:); Kayenta requests pick one with metricsAccountName "
             "and canaryctl fetches their metrics.")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json)."""
    from canary.api.metrics_accounts import load_metrics_accounts
    from canary.input_error import InputError
    from cli.rollout_runner import state_dir_option

    try:
        from canary.api.auth import load_token

        token = load_token(token_file)
        if (tls_cert is None) != (tls_key is None):
            raise InputError("--tls-cert" if tls_cert is None else "--tls-key", "",
                             "give both --tls-cert and --tls-key, or neither")
        for path in (tls_cert, tls_key):
            if path is not None and not path.is_file():
                raise InputError(str(path), "", "cannot read file")
        if not 0 <= port < 65536:
            raise InputError("--port", "", f"expected a port between 0 and 65535, got {port}")
        metrics_accounts = (load_metrics_accounts(providers_file)
                            if providers_file is not None else {})
    except InputError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None

    import uvicorn

    from canary.api import create_app

    app = create_app(state_dir_option(state_dir), token, report_dir=report_dir,
                     kayenta_without_auth=kayenta_without_auth,
                     flagger_without_auth=flagger_without_auth,
                     metrics_accounts=metrics_accounts)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    server = uvicorn.Server(config)
    # Tests and scripts start with --port 0 and read the bound port from this line.
    original_startup = server.startup

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets)  # type: ignore[arg-type]
        for s in server.servers:
            for sock in s.sockets:
                name = sock.getsockname()
                typer.echo(f"canaryctl serve: listening on "
                           f"{'https' if tls_cert else 'http'}://{name[0]}:{name[1]}", err=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()
