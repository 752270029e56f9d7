"""Entry point of `canaryctl`. Each command lives in its own module and registers itself
here; heavy imports (scipy, the controller) happen inside the commands so `--help` is fast."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="canaryctl",
    help="Canary analysis and progressive delivery with a built-in proxy mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
mesh_app = typer.Typer(help="The built-in proxy mesh.", no_args_is_help=True)
app.add_typer(mesh_app, name="mesh")


def _register() -> None:
    # One line per command module; each defines register(app, mesh_app).
    from cli import (
        commands_analyze,
        commands_demo,
        commands_logs,
        commands_mesh,
        commands_rollout,
        commands_serve,
    )

    for module in (commands_analyze, commands_rollout, commands_demo, commands_mesh,
                   commands_serve, commands_logs):
        module.register(app, mesh_app)


def main() -> None:
    _register()
    try:
        app()
    except Exception as exc:
        # An unexpected crash must not exit 1, which pipelines read as "rolled back":
        # it is an operational failure (3). The traceback is for CANARYCTL_DEBUG=1.
        import os
        import sys
        import traceback

        from cli.exit_codes import OPERATIONAL

        if os.environ.get("CANARYCTL_DEBUG"):
            traceback.print_exc()
        print(f"canaryctl: internal error: {type(exc).__name__}: {exc} "
              "(set CANARYCTL_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(OPERATIONAL)


if __name__ == "__main__":
    main()
