"""Webhooks and notifications of whole rollouts: `canaryctl run` through the real mesh
with the demo's services and load, calling real loopback receivers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.demo_env import DemoEnvironment
from tests.conftest import canaryctl
from tests.test_hooks import Receiver
from tests.test_rollout_e2e import _weights

pytestmark = pytest.mark.slow

SLACK_PATH = "/services/T0/B0/hooks-secret-7f3a"
GATES = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
         "confirm-promotion", "post-rollout", "rollback", "event")


def _spec(env: DemoEnvironment, receiver: Receiver, tmp: Path, name: str,
          retries: int = 0) -> Path:
    doc: dict[str, Any] = env.rollout_document("sequential", 2.0)
    doc["metadata"]["name"] = name
    doc["spec"]["stepWeights"] = [20, 50]
    doc["spec"]["webhooks"] = [
        {"name": f"{kind}-hook", "type": kind, "url": f"{receiver.url}/{kind}",
         "timeout": "2s", "retries": retries, "metadata": {"cmd": f"check {kind}"}}
        for kind in GATES]
    url_file = tmp / "json-url"
    url_file.write_text(f"{receiver.url}/json")
    doc["spec"]["notifications"] = [
        {"type": "slack", "urlEnv": "TEST_SLACK_URL"},
        {"type": "webhook", "urlFile": str(url_file), "events": ["promoted", "rolledback"]},
    ]
    path = tmp / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _events(db: Path, name: str) -> list[tuple[float, str, str]]:
    with sqlite3.connect(db) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(
            "SELECT ts, kind, message FROM events WHERE rollout=? ORDER BY id", (name,))]


def _first(events: list[tuple[float, str, str]], kind: str) -> float:
    return next(ts for ts, k, _ in events if k == kind)


def _run(tmp: Path, spec: Path, receiver: Receiver) -> Any:
    return canaryctl("run", str(spec), "--no-live", "--state-dir", str(tmp / "state"),
                     "--report-dir", str(tmp / "reports"), timeout=90,
                     env={"TEST_SLACK_URL": receiver.url + SLACK_PATH})


def test_gates_hold_the_rollout_and_every_kind_is_called_in_order(tmp_path: Path) -> None:
    asyncio.run(_promoted(tmp_path))


async def _promoted(tmp: Path) -> None:
    receiver = Receiver(script={"/confirm-rollout": [403, 403, 200],
                                "/confirm-promotion": [403, 200], "/rollback": [404]}).start()
    try:
        async with DemoEnvironment(scenario="good", rate=200, duration=60) as env:
            spec = _spec(env, receiver, tmp, "hooked")
            res = await asyncio.to_thread(_run, tmp, spec, receiver)
            assert res.returncode == 0, res.stdout + res.stderr
            assert (await _weights(env)) == {"baseline": 0, "canary": 100}
    finally:
        receiver.stop()

    gates = [p.strip("/") for p in receiver.paths()
             if p.strip("/") in GATES and p not in ("/event", "/rollback")]
    flow = [g for i, g in enumerate(gates) if i == 0 or gates[i - 1] != g]
    assert flow[:4] == ["confirm-rollout", "pre-rollout", "confirm-traffic-increase", "rollout"]
    assert flow[-2:] == ["confirm-promotion", "post-rollout"]
    assert [c.answer for c in receiver.on("/confirm-rollout")] == [403, 403, 200]
    assert [c.answer for c in receiver.on("/confirm-promotion")] == [403, 200]
    # The rollback hook is asked at every look and while a confirmation holds.
    assert len(receiver.on("/rollback")) >= len(receiver.on("/rollout")) + 2

    events = _events(tmp / "state" / "canaryctl.db", "hooked")
    started_ok = receiver.on("/confirm-rollout")[-1].ts
    assert _first(events, "weight") >= started_ok  # no traffic before the confirmation
    assert _first(events, "promote") >= receiver.on("/confirm-promotion")[-1].ts
    assert any("waiting to start the rollout" in m for _, _, m in events)

    post = receiver.on("/post-rollout")
    assert len(post) == 1 and post[0].body["phase"] == "Succeeded"
    assert post[0].body["metadata"] == {"cmd": "check post-rollout"}
    assert post[0].body["name"] == "hooked" and len(post[0].body["checksum"]) == 16
    messages = [c.body["metadata"]["eventMessage"] for c in receiver.on("/event")]
    assert messages[0].startswith("rollout of demo started")
    assert "all traffic on the canary" in messages

    slack = [c.body["text"] for c in receiver.on(SLACK_PATH)]
    assert slack[0].startswith(":rocket: canary hooked: rollout of demo started")
    assert sum("canary weight" in t for t in slack) == 2
    final = slack[-1]
    assert final.startswith(":white_check_mark: canary hooked: Promoted")
    html = tmp / "reports" / "hooked.html"
    assert f"report: {html}" in final and html.exists()
    generic = [c.body for c in receiver.on("/json")]
    assert [g["event"] for g in generic] == ["promoted"]
    assert Path(generic[0]["reports"]["json"]).exists()

    # The Slack URL is a credential: nowhere in output, state or reports.
    secret = SLACK_PATH.rsplit("/", 1)[1]
    assert secret not in res.stdout + res.stderr
    for path in [*(tmp / "state").rglob("*"), *(tmp / "reports").glob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(("script", "reason"), [
    ({"/rollout": [500]}, "rollout webhook 'rollout-hook' answered 500"),
    ({"/rollback": [404, 200]}, "rollback webhook 'rollback-hook' answered 200"),
], ids=["rollout-gate-fails", "rollback-hook-fires"])
def test_a_webhook_rolls_back_a_healthy_canary(tmp_path: Path, script: dict[str, list[int]],
                                               reason: str) -> None:
    asyncio.run(_rolled_back(tmp_path, script, reason))


async def _rolled_back(tmp: Path, script: dict[str, list[int]], reason: str) -> None:
    receiver = Receiver(script={"/rollback": [404], **script}).start()
    try:
        async with DemoEnvironment(scenario="good", rate=200, duration=60) as env:
            spec = _spec(env, receiver, tmp, "gated", retries=1)
            res = await asyncio.to_thread(_run, tmp, spec, receiver)
            assert res.returncode == 1, res.stdout + res.stderr
            assert reason in res.stdout
            assert (await _weights(env)) == {"baseline": 100, "canary": 0}
    finally:
        receiver.stop()
    with sqlite3.connect(tmp / "state" / "canaryctl.db") as conn:
        verdict, phase, message = conn.execute(
            "SELECT verdict, phase, message FROM rollouts WHERE name='gated'").fetchone()
    assert (verdict, phase) == ("Failed", "RolledBack") and reason in message
    assert not receiver.on("/confirm-promotion")
    post = receiver.on("/post-rollout")
    assert len(post) == 1 and post[0].body["phase"] == "Failed"
    # A failing rollout gate was retried once (retries: 1) before it counted.
    if "/rollout" in script:
        assert len(receiver.on("/rollout")) == 2
    final = receiver.on(SLACK_PATH)[-1].body["text"]
    assert final.startswith(":rewind: canary gated: RolledBack") and reason in final
