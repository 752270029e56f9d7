"""A server killed in the middle of an analysis: the next one answers for it, and
finishes it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.test_api_contracts import (
    ANALYSIS_SPEC,
    KAYENTA_CONFIG,
    SPINNAKER_STATUSES,
    TOKEN,
    ApiServer,
    pairs,
    recording,
)


def _poll(client: httpx.Client, url: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        assert body["status"] in SPINNAKER_STATUSES
        if body["status"] != "RUNNING":
            return dict(body)
        time.sleep(0.1)
    raise AssertionError("still RUNNING")


def test_restarted_server_answers_for_and_finishes_runs_started_before(tmp_path: Path) -> None:
    server = ApiServer(tmp_path)
    server.start()
    rec = recording(tmp_path / "rec.json", bad=True)
    try:
        with server.client() as api:
            done = api.post("/api/v1/analyses", json={"config": KAYENTA_CONFIG,
                                                      "data": pairs(False)}).json()
            assert _poll(api, done["statusUrl"])["status"] == "SUCCEEDED"
            pending = api.post("/api/v1/analyses", json={
                "analysis": ANALYSIS_SPEC, "service": "checkout", "window": {"duration": "2s"},
                "providers": {"rec": {"type": "file", "path": str(rec)}}}).json()
            assert api.get(pending["statusUrl"]).json()["status"] == "RUNNING"
        server.kill()
        server.start()
        with server.client() as api:
            # Status URLs carry the old port; the id is what survives.
            again = api.get(f"/api/v1/analyses/{done['id']}").json()
            assert again["status"] == "SUCCEEDED" and again["verdict"] == "Pass"
            finished = _poll(api, f"/api/v1/analyses/{pending['id']}")
            assert finished["status"] == "FAILED" and finished["verdict"] == "Fail"
    finally:
        server.stop()
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert TOKEN not in logs
