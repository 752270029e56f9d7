"""Rollouts driven through `canaryctl serve` end to end: POST a spec, poll it as
Spinnaker does, abort one through the control endpoint; real mesh, services and load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from canary.demo_env import DemoEnvironment
from tests.test_api_contracts import SPINNAKER_STATUSES, ApiServer
from tests.test_hooks import Receiver
from tests.test_rollout_e2e import _weights

pytestmark = pytest.mark.slow


async def _poll(api: httpx.AsyncClient, url: str, until: Any, timeout: float = 60
                ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        res = await api.get(url)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["status"] in SPINNAKER_STATUSES
        if until(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last answer {body}")


def test_rollout_through_the_api_promotes_and_notifies(tmp_path: Path) -> None:
    asyncio.run(_promote(tmp_path))


async def _promote(tmp: Path) -> None:
    server = ApiServer(tmp)
    server.start()
    receiver = Receiver().start()
    url_file = tmp / "notify-url"
    url_file.write_text(receiver.url + "/notify")
    try:
        async with DemoEnvironment(scenario="good", rate=200, duration=60) as env:
            doc = env.rollout_document("sequential", 2.0)
            doc["metadata"]["name"] = "api-good"
            doc["spec"]["stepWeights"] = [20, 50]
            doc["spec"]["webhooks"] = [
                {"name": "gate", "type": "rollout", "url": receiver.url + "/gate"},
                {"name": "done", "type": "post-rollout", "url": receiver.url + "/done"}]
            doc["spec"]["notifications"] = [{"type": "webhook", "urlFile": str(url_file),
                                             "events": ["started", "promoted"]}]
            async with httpx.AsyncClient(base_url=server.url, timeout=30, headers={
                    "Authorization": f"Bearer {server.token_file.read_text().strip()}"}) as api:
                res = await api.post("/api/v1/rollouts", json=doc)
                assert res.status_code == 202, res.text
                location = res.headers["Location"]
                assert res.json()["statusUrl"] == location
                body = await _poll(api, location, lambda b: b["status"] != "RUNNING")
                assert body["status"] == "SUCCEEDED", body
                assert body["phase"] == "Promoted" and body["weights"]["canary"] == 100
            assert (await _weights(env)) == {"baseline": 0, "canary": 100}
    finally:
        server.stop()
        receiver.stop()
    assert receiver.on("/gate") and receiver.on("/done")[0].body["phase"] == "Succeeded"
    notes = [c.body for c in receiver.on("/notify")]
    assert [n["event"] for n in notes] == ["started", "promoted"]
    report = Path(notes[-1]["reports"]["json"])
    assert report.exists() and report.parent == server.state / "reports"


def test_abort_through_the_control_endpoint_rolls_back(tmp_path: Path) -> None:
    asyncio.run(_abort(tmp_path))


async def _abort(tmp: Path) -> None:
    server = ApiServer(tmp)
    server.start()
    try:
        async with DemoEnvironment(scenario="good", rate=200, duration=60) as env:
            doc = env.rollout_document("sequential", 30.0)
            doc["metadata"]["name"] = "api-abort"
            async with httpx.AsyncClient(base_url=server.url, timeout=30, headers={
                    "Authorization": f"Bearer {server.token_file.read_text().strip()}"}) as api:
                res = await api.post("/api/v1/rollouts", json=doc)
                assert res.status_code == 202, res.text
                url = f"/api/v1/rollouts/{res.json()['id']}"
                await _poll(api, url, lambda b: b["weights"].get("canary", 0) > 0)
                assert (await _weights(env))["canary"] == 10
                again = await api.post("/api/v1/rollouts", json=doc)
                assert again.status_code == 409  # one controller per rollout
                aborted = await api.post(f"{url}/abort")
                assert aborted.status_code == 200, aborted.text
                body = await _poll(api, url, lambda b: b["status"] != "RUNNING")
                assert body["status"] == "CANCELED" and body["phase"] == "Aborted", body
                assert (await _weights(env)) == {"baseline": 100, "canary": 0}
                ended = await api.post(f"{url}/abort")
                assert ended.status_code == 409
    finally:
        server.stop()
