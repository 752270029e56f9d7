"""The analyses and rollouts a server hosts: asyncio tasks over the store.

Every run is in the database before its task starts, and a task only ever writes its end
there; so the server can die at any point and the next one picks up every run that was
still RUNNING (analyses are redone from their stored request, rollouts resume in their
controller) and answers for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary.api.analysis_job import AnalysisBody, Job, build_job, run_job
from canary.api.run_store import RunKind, RunRecord, RunStatus, RunStore
from canary.input_error import InputError
from canary.store import RolloutRecord, Store

if TYPE_CHECKING:
    from canary.api.kayenta_fetch import KayentaFetchJob

log = logging.getLogger("canaryctl.api")

ROLLOUT_STATUS = {"Promoted": "SUCCEEDED", "RolledBack": "FAILED", "Aborted": "CANCELED"}


class Conflict(Exception):
    """The request clashes with a run in progress (HTTP 409)."""


@dataclass
class RolloutStatus:
    status: RunStatus
    progress: str
    record: RolloutRecord | None


Notifier = Callable[[str, str, str, Mapping[str, Any]], None]


class RunManager:
    def __init__(self, state_dir: Path, report_dir: Path | None = None,
                 clock: Callable[[], float] = time.time,
                 metrics_accounts: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.state_dir = state_dir
        # Kayenta's metrics accounts: provider settings by name (serve --providers).
        self.metrics_accounts = dict(metrics_accounts or {})
        self.report_dir = report_dir or state_dir / "reports"
        self.clock = clock
        self.runs = RunStore(state_dir)
        self.store = Store(state_dir)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._rollout_tasks: dict[str, asyncio.Task[None]] = {}
        self._rollout_errors: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Picks up what a previous server left running."""
        for rec in self.runs.running():
            try:
                job = self.job_of(rec)
            except InputError as exc:
                self.runs.finish(rec.id, "FAILED", f"cannot resume: {exc}", error=str(exc))
                continue
            self._spawn(rec.id, job)
        for rollout in self.store.list_rollouts():
            if not rollout.terminal and rollout.source.startswith("api:"):
                try:
                    await self._start_rollout(rollout.spec, rollout.source)
                except (InputError, Conflict) as exc:
                    self._rollout_errors[rollout.name] = f"cannot resume: {exc}"

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._rollout_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.runs.close()
        self.store.close()

    # -- analyses ---------------------------------------------------------------------

    def job_of(self, rec: RunRecord) -> Job | KayentaFetchJob:
        fetch = rec.request.get("kayentaFetch")
        if fetch is not None:
            return self._kayenta_job(fetch, f"analysis {rec.id}")
        body = AnalysisBody.model_validate(rec.request["body"])
        return build_job(body, f"analysis {rec.id}", rec.request["receivedAt"])

    def submit(self, kind: RunKind, body: AnalysisBody, extra: Mapping[str, Any] | None = None
               ) -> RunRecord:
        now = self.clock()
        job = build_job(body, "request", now)
        request = {"body": body.model_dump(mode="json", by_alias=True, exclude_none=True),
                   "receivedAt": now, **(extra or {})}
        rec = self.runs.create_run(kind, request, _waiting(job, now))
        self._spawn(rec.id, job)
        return rec

    def _kayenta_job(self, fetch: Mapping[str, Any], source: str) -> KayentaFetchJob:
        from canary.api.kayenta_fetch import build_kayenta_job, job_thresholds

        request = fetch["executionRequest"]
        return build_kayenta_job(fetch["canaryConfig"], request, fetch.get("metricsAccountName"),
                                 self.metrics_accounts, source, job_thresholds(request))

    def submit_kayenta_fetch(self, kind: RunKind, config: dict[str, Any],
                             execution_request: dict[str, Any], account: str | None,
                             extra: Mapping[str, Any]) -> RunRecord:
        """A Kayenta execution whose metrics the server fetches itself."""
        fetch = {"canaryConfig": config, "executionRequest": execution_request,
                 "metricsAccountName": account}
        job = self._kayenta_job(fetch, "request")
        # What status answers read of an analysis body: its name and thresholds.
        body = {"name": config.get("name"), "thresholds": {
            "pass": job.thresholds.pass_, "marginal": job.thresholds.marginal}}
        request = {"body": body, "kayentaFetch": fetch, "receivedAt": self.clock(), **extra}
        rec = self.runs.create_run(kind, request, f"fetching metrics from {job.account}")
        self._spawn(rec.id, job)
        return rec

    def _spawn(self, run_id: str, job: Job | KayentaFetchJob) -> None:
        task = asyncio.create_task(self._run(run_id, job), name=f"analysis-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    async def _run(self, run_id: str, job: Job | KayentaFetchJob) -> None:
        from canary.api.kayenta_fetch import KayentaFetchJob, run_kayenta_job

        try:
            if isinstance(job, KayentaFetchJob):
                outcome = await run_kayenta_job(job)
            else:
                outcome = await run_job(job, self.clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected provider failure: report it
            log.exception("analysis %s failed", run_id)
            self.runs.finish(run_id, "FAILED", f"error: {type(exc).__name__}: {exc}",
                             error=f"{type(exc).__name__}: {exc}")
            return
        rec = self.runs.get_run(run_id)
        if outcome.result is None:
            self.runs.finish(run_id, "FAILED", outcome.message, result=outcome.to_json(),
                             error=outcome.message)
            return
        verdict = outcome.result.verdict.value
        marginal = (rec.request["body"].get("marginalStatus", "FAILED")
                    if rec is not None else "FAILED")
        status: RunStatus = {"Pass": "SUCCEEDED", "Fail": "FAILED"}.get(
            verdict, marginal)  # type: ignore[assignment]
        progress = f"{verdict}: score {outcome.result.score:.1f}"
        if outcome.result.reason:
            progress += f" ({outcome.result.reason})"
        self.runs.finish(run_id, status, progress, verdict=verdict,
                         score=outcome.result.score, result=outcome.to_json())

    def cancel(self, run_id: str) -> RunRecord | None:
        rec = self.runs.get_run(run_id)
        if rec is None:
            return None
        if self.runs.finish(run_id, "CANCELED", "canceled by request"):
            task = self._tasks.get(run_id)
            if task is not None:
                task.cancel()
        return self.runs.get_run(run_id)

    async def wait(self, run_id: str, seconds: float) -> RunRecord | None:
        """The run, after waiting up to `seconds` for it to end."""
        task = self._tasks.get(run_id)
        if task is not None and seconds > 0:
            await asyncio.wait([task], timeout=seconds)
        return self.runs.get_run(run_id)

    # -- rollouts ---------------------------------------------------------------------

    async def start_rollout(self, data: Any, who: str) -> str:
        return await self._start_rollout(data, f"api:{who}")

    async def _start_rollout(self, data: Any, source: str) -> str:
        from canary.controller import Controller, spec_hash
        from canary.hooks import build_hooks
        from canary.rollout_lock import RolloutLock
        from canary.rollout_setup import make_judge, make_providers, mesh_token
        from canary.spec_loader import validate_rollout
        from canary.traffic_router import MeshRouter

        rollout = validate_rollout(data, "request")
        name = rollout.metadata.name
        if name in self._rollout_tasks:
            raise Conflict(f"rollout {name} is already running in this server")
        existing = self.store.get_rollout(name)
        resuming = existing is not None and not existing.terminal
        if resuming and existing is not None and existing.spec != data:
            raise Conflict(f"rollout {name} is in progress with another spec; abort it first")
        token = mesh_token(rollout.spec.mesh, "request")
        hooks = build_hooks(rollout, "request", checksum=spec_hash(rollout))
        providers = make_providers(rollout, "request", token)
        lock = RolloutLock(self.state_dir, name)
        if not lock.acquire():
            raise Conflict(f"rollout {name} is being run by another canaryctl process")
        router = MeshRouter(rollout.spec.mesh.admin, token, rollout.spec.service)
        controller = Controller(rollout, self.store, router, providers,
                                make_judge(rollout.spec.analysis), source=source, hooks=hooks)
        self._rollout_errors.pop(name, None)

        async def run() -> None:
            from canary.controller import OperationalError
            from canary.report_files import write_reports

            try:
                rec = await controller.run()
                paths = write_reports(self.store, rec, self.report_dir)
                if hooks is not None and rec.terminal:
                    await hooks.finished(rec.phase, rec.verdict, rec.message, paths)
            except OperationalError as exc:
                self._rollout_errors[name] = f"cannot finish the rollout: {exc}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("rollout %s failed", name)
                self._rollout_errors[name] = f"error: {type(exc).__name__}: {exc}"
            finally:
                lock.release()
                if hooks is not None:
                    await hooks.aclose()
                await router.aclose()
                for provider in providers.values():
                    await provider.aclose()

        task = asyncio.create_task(run(), name=f"rollout-{name}")
        self._rollout_tasks[name] = task
        task.add_done_callback(lambda _t: self._rollout_tasks.pop(name, None))
        # Let the controller write its record before the caller polls for it.
        await asyncio.sleep(0)
        return name

    def rollout_status(self, name: str) -> RolloutStatus | None:
        rec = self.store.get_rollout(name)
        error = self._rollout_errors.get(name)
        if rec is None:
            if name in self._rollout_tasks:
                return RolloutStatus("RUNNING", "starting", None)
            return None
        if rec.terminal:
            status: RunStatus = ROLLOUT_STATUS[rec.phase]  # type: ignore[assignment]
            return RolloutStatus(status, f"{rec.phase}: {rec.message}", rec)
        if error is not None and name not in self._rollout_tasks:
            # Nobody is driving it any more: say so rather than leave the caller polling.
            return RolloutStatus("FAILED", f"{rec.phase}: {error}", rec)
        plan_len = _plan_length(rec)
        events = self.store.events(name)
        last = events[-1].message if events else ""
        weight = rec.weights.get("canary", 0)
        return RolloutStatus(
            "RUNNING", f"{rec.phase}: step {min(rec.step_index + 1, plan_len)}/{plan_len}, "
            f"canary weight {weight}%" + (f": {last}" if last else ""), rec)

    def command(self, name: str, command: str) -> RolloutRecord | None:
        rec = self.store.get_rollout(name)
        if rec is None:
            return None
        if rec.terminal:
            raise Conflict(f"rollout {name} has ended ({rec.phase})")
        self.store.send_command(name, command)
        return rec


def _plan_length(rec: RolloutRecord) -> int:
    from canary.spec import Rollout

    try:
        return len(Rollout.model_validate(rec.spec).spec.plan())
    except Exception:
        return 0


def _waiting(job: Job, now: float) -> str:
    end = getattr(job, "end", None)
    if end is not None and end > now:
        return f"waiting for the analysis window to end in {end - now:.0f}s"
    return "judging"
