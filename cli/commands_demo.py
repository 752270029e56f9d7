"""`canaryctl demo`: a real rollout on loopback, a bad (or good) canary, the live view and
a report, with nothing to set up."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli.commands_rollout import Format, NoLive, ReportDir, StateDir, _check_format

Scenario = Literal["bad", "good"]
JudgeName = Literal["sequential", "mann-whitney"]


def demo(
    scenario: Annotated[str, typer.Option(help="bad: a regressed canary that must be rolled "
                                          "back (exit 1); good: a healthy one (exit 0).")] = "bad",
    judge: Annotated[str, typer.Option(help="sequential or mann-whitney.")] = "sequential",
    interval: Annotated[float, typer.Option(help="Seconds per step.", min=1.0)] = 8.0,
    rate: Annotated[float, typer.Option(help="Requests per second of the load generator.",
                                        min=10.0)] = 300.0,
    state_dir: StateDir = None,
    report_dir: ReportDir = None,
    no_live: NoLive = False,
    fmt: Format = "text",
) -> None:
    """Start two versions of a demo service, the mesh proxy and a load generator on
    loopback, and roll the canary out through the real proxy."""
    from canary.demo_env import DemoEnvironment
    from canary.spec import Rollout
    from canary.spec_loader import validate_rollout
    from cli.commands_rollout import _fail
    from cli.rollout_runner import RunOptions, execute, state_dir_option

    as_json = _check_format(fmt)
    if scenario not in ("bad", "good"):
        raise _fail(f"--scenario: expected bad or good, got {scenario!r}")
    if judge not in ("sequential", "mann-whitney"):
        raise _fail(f"--judge: expected sequential or mann-whitney, got {judge!r}")
    directory = state_dir_option(state_dir)

    async def make(stack: AsyncExitStack) -> Rollout:
        # Long enough for every step plus start-up; the load generator stops on its own.
        env = DemoEnvironment(scenario=scenario,  # type: ignore[arg-type]
                              rate=rate, duration=interval * 8 + 30)
        await stack.enter_async_context(env)
        return validate_rollout(env.rollout_document(judge, interval), "demo")

    live = not no_live and sys.stdout.isatty() and not as_json
    opts = RunOptions(directory, report_dir or Path(directory) / "reports", live, as_json,
                      restart=True, on_interrupt="abort")
    raise typer.Exit(execute("demo", opts, make))


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    app.command()(demo)
