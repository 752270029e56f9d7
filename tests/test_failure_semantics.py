"""A provider that fails is a failure, never a pass: Error measurements, then a rollback
(or a pause with `onError: pause`) after consecutiveErrorLimit, and no secret in sight."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.demo_env import DemoEnvironment
from tests.conftest import CANARYCTL, ROOT, canaryctl

pytestmark = pytest.mark.slow
SECRET = "dd-api-key-that-must-never-show-9f8e7d"


def _spec(env: DemoEnvironment, tmp_path: Path, **analysis: Any) -> Path:
    doc = env.rollout_document("sequential", 1.0)
    doc["metadata"]["name"] = "flaky-source"
    doc["spec"]["providers"] = {
        # Nothing listens on port 9 of loopback: every fetch is refused.
        "dd": {"type": "datadog", "url": "http://127.0.0.1:9", "retries": 0, "timeout": 2},
    }
    doc["spec"]["analysis"]["metrics"].append({
        "name": "apm-latency", "provider": "dd", "kind": "series",
        "query": "avg:trace.http.request.duration{service:{{service}},version:{{version}}}",
    })
    doc["spec"]["analysis"].update(analysis)
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_errors_roll_back_after_the_limit_and_never_pass(tmp_path: Path) -> None:
    async def go() -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
        async with DemoEnvironment(scenario="good", rate=100, duration=40) as env:
            spec = _spec(env, tmp_path, consecutiveErrorLimit=1)
            res = await asyncio.to_thread(
                canaryctl, "run", str(spec), "--no-live", "--format", "json",
                "--state-dir", str(tmp_path / "state"),
                env={"DD_API_KEY": SECRET, "DD_APP_KEY": SECRET + "-app"})
            from mesh.client import MeshClient

            async with MeshClient(env.admin_url, env.token) as client:
                weights = await client.get_weights("demo")
            return res, weights

    res, weights = asyncio.run(go())
    assert res.returncode == 1, res.stdout + res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    report = json.loads(Path(summary["reports"]["json"]).read_text())
    phases = [m["phase"] for m in report["measurements"]]
    assert phases == ["Error", "Error"]  # limit 1: the second error in a row rolls back
    assert "2 consecutive measurement errors (limit 1)" in report["rollout"]["reason"]
    assert "apm-latency" in report["measurements"][0]["errors"]
    assert weights == {"baseline": 100, "canary": 0}
    everything = res.stdout + res.stderr + "".join(
        p.read_text() for p in (tmp_path / "state" / "reports").iterdir())
    assert SECRET not in everything


def test_on_error_pause_holds_the_weight_until_a_person_acts(tmp_path: Path) -> None:
    async def go() -> None:
        async with DemoEnvironment(scenario="good", rate=100, duration=40) as env:
            spec = _spec(env, tmp_path, consecutiveErrorLimit=0, onError="pause")
            state = tmp_path / "state"
            proc = subprocess.Popen(
                [str(CANARYCTL), "run", str(spec), "--no-live", "--state-dir", str(state)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={"PATH": "/usr/bin:/bin", "DD_API_KEY": SECRET, "DD_APP_KEY": "x"})
            db = state / "canaryctl.db"
            deadline = time.monotonic() + 30
            phase = ""
            while time.monotonic() < deadline:
                if db.exists():
                    with sqlite3.connect(db) as conn:
                        row = conn.execute(
                            "SELECT phase FROM rollouts WHERE name='flaky-source'").fetchone()
                    phase = row[0] if row else ""
                    if phase == "Paused":
                        break
                await asyncio.sleep(0.1)
            assert phase == "Paused"
            from mesh.client import MeshClient

            async with MeshClient(env.admin_url, env.token) as client:
                assert (await client.get_weights("demo"))["canary"] == 10
            res = await asyncio.to_thread(canaryctl, "abort", "flaky-source",
                                          "--state-dir", str(state))
            assert res.returncode == 0, res.stderr
            out, err = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 1, out + err
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT phase FROM rollouts").fetchone()[0] == "Aborted"
            async with MeshClient(env.admin_url, env.token) as client:
                assert (await client.get_weights("demo"))["canary"] == 0

    asyncio.run(go())
