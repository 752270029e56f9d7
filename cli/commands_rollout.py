"""Commands that run and steer rollouts: validate, run, resume, status, get, pause,
promote, abort, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import exit_codes

if TYPE_CHECKING:
    from canary.store import RolloutRecord, Store

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the SQLite state lives (env CANARYCTL_STATE_DIR).",
                 show_default="the user's state directory"),
]
ReportDir = Annotated[
    Path | None,
    typer.Option("--report-dir", help="Where reports are written.",
                 show_default="STATE_DIR/reports"),
]
NoLive = Annotated[bool, typer.Option("--no-live", help="Plain lines instead of the live view.")]
Format = Annotated[str, typer.Option("--format", help="text or json.")]


def _fail(message: str, code: int = exit_codes.INVALID_INPUT) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(code)


def _check_format(fmt: str) -> bool:
    if fmt not in ("text", "json"):
        raise _fail(f"--format: expected text or json, got {fmt!r}")
    return fmt == "json"


def validate(spec: Annotated[Path, typer.Argument(help="Rollout spec (YAML).")],
             fmt: Format = "text") -> None:
    """Check a rollout spec; exit 0 when valid, 2 with one line per problem otherwise."""
    from canary.input_error import InputError, InputErrors
    from canary.spec_loader import load_rollout

    as_json = _check_format(fmt)
    try:
        rollout = load_rollout(spec)
    except InputErrors as exc:
        if as_json:
            print(json.dumps({"valid": False, "errors": [str(e) for e in exc.errors]}))
        raise _fail(str(exc)) from None
    except InputError as exc:
        if as_json:
            print(json.dumps({"valid": False, "errors": [str(exc)]}))
        raise _fail(str(exc)) from None
    plan = rollout.spec.plan()
    if as_json:
        print(json.dumps({"valid": True, "name": rollout.metadata.name, "steps": len(plan)}))
    else:
        print(f"{spec}: valid: rollout {rollout.metadata.name!r} of {rollout.spec.service}, "
              f"{len(plan)} steps, judge {rollout.spec.analysis.judge}")


def run(
    spec: Annotated[Path, typer.Argument(help="Rollout spec (YAML).")],
    state_dir: StateDir = None,
    report_dir: ReportDir = None,
    no_live: NoLive = False,
    fmt: Format = "text",
    restart: Annotated[bool, typer.Option(help="Start over even if a run of this rollout "
                                          "with another spec is in progress.")] = False,
) -> None:
    """Run a rollout to its end: exit 0 promoted, 1 rolled back, 2 bad input, 3 operational.

    Run again on the same spec after a crash and it resumes where it stopped."""
    from canary.input_error import InputError, InputErrors
    from canary.spec_loader import load_rollout
    from cli.rollout_runner import RunOptions, execute, loaded, state_dir_option

    as_json = _check_format(fmt)
    try:
        rollout = load_rollout(spec)
    except (InputError, InputErrors) as exc:
        raise _fail(str(exc)) from None
    live = not no_live and sys.stdout.isatty() and not as_json
    opts = RunOptions(state_dir_option(state_dir), report_dir, live, as_json, restart)
    raise typer.Exit(execute(str(spec), opts, loaded(rollout)))


def _store(state_dir: Path | None) -> Store:
    from canary.store import Store
    from cli.rollout_runner import state_dir_option

    return Store(state_dir_option(state_dir))


def _record(store: Store, name: str) -> RolloutRecord:
    rec = store.get_rollout(name)
    if rec is None:
        raise _fail(f"rollout {name!r}: not found in {store.path}")
    return rec


def resume(
    name: Annotated[str, typer.Argument(help="Rollout name.")],
    state_dir: StateDir = None,
    report_dir: ReportDir = None,
    no_live: NoLive = False,
    fmt: Format = "text",
) -> None:
    """Resume a paused rollout, or continue one whose controller stopped (crash, Ctrl-C)."""
    from canary.rollout_lock import RolloutLock
    from canary.spec import Rollout
    from cli.rollout_runner import RunOptions, execute, loaded, state_dir_option

    as_json = _check_format(fmt)
    store = _store(state_dir)
    rec = _record(store, name)
    if rec.terminal:
        raise _fail(f"rollout {name!r} already ended: {rec.phase}", exit_codes.INVALID_INPUT)
    directory = state_dir_option(state_dir)
    lock = RolloutLock(directory, name)
    if lock.acquire():
        lock.release()
    else:
        # A controller is running it: ask that one to resume.
        store.send_command(name, "resume")
        print(f"{name}: resume sent to the running controller")
        return
    store.close()
    rollout = Rollout.model_validate(rec.spec)
    live = not no_live and sys.stdout.isatty() and not as_json
    raise typer.Exit(execute(rec.source or name, RunOptions(directory, report_dir, live, as_json),
                             loaded(rollout)))


def _command(name: str, command: str, state_dir: Path | None) -> None:
    store = _store(state_dir)
    rec = _record(store, name)
    if rec.terminal:
        raise _fail(f"rollout {name!r} already ended: {rec.phase}")
    store.send_command(name, command)
    print(f"{name}: {command} sent")


def pause(name: Annotated[str, typer.Argument()], state_dir: StateDir = None) -> None:
    """Pause a running rollout at its current weight."""
    _command(name, "pause", state_dir)


def promote(name: Annotated[str, typer.Argument()], state_dir: StateDir = None) -> None:
    """Promote a running rollout now: all traffic to the canary."""
    _command(name, "promote", state_dir)


def abort(name: Annotated[str, typer.Argument()], state_dir: StateDir = None) -> None:
    """Abort a running rollout: all traffic back to the baseline."""
    _command(name, "abort", state_dir)


def status(state_dir: StateDir = None, fmt: Format = "text") -> None:
    """List rollouts with their phase, step and weights."""
    from rich.console import Console
    from rich.table import Table

    as_json = _check_format(fmt)
    store = _store(state_dir)
    records = store.list_rollouts()
    if as_json:
        print(json.dumps([{"name": r.name, "phase": r.phase, "step": r.step_index,
                           "weights": r.weights, "verdict": r.verdict, "message": r.message}
                          for r in records]))
        return
    table = Table("name", "phase", "step", "canary", "verdict", "message")
    for r in records:
        table.add_row(r.name, r.phase, str(r.step_index + 1), f"{r.weights.get('canary', 0)}%",
                      r.verdict or "", r.message[:60])
    Console().print(table)


def get(
    name: Annotated[str, typer.Argument()],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow until it ends.")] = False,
    state_dir: StateDir = None,
    no_live: NoLive = False,
    fmt: Format = "text",
) -> None:
    """Show one rollout; with --watch, follow it live until it ends."""
    from cli.live_view import watch_until_done
    from cli.rollout_runner import exit_code_of

    as_json = _check_format(fmt)
    store = _store(state_dir)
    rec = _record(store, name)
    if watch:
        rec = watch_until_done(store, name, live=not no_live and sys.stdout.isatty())
        raise typer.Exit(exit_code_of(rec) if rec.terminal else 0)
    if as_json:
        print(json.dumps({"name": rec.name, "phase": rec.phase, "step": rec.step_index,
                          "weights": rec.weights, "verdict": rec.verdict,
                          "message": rec.message, "counters": rec.counters}))
    else:
        print(f"{rec.name}: {rec.phase}, step {rec.step_index + 1}, weights {rec.weights}, "
              f"{rec.message}")


def report(
    name: Annotated[str, typer.Argument(help="Rollout name.")],
    state_dir: StateDir = None,
    fmt: Annotated[str, typer.Option("--format", help="html, md or json.")] = "md",
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Write here instead of stdout.")] = None,
) -> None:
    """Print or write a rollout's report (HTML with charts, Markdown, or JSON)."""
    from canary.report_files import REPORT_FORMATS, build_report, render_report

    if fmt not in REPORT_FORMATS:
        raise _fail(f"--format: expected one of {', '.join(REPORT_FORMATS)}, got {fmt!r}")
    store = _store(state_dir)
    rec = _record(store, name)
    text = render_report(build_report(store, rec), fmt)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{output}: -o: expected a writable file path ({exc.strerror})") from None
    print(f"report ({fmt}): {output}")


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    for fn in (validate, run, resume, status, get, pause, promote, abort, report):
        app.command()(fn)
