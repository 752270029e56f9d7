"""Outbound webhooks and notifications against real loopback receivers: retries,
timeouts, Flagger's payload, Slack and JSON notification bodies, secret URLs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from canary.hooks import RolloutHooks, build_hooks
from canary.input_error import InputError, InputErrors
from canary.spec import Rollout
from canary.spec_loader import validate_rollout
from tests.fakes.loopback_server import serve_loopback, stop_loopback


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    ts: float
    answer: int


@dataclass
class Receiver:
    """An HTTP server on a free loopback port that records every POST and answers with
    the codes scripted per path (the last code repeats; 200 when none is scripted)."""

    script: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        self.server, _ = serve_loopback(self._handle, keep_alive=False)
        return self

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"{}")
        time.sleep(self.delays.get(h.path, 0.0))
        with self.lock:
            codes = self.script.get(h.path, [200])
            code = codes.pop(0) if len(codes) > 1 else codes[0]
            self.calls.append(Call(h.path, body, time.time(), code))
        payload = b'{"ok": true}'
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def stop(self) -> None:
        stop_loopback(self.server)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def on(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]

    def paths(self) -> list[str]:
        with self.lock:
            return [c.path for c in self.calls]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def rollout_doc(webhooks: list[dict[str, Any]] | None = None,
                notifications: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "canaryctl.io/v1", "kind": "Rollout",
        "metadata": {"name": "checkout", "labels": {"namespace": "shop"}},
        "spec": {
            "service": "checkout",
            "baseline": {"endpoints": ["127.0.0.1:1"]},
            "canary": {"endpoints": ["127.0.0.1:2"]},
            "mesh": {"admin": "http://127.0.0.1:3", "tokenEnv": "X"},
            "stepWeights": [10],
            "analysis": {"interval": "1s", "metrics": [{"name": "latency", "query": "latency"}]},
            "webhooks": webhooks or [],
            "notifications": notifications or [],
        },
    }


def hooks_for(doc: dict[str, Any]) -> RolloutHooks:
    hooks = build_hooks(Rollout.model_validate(doc), "rollout.yaml", checksum="abc123")
    assert hooks is not None
    return hooks


def test_gate_retries_server_errors_but_not_a_refusal(receiver: Receiver) -> None:
    receiver.script = {"/flaky": [502, 500, 200], "/no": [403], "/down": [503]}
    hooks = hooks_for(rollout_doc([
        {"name": "flaky", "type": "pre-rollout", "url": receiver.url + "/flaky", "retries": 2},
        {"name": "no", "type": "rollout", "url": receiver.url + "/no", "retries": 3},
        {"name": "down", "type": "post-rollout", "url": receiver.url + "/down", "retries": 1},
    ]))

    async def go() -> tuple[str | None, str | None, list[str]]:
        try:
            return (await hooks.gate("pre-rollout", "Initializing"),
                    await hooks.gate("rollout", "Progressing"),
                    await hooks.post_rollout("Promoted"))
        finally:
            await hooks.aclose()

    pre, rollout, post = asyncio.run(go())
    assert pre is None
    assert len(receiver.on("/flaky")) == 3
    assert rollout == "rollout webhook 'no' answered 403"
    assert len(receiver.on("/no")) == 1  # a refusal is an answer: not retried
    assert post == ["post-rollout webhook 'down' answered 503"]
    assert len(receiver.on("/down")) == 2


def test_timeouts_and_unreachable_hooks_fail_the_gate(receiver: Receiver) -> None:
    receiver.delays = {"/slow": 1.0}
    hooks = hooks_for(rollout_doc([
        {"name": "slow", "type": "rollout", "url": receiver.url + "/slow", "timeout": "200ms",
         "retries": 0},
        {"name": "gone", "type": "pre-rollout", "url": "http://127.0.0.1:9/x", "retries": 1},
    ]))

    async def go() -> tuple[str | None, str | None]:
        try:
            return await hooks.gate("rollout", "Progressing"), await hooks.gate(
                "pre-rollout", "Initializing")
        finally:
            await hooks.aclose()

    slow, gone = asyncio.run(go())
    assert slow == "rollout webhook 'slow' could not be reached (no answer in 0.2s)"
    assert gone is not None and gone.startswith("pre-rollout webhook 'gone' could not be reached")


def test_flagger_payload_confirmations_and_the_rollback_trigger(receiver: Receiver) -> None:
    receiver.script = {"/confirm": [403, 202, 200], "/rollback": [404, 200]}
    hooks = hooks_for(rollout_doc([
        {"name": "confirm", "type": "confirm-promotion", "url": receiver.url + "/confirm",
         "metadata": {"team": "payments"}},
        {"name": "rb", "type": "rollback", "url": receiver.url + "/rollback"},
    ]))

    async def go() -> list[str | None]:
        try:
            return [await hooks.confirm("confirm-promotion", "Progressing"),
                    await hooks.confirm("confirm-promotion", "Progressing"),
                    await hooks.confirm("confirm-promotion", "Paused"),
                    await hooks.rollback_requested("Progressing"),
                    await hooks.rollback_requested("Progressing")]
        finally:
            await hooks.aclose()

    first, second, third, rb1, rb2 = asyncio.run(go())
    # Only 200 confirms: a 202 is not a yes.
    assert first is not None and "403" in first
    assert second is not None and "202" in second
    assert third is None
    assert rb1 is None and rb2 == "rollback webhook 'rb' answered 200"
    body = receiver.on("/confirm")[-1].body
    assert body == {"name": "checkout", "namespace": "shop", "phase": "Waiting",
                    "checksum": "abc123", "type": "confirm-promotion",
                    "metadata": {"team": "payments"}}


def test_events_and_notifications_in_order_with_secret_urls(
        receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_path = "/services/T000/B000/s3cr3t"
    monkeypatch.setenv("SLACK_URL", receiver.url + secret_path)
    url_file = tmp_path / "hook-url"
    url_file.write_text(receiver.url + "/json\n")
    hooks = hooks_for(rollout_doc(
        [{"name": "ev", "type": "event", "url": receiver.url + "/event"}],
        [{"type": "slack", "urlEnv": "SLACK_URL"},
         {"type": "webhook", "urlFile": str(url_file), "events": ["analysis", "rolledback"]}]))
    reports = {"html": tmp_path / "checkout.html", "json": tmp_path / "checkout.json"}

    async def go() -> None:
        try:
            hooks.event("started", "rollout of checkout started", "Initializing")
            hooks.event("weight", "step 1/2: canary weight 10%", "Progressing")
            hooks.event("measurement", "step 2: Failed: latency High", "Progressing")
            hooks.event("rollback", "rolling back: latency High", "RollingBack")
            await hooks.finished("RolledBack", "Failed", "latency High", reports)
        finally:
            await hooks.aclose()

    asyncio.run(go())
    events = [c.body for c in receiver.on("/event")]
    assert [e["metadata"]["eventMessage"] for e in events] == [
        "rollout of checkout started", "step 1/2: canary weight 10%",
        "step 2: Failed: latency High", "rolling back: latency High"]
    assert [e["metadata"]["eventType"] for e in events] == [
        "Normal", "Normal", "Normal", "Warning"]
    assert events[3]["phase"] == "Failed" and events[0]["namespace"] == "shop"

    slack = [c.body for c in receiver.on(secret_path)]
    # Default events: start, each step, promotion and rollback; not every measurement.
    assert [s["text"].split("\n")[0] for s in slack] == [
        ":rocket: canary checkout: rollout of checkout started",
        ":arrow_up: canary checkout: step 1/2: canary weight 10%",
        ":rewind: canary checkout: RolledBack: latency High"]
    assert f"report: {reports['html']}" in slack[-1]["text"]
    assert slack[-1]["blocks"][0]["type"] == "section"
    assert str(reports["json"]) in json.dumps(slack[-1]["blocks"])

    generic = [c.body for c in receiver.on("/json")]
    assert [g["event"] for g in generic] == ["analysis", "rolledback"]
    assert generic[-1]["verdict"] == "Failed"
    assert generic[-1]["reports"] == {k: str(v) for k, v in reports.items()}
    # The final notification comes after every queued event.
    paths = receiver.paths()
    last = {p: i for i, p in enumerate(paths)}
    assert last[secret_path] > last["/event"] and last["/json"] > last["/event"]


def test_a_failing_notification_does_not_leak_its_url(
        receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    secret = "/services/T1/B1/xoxb-secret"
    receiver.script = {secret: [500]}
    monkeypatch.setenv("SLACK_URL", receiver.url + secret)
    hooks = hooks_for(rollout_doc(notifications=[{"type": "slack", "urlEnv": "SLACK_URL"}]))

    async def go() -> None:
        try:
            hooks.event("started", "started", "Initializing")
        finally:
            await hooks.aclose()

    with caplog.at_level("WARNING", logger="canaryctl.hooks"):
        asyncio.run(go())
    assert len(receiver.on(secret)) == 3  # first try and two retries
    assert "notification 0 (slack) failed (500)" in caplog.text
    assert "xoxb" not in caplog.text and "services" not in caplog.text


def test_spec_rejects_inline_notification_urls_and_unknown_hook_types() -> None:
    bad = rollout_doc(notifications=[{"type": "slack", "url": "https://hooks.slack.com/x"}])
    with pytest.raises(InputErrors) as exc:
        validate_rollout(bad, "r.yaml")
    lines = [str(e) for e in exc.value.errors]
    assert any(line.startswith("r.yaml: spec.notifications[0]") for line in lines), lines
    assert all("hooks.slack.com" not in line for line in lines)

    bad = rollout_doc([{"name": "x", "type": "pre-promotion", "url": "http://h/"}])
    with pytest.raises(InputErrors) as exc:
        validate_rollout(bad, "r.yaml")
    assert str(exc.value.errors[0]).startswith("r.yaml: spec.webhooks[0].type: ")

    twice = rollout_doc([{"name": "x", "type": "event", "url": "http://h/"}] * 2)
    with pytest.raises(InputErrors, match="used twice"):
        validate_rollout(twice, "r.yaml")


def test_a_missing_notification_url_is_an_input_error(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("NOPE_URL", raising=False)
    doc = rollout_doc(notifications=[{"type": "webhook", "urlEnv": "NOPE_URL"}])
    with pytest.raises(InputError) as exc:
        build_hooks(Rollout.model_validate(doc), "r.yaml")
    assert str(exc.value) == ("r.yaml: spec.notifications[0].urlEnv: environment variable "
                              "NOPE_URL holding the notification URL is not set")
    empty = tmp_path / "u"
    empty.write_text("not a url")
    doc = rollout_doc(notifications=[{"type": "slack", "urlFile": str(empty)}])
    with pytest.raises(InputError, match=r"urlFile: expected an http:// or https:// URL"):
        build_hooks(Rollout.model_validate(doc), "r.yaml")
    assert build_hooks(Rollout.model_validate(rollout_doc()), "r.yaml") is None
