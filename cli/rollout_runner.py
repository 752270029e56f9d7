"""Running one rollout from the command line: lock, controller, live view, reports, and the
exit code pipelines read."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from canary.controller import Controller, OperationalError, spec_hash
from canary.input_error import InputError
from canary.report_files import write_reports
from canary.rollout_lock import RolloutLock
from canary.rollout_setup import make_judge, make_providers, mesh_token
from canary.spec import Rollout
from canary.store import RolloutRecord, Store
from canary.traffic_router import MeshRouter
from cli import exit_codes
from cli.live_view import Watcher


@dataclass
class RunOptions:
    state_dir: Path
    report_dir: Path | None
    live: bool
    json_output: bool = False
    restart: bool = False
    # On Ctrl-C: ask whether to abort or leave the rollout to resume later; the demo,
    # whose world ends with the command, always aborts.
    on_interrupt: Literal["ask", "abort"] = "ask"


def ask_abort_or_leave() -> bool:
    """On a terminal, asks whether Ctrl-C means roll back now; False when not a terminal
    (a pipeline's cancel must not roll back on its own) or on a second Ctrl-C."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        answer = input("\ninterrupted: [a]bort and roll back now, or [l]eave the rollout "
                       "to resume later? [a/L] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("a", "abort")


def interrupt_choice_is_abort(store: Store, name: str,
                              ask: Callable[[], bool] = ask_abort_or_leave) -> bool:
    """After Ctrl-C: when the person chooses abort, writes the rollback decision the way
    the controller does (decision first), so the controller started next finishes it."""
    rec = store.get_rollout(name)
    if rec is None or rec.terminal or not ask():
        return False
    store.update_rollout(name, phase="RollingBack", verdict="Aborted",
                         message="aborted by user (Ctrl-C)",
                         weights={"baseline": 100, "canary": 0})
    store.add_event(name, "rollback", "rolling back: aborted by user (Ctrl-C)")
    return True


def exit_code_of(rec: RolloutRecord) -> int:
    return exit_codes.PROMOTED if rec.phase == "Promoted" else exit_codes.ROLLED_BACK


async def _run(rollout: Rollout, source: str, store: Store, opts: RunOptions) -> RolloutRecord:
    spec = rollout.spec
    existing = store.get_rollout(rollout.metadata.name)
    if (existing is not None and not existing.terminal and not opts.restart
            and existing.spec_hash != spec_hash(rollout)):
        raise InputError(source, "metadata.name",
                         f"rollout {rollout.metadata.name!r} is in progress with a different "
                         f"spec (from {existing.source or 'another file'}); abort it first or "
                         "pass --restart")
    if existing is not None and opts.restart and not existing.terminal:
        store.update_rollout(existing.name, phase="Aborted", message="replaced by --restart")
    token = mesh_token(spec.mesh, source)
    providers = make_providers(rollout, source, token)
    judge = make_judge(spec.analysis)
    from canary.hooks import build_hooks, expected_report_paths

    hooks = build_hooks(rollout, source, checksum=spec_hash(rollout))
    router = MeshRouter(spec.mesh.admin, token, spec.service)
    watcher = Watcher(store, rollout.metadata.name, opts.live,
                      out=sys.stderr if opts.json_output else sys.stdout)
    controller = Controller(rollout, store, router, providers, judge, source=source,
                            on_change=watcher.refresh, hooks=hooks)
    watcher.start()
    try:
        rec = await controller.run()
        if hooks is not None and rec.terminal:
            # The reports are written as soon as this returns, at these paths.
            await hooks.finished(rec.phase, rec.verdict, rec.message, expected_report_paths(
                opts.report_dir or opts.state_dir / "reports", rec.name))
        return rec
    finally:
        watcher.stop()
        if hooks is not None:
            await hooks.aclose()
        await router.aclose()
        for provider in providers.values():
            await provider.aclose()


MakeRollout = Callable[[AsyncExitStack], Awaitable[Rollout]]


async def _execute(source: str, opts: RunOptions, make: MakeRollout
                   ) -> tuple[RolloutRecord, dict[str, Path]]:
    async with AsyncExitStack() as stack:
        # SIGTERM (a cancelled CI job, `kill`) and SIGHUP (a closed terminal) end the run
        # the way Ctrl-C does, so whatever `make` started is stopped and nothing leaks.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, task.cancel)
                stack.callback(loop.remove_signal_handler, sig)
        rollout = await make(stack)
        store = Store(opts.state_dir)
        stack.callback(store.close)
        stack.enter_context(RolloutLock(opts.state_dir, rollout.metadata.name))
        try:
            rec = await _run(rollout, source, store, opts)
        except asyncio.CancelledError:
            # Ctrl-C: asyncio.run cancelled us. Ask here, while what `make` started (the
            # demo's proxy) still runs, so an abort can still move the traffic back.
            ask = (lambda: True) if opts.on_interrupt == "abort" else ask_abort_or_leave
            if not interrupt_choice_is_abort(store, rollout.metadata.name, ask):
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            # Finish the abort just written, never start over (the demo runs with restart).
            rec = await _run(rollout, source, store, replace(opts, restart=False))
        report_dir = opts.report_dir or opts.state_dir / "reports"
        return rec, write_reports(store, rec, report_dir)
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: AsyncExitStack may swallow)


def execute(source: str, opts: RunOptions, make: MakeRollout) -> int:
    """Run (or resume) a rollout to its end; returns the exit code pipelines read.

    `make` builds the Rollout inside the run's exit stack, so whatever it starts (the
    demo's processes) is stopped when the run ends, however it ends."""
    try:
        rec, paths = asyncio.run(_execute(source, opts, make))
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        return exit_codes.INVALID_INPUT
    except OperationalError as exc:
        print(f"{source}: cannot finish the rollout: {exc}", file=sys.stderr)
        return exit_codes.OPERATIONAL
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: the rollout stays where it is; `canaryctl resume NAME` "
              "continues it, `canaryctl abort NAME` rolls it back", file=sys.stderr)
        return 130
    summary = {"name": rec.name, "phase": rec.phase, "verdict": rec.verdict,
               "reason": rec.message, "reports": {k: str(v) for k, v in paths.items()}}
    if opts.json_output:
        print(json.dumps(summary))
    else:
        print(f"{rec.name}: {rec.phase}: {rec.message}")
        for fmt, path in paths.items():
            print(f"report ({fmt}): {path}")
    return exit_code_of(rec)


def loaded(rollout: Rollout) -> MakeRollout:
    async def make(stack: AsyncExitStack) -> Rollout:
        return rollout

    return make


def state_dir_option(value: Path | None) -> Path:
    if value is not None:
        return value
    env = os.environ.get("CANARYCTL_STATE_DIR")
    if env:
        return Path(env)
    from canary.store import default_state_dir

    return default_state_dir()
