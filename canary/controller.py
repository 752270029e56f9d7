"""The step state machine of one rollout.

Every decision is written to the store before it is acted on, so a controller killed at
any point and started again resumes where it stopped, and a rollback that was decided is
finished by whoever runs next: traffic never stays on a canary that failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analysis.judge import Decision, Judge
from analysis.metric_data import Scope
from canary.hooks import RolloutHooks
from canary.look import LookResult, take_look
from canary.spec import Rollout, Step
from canary.store import RolloutRecord, Store
from canary.traffic_router import RouterError, TrafficRouter
from providers.provider import MetricProvider, Window

# How often a waiting controller checks for commands from other processes.
COMMAND_POLL_SECONDS = 0.2
# How long a rollback or promotion keeps retrying an unreachable router before the
# controller gives up with an operational error (the decision stays in the store and the
# next run finishes it).
ROUTER_RETRY_SECONDS = 30.0


class OperationalError(Exception):
    """The rollout could not finish for an operational reason (exit code 3)."""


def spec_hash(rollout: Rollout) -> str:
    # Defaults are left out so that a canaryctl upgrade that adds a defaulted field does
    # not make a rollout in progress look like a different spec.
    canonical = json.dumps(rollout.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                           sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Counters:
    """Argo Rollouts' measurement counters, kept in the store."""

    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_errors: int = 0

    @staticmethod
    def of(d: Mapping[str, int]) -> Counters:
        return Counters(**{k: int(v) for k, v in d.items() if k in Counters.__dataclass_fields__})

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Controller:
    def __init__(
        self,
        rollout: Rollout,
        store: Store,
        router: TrafficRouter,
        providers: Mapping[str, MetricProvider],
        judge: Judge,
        *,
        source: str = "",
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], Awaitable[None] | None] | None = None,
        hooks: RolloutHooks | None = None,
    ) -> None:
        self.rollout = rollout
        self.name = rollout.metadata.name
        self.spec = rollout.spec
        self.plan: list[Step] = rollout.spec.plan()
        self.store = store
        self.router = router
        self.providers = providers
        self.judge = judge
        self.source = source
        self.clock = clock
        self.on_change = on_change
        self.hooks = hooks
        self.hash = spec_hash(rollout)
        # What `{{version}}` means in provider queries: the spec's version labels.
        self.versions: dict[Scope, str] = {
            "baseline": rollout.spec.baseline.version or "baseline",
            "canary": rollout.spec.canary.version or "canary",
        }
        analysis_steps = [i for i, s in enumerate(self.plan) if s.analysis is not None]
        self.last_analysis_step = analysis_steps[-1] if analysis_steps else -1

    # -- entry point ------------------------------------------------------------------

    async def run(self) -> RolloutRecord:
        rec = self.store.get_rollout(self.name)
        if rec is None or rec.terminal:
            self.store.create_rollout(
                self.name, self.rollout.model_dump(mode="json", by_alias=True), self.hash,
                self.source,
            )
            self._event("started", f"rollout of {self.spec.service} started "
                        f"({len(self.plan)} steps, judge {self.spec.analysis.judge})")
        else:
            self._event("resumed", f"resumed at step {rec.step_index + 1}/{len(self.plan)} "
                        f"in phase {rec.phase}")
        rec = self._rec()
        if rec.phase == "RollingBack":
            return await self._finish_rollback(rec.verdict == "Aborted")
        if rec.phase == "Promoting":
            return await self._finish_promotion()
        if rec.weights:
            # The weights last decided may not have reached the proxy before a crash.
            await self._apply_weights(rec.weights["baseline"], rec.weights["canary"], retry=True)
        if rec.phase == "Initializing":
            outcome = await self._before_first_weight()
            if outcome is not None:
                return outcome
            self.store.update_rollout(self.name, phase="Progressing", analysis_start=self.clock())
        return await self._steps()

    # -- the step loop ----------------------------------------------------------------

    async def _steps(self) -> RolloutRecord:
        while True:
            rec = self._rec()
            if rec.step_index >= len(self.plan):
                return await self._promote("all steps completed")
            step = self.plan[rec.step_index]
            if step.set_weight is not None:
                outcome = await self._set_weight_step(rec, step.set_weight)
            elif step.pause is not None:
                outcome = await self._pause_step(rec, step.pause.duration)
            else:
                assert step.analysis is not None
                duration = step.analysis.duration or self.spec.analysis.interval
                outcome = await self._analysis_step(rec, duration)
            if outcome is not None:
                return outcome

    async def _set_weight_step(self, rec: RolloutRecord, weight: int) -> RolloutRecord | None:
        if weight > rec.weights.get("canary", 0):
            outcome = await self._confirm("confirm-traffic-increase",
                                          f"raise the canary weight to {weight}%")
            if outcome is not None:
                return outcome
        self.store.update_rollout(self.name, weights={"baseline": 100 - weight, "canary": weight})
        self._event("weight", f"step {rec.step_index + 1}/{len(self.plan)}: "
                    f"canary weight {weight}%", canary=weight)
        try:
            await self._apply_weights(100 - weight, weight, retry=True)
        except OperationalError as exc:
            return await self._rollback(f"could not set canary weight: {exc}")
        self._advance(rec)
        return None

    async def _pause_step(self, rec: RolloutRecord, duration: float | None) -> RolloutRecord | None:
        if duration is None:
            self.store.update_rollout(self.name, phase="Paused")
            self._event("paused", "paused until `canaryctl resume` or `promote`")
            return await self._wait_paused(rec)
        if rec.window_start is None:
            self.store.update_rollout(self.name, window_start=self.clock())
        outcome = await self._wait_until(self._rec().window_start or self.clock(), duration)
        if outcome is not None:
            return outcome
        self._advance(rec)
        return None

    async def _analysis_step(self, rec: RolloutRecord, duration: float) -> RolloutRecord | None:
        start = rec.window_start
        if start is None:
            start = self.clock()
            self.store.update_rollout(self.name, window_start=start)
        outcome = await self._wait_until(start, duration)
        if outcome is not None:
            return outcome
        rec = self._rec()
        end = self.clock()
        if self.hooks is not None:
            outcome = await self._rollback_if_requested()
            if outcome is not None:
                return outcome
            failed_gate = await self.hooks.gate("rollout", rec.phase)
            if failed_gate is not None:
                return await self._failed_check(rec, failed_gate, start, end)
        window_from = (rec.analysis_start or start) if self.judge.cumulative else start
        look = await take_look(
            self.spec.analysis, self.providers, self.judge, self.spec.service,
            Window(window_from, max(end, window_from + 1e-3), step=_series_step(end - window_from)),
            rec.judge_state or None, final=rec.step_index == self.last_analysis_step,
            versions=self.versions,
        )
        return await self._decide(rec, look, start, end)

    async def _decide(
        self, rec: RolloutRecord, look: LookResult, start: float, end: float
    ) -> RolloutRecord | None:
        analysis = self.spec.analysis
        counters = Counters.of(rec.counters)
        weight = rec.weights.get("canary", 0)
        outcome = look.outcome
        self.store.add_measurement(
            self.name, step_index=rec.step_index, weight=weight, phase=look.phase,
            decision=look.decision.value if look.decision else "error",
            score=outcome.result.score if outcome else None,
            verdict=outcome.result.verdict.value if outcome else None,
            message=look.message, window_start=start, window_end=end,
            result=look.result_json(),
        )
        if look.phase == "Error":
            counters.error += 1
            counters.consecutive_errors += 1
        else:
            counters.consecutive_errors = 0
            counters.successful += look.phase == "Successful"
            counters.failed += look.phase == "Failed"
            counters.inconclusive += look.phase == "Inconclusive"
        updates: dict[str, Any] = {"counters": counters.as_dict(), "window_start": None}
        if outcome is not None:
            updates["judge_state"] = outcome.state
        self.store.update_rollout(self.name, **updates)
        self._event("measurement", f"step {rec.step_index + 1}: {look.phase}: {look.message}",
                    phase=look.phase, score=outcome.result.score if outcome else None)

        if look.phase == "Error":
            if counters.consecutive_errors > analysis.consecutive_error_limit:
                reason = (f"{counters.consecutive_errors} consecutive measurement errors "
                          f"(limit {analysis.consecutive_error_limit}): {look.message}")
                if analysis.on_error == "pause":
                    self.store.update_rollout(self.name, phase="Paused", message=reason)
                    self._event("paused", f"paused: {reason}")
                    return await self._wait_paused(rec)
                return await self._rollback(reason)
            return None  # measure the same step again
        if look.decision == Decision.ROLLBACK and counters.failed > analysis.failure_limit:
            return await self._rollback(look.message)
        if (look.decision == Decision.INCONCLUSIVE
                and counters.inconclusive > analysis.inconclusive_limit):
            return await self._rollback(
                f"{counters.inconclusive} inconclusive measurements "
                f"(limit {analysis.inconclusive_limit}): {look.message}")
        if look.decision == Decision.PROMOTE:
            if rec.step_index == self.last_analysis_step:
                return await self._promote(f"every step passed: {look.message}")
            return await self._promote(f"judge promoted early: {look.message}")
        if look.decision == Decision.CONTINUE:
            self._advance(rec)
        return None

    # -- waiting, with commands from other processes ----------------------------------

    async def _wait_until(self, start: float, duration: float) -> RolloutRecord | None:
        while True:
            outcome = await self._handle_commands()
            if outcome is not None:
                return outcome
            remaining = start + duration - self.clock()
            if remaining <= 0:
                return None
            await self._notify()
            await asyncio.sleep(min(COMMAND_POLL_SECONDS, remaining))

    async def _wait_paused(self, rec: RolloutRecord) -> RolloutRecord | None:
        while self._rec().phase == "Paused":
            outcome = await self._handle_commands()
            if outcome is not None:
                return outcome
            await self._notify()
            await asyncio.sleep(COMMAND_POLL_SECONDS)
        if self.plan[rec.step_index].pause is not None:
            self._advance(rec)
        return None

    async def _handle_commands(self) -> RolloutRecord | None:
        for command in self.store.take_commands(self.name):
            self._event("command", f"received {command}")
            if command == "abort":
                return await self._rollback("aborted by user", aborted=True)
            if command == "promote":
                return await self._promote("promoted by user", by_user=True)
            if command == "pause" and self._rec().phase == "Progressing":
                self.store.update_rollout(self.name, phase="Paused")
                self._event("paused", "paused by user")
                return await self._wait_paused(self._rec())
            if command == "resume" and self._rec().phase == "Paused":
                self.store.update_rollout(self.name, phase="Progressing")
                self._event("resumed", "resumed by user")
        return None

    # -- endings ----------------------------------------------------------------------

    async def _rollback(self, reason: str, aborted: bool = False) -> RolloutRecord:
        verdict = "Aborted" if aborted else "Failed"
        self.store.update_rollout(
            self.name, phase="RollingBack", verdict=verdict, message=reason,
            weights={"baseline": 100, "canary": 0},
        )
        self._event("rollback", f"rolling back: {reason}")
        return await self._finish_rollback(aborted)

    async def _finish_rollback(self, aborted: bool) -> RolloutRecord:
        await self._apply_weights(100, 0, retry=True)
        phase = "Aborted" if aborted else "RolledBack"
        self.store.update_rollout(self.name, phase=phase)
        self._event("rolledback", "canary weight is 0: all traffic on the baseline")
        await self._post_rollout()
        return self._rec()

    async def _promote(self, reason: str, by_user: bool = False) -> RolloutRecord:
        if not by_user:
            # A person's `promote` is the confirmation itself.
            outcome = await self._confirm("confirm-promotion", "promote")
            if outcome is not None:
                return outcome
        self.store.update_rollout(
            self.name, phase="Promoting", verdict="Promoted", message=reason,
            weights={"baseline": 0, "canary": 100},
        )
        self._event("promote", f"promoting: {reason}")
        return await self._finish_promotion()

    async def _finish_promotion(self) -> RolloutRecord:
        try:
            await self._apply_weights(0, 100, retry=True)
        except OperationalError as exc:
            # A promotion that cannot be applied must not leave a half-shifted service:
            # fall back to the baseline, which is known good.
            return await self._rollback(f"promotion failed: {exc}")
        self.store.update_rollout(self.name, phase="Promoted")
        self._event("promoted", "all traffic on the canary")
        await self._post_rollout()
        return self._rec()

    # -- webhooks -----------------------------------------------------------------------

    async def _before_first_weight(self) -> RolloutRecord | None:
        """confirm-rollout, then the pre-rollout gate; a failing pre-rollout hook counts
        as a failed check, retried each interval until the failure limit."""
        if self.hooks is None:
            return None
        outcome = await self._confirm("confirm-rollout", "start the rollout")
        if outcome is not None:
            return outcome
        while True:
            failed_gate = await self.hooks.gate("pre-rollout", "Initializing")
            if failed_gate is None:
                return None
            now = self.clock()
            outcome = await self._failed_check(self._rec(), failed_gate, now, now)
            if outcome is not None:
                return outcome
            outcome = await self._wait_until(self.clock(), self.spec.analysis.interval)
            if outcome is not None:
                return outcome

    async def _confirm(self, kind: str, what: str) -> RolloutRecord | None:
        """Holds until every `kind` webhook answers 200. Traffic stays where it is, which
        passed every look so far; commands and rollback webhooks are heeded meanwhile."""
        if self.hooks is None or not self.hooks.has(kind):
            return None
        announced = False
        while True:
            waiting_for = await self.hooks.confirm(kind, self._rec().phase)
            if waiting_for is None:
                if announced:
                    self._event("confirmed", f"{kind} confirmed: going on to {what}")
                return None
            if not announced:
                self._event("waiting", f"waiting to {what}: {waiting_for}")
                announced = True
            outcome = await self._rollback_if_requested()
            if outcome is None:
                outcome = await self._wait_until(self.clock(), self.hooks.confirm_interval)
            if outcome is not None:
                return outcome

    async def _rollback_if_requested(self) -> RolloutRecord | None:
        if self.hooks is None or not self.hooks.has("rollback"):
            return None
        reason = await self.hooks.rollback_requested(self._rec().phase)
        return None if reason is None else await self._rollback(reason)

    async def _failed_check(self, rec: RolloutRecord, reason: str, start: float,
                            end: float) -> RolloutRecord | None:
        """A gate webhook said no: a Failed measurement, against the failure limit like
        a failing look (Flagger's failed check)."""
        counters = Counters.of(rec.counters)
        counters.consecutive_errors = 0
        counters.failed += 1
        self.store.add_measurement(
            self.name, step_index=rec.step_index, weight=rec.weights.get("canary", 0),
            phase="Failed", decision="rollback", score=None, verdict=None, message=reason,
            window_start=start, window_end=end, result={"errors": {"webhook": reason}},
        )
        self.store.update_rollout(self.name, counters=counters.as_dict(), window_start=None)
        self._event("webhook", f"step {rec.step_index + 1}: failed check: {reason}",
                    phase="Failed")
        if counters.failed > self.spec.analysis.failure_limit:
            return await self._rollback(reason)
        return None

    async def _post_rollout(self) -> None:
        if self.hooks is None:
            return
        for failure in await self.hooks.post_rollout(self._rec().phase):
            self._event("webhook", failure)

    # -- helpers ----------------------------------------------------------------------

    async def _apply_weights(self, baseline: int, canary: int, retry: bool) -> None:
        deadline = self.clock() + (ROUTER_RETRY_SECONDS if retry else 0)
        delay = 0.2
        while True:
            try:
                await self.router.set_weights(baseline, canary)
                return
            except RouterError as exc:
                if self.clock() >= deadline:
                    raise OperationalError(str(exc)) from exc
                self._event("router-error", f"{exc}; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _advance(self, rec: RolloutRecord) -> None:
        self.store.update_rollout(self.name, step_index=rec.step_index + 1, window_start=None)

    def _rec(self) -> RolloutRecord:
        rec = self.store.get_rollout(self.name)
        assert rec is not None
        return rec

    def _event(self, kind: str, message: str, **data: Any) -> None:
        self.store.add_event(self.name, kind, message, **data)
        if self.hooks is not None:
            self.hooks.event(kind, message, self._rec().phase)

    async def _notify(self) -> None:
        if self.on_change is not None:
            res = self.on_change()
            if res is not None:
                await res


def _series_step(seconds: float) -> float:
    # About two points a second for short steps (so a Kayenta-style judge has points to
    # rank), at most 600 points a window: far under Prometheus' 11,000 per series.
    return max(0.5, seconds / 600.0)
