"""Whole rollouts through the real proxy with real services and load: `canaryctl demo`,
and `canaryctl run` killed with SIGKILL mid-rollout and resumed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from canary.demo_env import DemoEnvironment
from tests.conftest import CANARYCTL, ROOT, canaryctl

pytestmark = pytest.mark.slow


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize(("scenario", "code", "verdict"),
                         [("good", 0, "Promoted"), ("bad", 1, "Failed")])
def test_demo_ends_with_the_right_verdict_and_a_report(tmp_path: Path, scenario: str,
                                                       code: int, verdict: str) -> None:
    reports = tmp_path / "reports"
    res = canaryctl("demo", "--scenario", scenario, "--no-live", "--interval", "4",
                    "--state-dir", str(tmp_path / "state"), "--report-dir", str(reports),
                    timeout=90)
    assert res.returncode == code, res.stdout + res.stderr
    # Plain progress lines, not the live view, when not on a terminal.
    assert "weight" in res.stdout and "\x1b[" not in res.stdout
    report = _report(reports / f"demo-{scenario}.json")
    assert report["rollout"]["verdict"] == verdict
    names = {m["name"]: m["classification"] for m in report["metrics"]}
    assert set(names) == {"error-rate", "latency-p99", "latency"}
    if scenario == "bad":
        assert any(c in ("High", "NodataFailMetric") for c in names.values()), names
    else:
        assert set(names.values()) == {"Pass"}, names
    md = (reports / f"demo-{scenario}.md").read_text()
    assert verdict.lower() in md.splitlines()[0].lower()
    assert str(reports / f"demo-{scenario}.json") in res.stdout


def _phase(db: Path, name: str) -> tuple[str, int, str | None]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT phase, step_index, window_start FROM rollouts WHERE name=?",
                           (name,)).fetchone()
    return (row[0], row[1], row[2]) if row else ("", -1, None)


async def _canary_requests(env: DemoEnvironment, start: float, end: float) -> int:
    async with httpx.AsyncClient() as client:
        res = await client.get(
            f"{env.admin_url}/admin/v1/stats",
            params={"service": "demo", "start": start, "end": end},
            headers={"Authorization": f"Bearer {env.token}"},
        )
        res.raise_for_status()
        return int(res.json()["versions"]["canary"]["requests"])


async def _weights(env: DemoEnvironment) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        res = await client.get(f"{env.admin_url}/admin/v1/routes",
                               headers={"Authorization": f"Bearer {env.token}"})
        res.raise_for_status()
        body = res.json()
    for listener in body["listeners"]:
        for service in listener["services"]:
            if service["name"] == "demo":
                return {k: int(v) for k, v in service["weights"].items()}
    raise AssertionError(body)


def test_sigkill_mid_rollout_resumes_and_rolls_back(tmp_path: Path) -> None:
    asyncio.run(_sigkill_scenario(tmp_path))


async def _sigkill_scenario(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with DemoEnvironment(scenario="bad", rate=250, duration=80) as env:
        doc = env.rollout_document("sequential", 4.0)
        doc["metadata"]["name"] = "killed"
        spec = tmp_path / "rollout.yaml"
        spec.write_text(yaml.safe_dump(doc))
        argv = [str(CANARYCTL), "run", str(spec), "--no-live", "--state-dir", str(state)]
        first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        db = state / "canaryctl.db"
        deadline = time.monotonic() + 30
        # Kill inside the first analysis step: weight set, window open, no verdict yet.
        while time.monotonic() < deadline:
            if db.exists():
                phase, step, window = _phase(db, "killed")
                if step == 1 and window is not None:
                    break
            await asyncio.sleep(0.05)
        else:
            first.kill()
            raise AssertionError("rollout never reached its first analysis step")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        phase, step, _ = _phase(db, "killed")
        assert phase == "Progressing" and step == 1
        assert (await _weights(env))["canary"] == 10  # the killed run left its weight

        second = await asyncio.to_thread(
            subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "resumed" in second.stdout
        with sqlite3.connect(db) as conn:
            verdict, phase = conn.execute(
                "SELECT verdict, phase FROM rollouts WHERE name='killed'").fetchone()
            (rolled_back_at,) = conn.execute(
                "SELECT ts FROM events WHERE rollout='killed' AND kind='rolledback'"
            ).fetchone()
            steps = [r[0] for r in conn.execute(
                "SELECT step_index FROM measurements WHERE rollout='killed'")]
        assert (verdict, phase) == ("Failed", "RolledBack")
        assert steps and min(steps) >= 1  # continued at the step it was killed in
        assert (await _weights(env)) == {"baseline": 100, "canary": 0}
        # Load keeps flowing; none of it reaches the failed canary after the rollback.
        await asyncio.sleep(1.5)
        assert await _canary_requests(env, rolled_back_at + 0.6, time.time()) == 0


def test_a_decided_rollback_is_finished_by_the_next_run(tmp_path: Path) -> None:
    asyncio.run(_decided_rollback(tmp_path))


async def _decided_rollback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with DemoEnvironment(scenario="good", rate=100, duration=40) as env:
        doc = env.rollout_document("sequential", 30.0)
        doc["metadata"]["name"] = "half-done"
        spec = tmp_path / "rollout.yaml"
        spec.write_text(yaml.safe_dump(doc))
        # A controller that decided to roll back and died before telling the proxy.
        from canary.controller import spec_hash
        from canary.spec_loader import load_rollout
        from canary.store import Store

        rollout = load_rollout(spec)
        store = Store(state)
        store.create_rollout("half-done", rollout.model_dump(mode="json", by_alias=True),
                             spec_hash(rollout), str(spec))
        store.update_rollout("half-done", phase="RollingBack", verdict="Failed",
                             message="latency regression", step_index=1,
                             weights={"baseline": 100, "canary": 0})
        store.close()
        async with httpx.AsyncClient() as client:
            res = await client.put(f"{env.admin_url}/admin/v1/services/demo/weights",
                                   json={"baseline": 50, "canary": 50},
                                   headers={"Authorization": f"Bearer {env.token}"})
            res.raise_for_status()
        res = await asyncio.to_thread(
            canaryctl, "resume", "half-done", "--no-live", "--state-dir", str(state),
            env={"CANARYCTL_STATE_DIR": str(state)})
        assert res.returncode == 1, res.stdout + res.stderr
        assert (await _weights(env)) == {"baseline": 100, "canary": 0}


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("PPid:"))
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_demo_leaves_no_process_behind(tmp_path: Path, sig: signal.Signals) -> None:
    demo = subprocess.Popen(
        [str(CANARYCTL), "demo", "--interval", "30", "--no-live",
         "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 4:  # 2 apps, proxy, load
        children = _children(demo.pid)
        time.sleep(0.1)
    assert len(children) == 4, children
    demo.send_signal(sig)
    code = demo.wait(30)
    if sig == signal.SIGTERM:
        # Terminated like Ctrl-C: the demo rolls back, reports, and exits 1.
        assert code == 1, demo.stderr.read() if demo.stderr else ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]
