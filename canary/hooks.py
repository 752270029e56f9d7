"""Outbound calls of a rollout: webhooks of Flagger's kinds (gates, confirmations, the
rollback trigger and informational hooks, all with Flagger's payload) and notifications
to chat or any JSON endpoint.

The controller decides what a hook's answer means; this module only calls, retries and
reads answers. Notification URLs are secrets (a Slack incoming-webhook URL is its own
credential): they are read from the environment or a file and never appear in an event,
a log line or an error message; errors name the hook or notification by its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from canary.input_error import InputError
from canary.spec import NotificationSpec, Rollout, WebhookSpec

log = logging.getLogger("canaryctl.hooks")

# Flagger's phase names, which Flagger-aware receivers switch on.
FLAGGER_PHASE = {
    "Initializing": "Initializing",
    "Progressing": "Progressing",
    "Paused": "Waiting",
    "Promoting": "Promoting",
    "Promoted": "Succeeded",
    "RollingBack": "Failed",
    "RolledBack": "Failed",
    "Aborted": "Failed",
}
DEFAULT_NOTIFY_EVENTS = frozenset({"started", "step", "promoted", "rolledback"})
# Controller event kinds as notification events; kinds absent here are not notified
# (promotion and rollback are notified by `finished`, once the reports exist).
NOTIFY_EVENT_OF_KIND = {
    "started": "started", "resumed": "started", "weight": "step", "measurement": "analysis",
    "paused": "paused", "waiting": "waiting", "webhook": "webhook",
}
# Warning-type events in Flagger's event webhook metadata.
WARNING_KINDS = frozenset({"rollback", "rolledback", "router-error", "webhook"})
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 2.0
NOTIFY_TIMEOUT_SECONDS = 10.0
NOTIFY_RETRIES = 2
# How long closing waits for informational calls still queued.
DRAIN_SECONDS = 15.0


@dataclass(frozen=True)
class HookAnswer:
    """The last answer of a webhook after its retries: an HTTP status, or None and the
    kind of transport error when none came."""

    hook: str
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.status is not None:
            return f"webhook {self.hook!r} answered {self.status}"
        return f"webhook {self.hook!r} could not be reached ({self.error})"


@dataclass(frozen=True)
class Notifier:
    kind: str  # slack | webhook
    url: str
    events: frozenset[str]
    label: str  # how errors name it: never the URL

    @staticmethod
    def of(spec: NotificationSpec, index: int, source: str, base_dir: Path | None
           ) -> Notifier:
        field = f"spec.notifications[{index}]"
        url = ""
        if spec.url_env is not None:
            url = os.environ.get(spec.url_env, "").strip()
            if not url:
                raise InputError(source, f"{field}.urlEnv", f"environment variable "
                                 f"{spec.url_env} holding the notification URL is not set")
        elif spec.url_file is not None:
            path = Path(spec.url_file)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                url = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise InputError(source, f"{field}.urlFile", "cannot read the notification "
                                 f"URL file ({exc.strerror or exc})") from exc
        if not url.startswith(("http://", "https://")):
            where = "urlEnv" if spec.url_env is not None else "urlFile"
            raise InputError(source, f"{field}.{where}",
                             "expected an http:// or https:// URL in it")
        events = DEFAULT_NOTIFY_EVENTS if spec.events is None else frozenset(spec.events)
        return Notifier(spec.type, url, events, f"notification {index} ({spec.type})")


class RolloutHooks:
    """The webhooks and notifications of one rollout.

    Gates and confirmations are awaited by the controller; `event` only queues (events
    are informational, and a slow receiver must not slow the rollout), and one worker
    sends the queue in order."""

    def __init__(self, rollout: Rollout, notifiers: list[Notifier], *,
                 namespace: str = "default", checksum: str = "",
                 confirm_interval: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = rollout.metadata.name
        self.namespace = namespace
        self.checksum = checksum
        self.webhooks: list[WebhookSpec] = list(rollout.spec.webhooks)
        self.notifiers = notifiers
        self.confirm_interval = confirm_interval
        self._transport = transport
        # Made on the first call, so hooks built for a rollout that never starts hold
        # nothing to close.
        self._client: httpx.AsyncClient | None = None
        self._queue: asyncio.Queue[tuple[str, str, str] | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # -- what the controller calls ------------------------------------------------------

    def has(self, kind: str) -> bool:
        return any(w.type == kind for w in self.webhooks)

    async def gate(self, kind: str, phase: str) -> str | None:
        """Calls every `kind` webhook; the reason of the first that did not answer 2xx
        (after its retries), None when all let the rollout go on."""
        for hook in self._of(kind):
            answer = await self.call(hook, phase)
            if not answer.ok:
                return f"{kind} {answer.describe()}"
        return None

    async def confirm(self, kind: str, phase: str) -> str | None:
        """One round of a confirmation: None when every `kind` webhook answered 200, else
        what it is waiting for. The controller asks again until it is None."""
        for hook in self._of(kind):
            answer = await self.call(hook, phase)
            if answer.status != 200:
                return f"{kind} {answer.describe()}"
        return None

    async def rollback_requested(self, phase: str) -> str | None:
        """The reason to roll back now, when a `rollback` webhook answers 200."""
        for hook in self._of("rollback"):
            answer = await self.call(hook, phase, retry_server_errors=False)
            if answer.status == 200:
                return f"rollback webhook {hook.name!r} answered 200"
        return None

    async def post_rollout(self, phase: str) -> list[str]:
        """Calls the post-rollout webhooks; the failures, for the event log."""
        failures = []
        for hook in self._of("post-rollout"):
            answer = await self.call(hook, phase)
            if not answer.ok:
                failures.append(f"post-rollout {answer.describe()}")
        return failures

    def event(self, kind: str, message: str, phase: str) -> None:
        """Queues the `event` webhooks and the notifications this event is for."""
        if not self.webhooks and not self.notifiers:
            return
        if self._worker is None:
            self._worker = asyncio.create_task(self._send_queued(), name=f"hooks-{self.name}")
        self._queue.put_nowait((kind, message, phase))

    async def finished(self, phase: str, verdict: str | None, message: str,
                       reports: Mapping[str, Path]) -> None:
        """The promotion or rollback notification, with where the reports are; sent after
        every queued event, so receivers see the end last."""
        await self._drain()
        event = "promoted" if phase == "Promoted" else "rolledback"
        for notifier in self.notifiers:
            if event in notifier.events:
                await self._notify(notifier, event, f"{phase}: {message}", phase,
                                   verdict=verdict, reports=reports)

    async def aclose(self) -> None:
        await self._drain()
        if self._worker is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._worker, DRAIN_SECONDS)
            self._worker = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- calls ------------------------------------------------------------------------

    def payload(self, hook: WebhookSpec, phase: str,
                extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Flagger's CanaryWebhookPayload."""
        return {"name": self.name, "namespace": self.namespace,
                "phase": FLAGGER_PHASE.get(phase, phase), "checksum": self.checksum,
                "type": hook.type, "metadata": {**hook.metadata, **(extra or {})}}

    async def call(self, hook: WebhookSpec, phase: str, *,
                   extra: Mapping[str, str] | None = None,
                   retry_server_errors: bool = True) -> HookAnswer:
        """POSTs once and then up to `retries` more times on a transport error or a 5xx;
        a 4xx is an answer, not a failure to answer, so it is not retried."""
        body = self.payload(hook, phase, extra)
        return await self._post(hook.name, hook.url, body, hook.timeout,
                                hook.retries if retry_server_errors else 0)

    async def _post(self, label: str, url: str, body: Mapping[str, Any], timeout: float,
                    retries: int) -> HookAnswer:
        answer = HookAnswer(label, None, "not called")
        delay = RETRY_BASE_SECONDS
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            if self._client is None:
                self._client = httpx.AsyncClient(transport=self._transport,
                                                 follow_redirects=False)
            try:
                res = await self._client.post(url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                answer = HookAnswer(label, None, f"no answer in {timeout:g}s")
                continue
            except httpx.HTTPError as exc:
                # The exception's text can hold the URL, which may be a secret.
                answer = HookAnswer(label, None, type(exc).__name__)
                continue
            answer = HookAnswer(label, res.status_code)
            if res.status_code < 500:
                break
        return answer

    def _of(self, kind: str) -> list[WebhookSpec]:
        return [w for w in self.webhooks if w.type == kind]

    # -- the informational queue --------------------------------------------------------

    async def _drain(self) -> None:
        if self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), DRAIN_SECONDS)

    async def _send_queued(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    return
                await self._send_event(*item)
            except Exception:  # informational: never let one bad send stop the rest
                log.warning("rollout %s: sending an event failed", self.name, exc_info=False)
            finally:
                self._queue.task_done()

    async def _send_event(self, kind: str, message: str, phase: str) -> None:
        extra = {"eventMessage": message, "eventType":
                 "Warning" if kind in WARNING_KINDS else "Normal",
                 "eventReason": kind, "timestamp": str(int(time.time() * 1000))}
        for hook in self._of("event"):
            await self.call(hook, phase, extra=extra)
        event = NOTIFY_EVENT_OF_KIND.get(kind)
        if event is None:
            return
        for notifier in self.notifiers:
            if event in notifier.events:
                await self._notify(notifier, event, message, phase)

    async def _notify(self, notifier: Notifier, event: str, message: str, phase: str, *,
                      verdict: str | None = None,
                      reports: Mapping[str, Path] | None = None) -> None:
        report_paths = {fmt: str(path) for fmt, path in (reports or {}).items()}
        if notifier.kind == "slack":
            body = slack_message(self.name, event, message, report_paths)
        else:
            body = {"rollout": self.name, "namespace": self.namespace, "event": event,
                    "phase": phase, "verdict": verdict, "message": message,
                    "checksum": self.checksum, "reports": report_paths,
                    "timestamp": time.time()}
        answer = await self._post(notifier.label, notifier.url, body, NOTIFY_TIMEOUT_SECONDS,
                                  NOTIFY_RETRIES)
        if not answer.ok:
            got = answer.status if answer.status is not None else answer.error
            log.warning("rollout %s: %s failed (%s)", self.name, notifier.label, got)


SLACK_ICON = {"started": ":rocket:", "step": ":arrow_up:", "analysis": ":bar_chart:",
              "paused": ":double_vertical_bar:", "waiting": ":hourglass:",
              "webhook": ":warning:", "promoted": ":white_check_mark:",
              "rolledback": ":rewind:"}


def slack_message(name: str, event: str, message: str,
                  reports: Mapping[str, str]) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for notifications and clients without
    blocks (Mattermost, Rocket.Chat and Teams' Slack-compatible hooks read it), blocks for
    Slack itself."""
    icon = SLACK_ICON.get(event, "")
    text = f"{icon} canary {name}: {message}".strip()
    report = reports.get("html") or reports.get("md") or reports.get("json")
    if report:
        text += f"\nreport: {report}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f"{icon} *canary {name}*: {message}".strip()}}]
    if reports:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"{fmt} report: `{path}`"}
            for fmt, path in reports.items()]})
    return {"text": text, "blocks": blocks}


def expected_report_paths(report_dir: Path, name: str) -> dict[str, Path]:
    """Where `canary.report_files.write_reports` puts a rollout's reports."""
    from canary.report_files import REPORT_FORMATS

    return {fmt: report_dir / f"{name}.{fmt}" for fmt in REPORT_FORMATS}


def build_hooks(rollout: Rollout, source: str, *, checksum: str = "",
                confirm_interval: float | None = None) -> RolloutHooks | None:
    """The rollout's hooks, or None when its spec has no webhooks and no notifications.
    Reads the notification URLs now, so a missing one is an input error before any
    traffic moves."""
    spec = rollout.spec
    if not spec.webhooks and not spec.notifications:
        return None
    base_dir = Path(source).resolve().parent if source and Path(source).exists() else None
    notifiers = [Notifier.of(n, i, source, base_dir) for i, n in enumerate(spec.notifications)]
    interval = confirm_interval if confirm_interval is not None else min(
        spec.analysis.interval, 10.0)
    return RolloutHooks(rollout, notifiers,
                        namespace=rollout.metadata.labels.get("namespace", "default"),
                        checksum=checksum, confirm_interval=interval)
