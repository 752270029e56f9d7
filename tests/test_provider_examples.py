"""Each provider's example rollout spec, run for real: traffic moves on the real mesh
proxy while the judge reads the real Prometheus (scraping that proxy), the Datadog and
Splunk fakes held to their vendors' contracts, or a recording."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.demo_env import DemoEnvironment
from tests.conftest import ROOT, canaryctl
from tests.fakes.datadog_fake import DatadogFake
from tests.fakes.splunk_fake import SplunkFake
from tests.prometheus_server import start_prometheus

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "examples" / "providers"
INTERVAL = 2.0


def _localize(name: str, env: DemoEnvironment, tmp_path: Path,
              provider_patch: dict[str, Any] | None = None) -> Path:
    """The example as a user would run it, pointed at this test's mesh and sources."""
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    spec = doc["spec"]
    spec["service"] = "demo"
    spec["baseline"]["endpoints"] = [f"127.0.0.1:{env.version_ports['baseline']}"]
    spec["canary"]["endpoints"] = [f"127.0.0.1:{env.version_ports['canary']}"]
    spec["mesh"] = {"admin": env.admin_url, "tokenFile": env.token_file}
    spec["interval"] = spec["analysis"]["interval"] = f"{INTERVAL}s"
    for provider_name, patch in (provider_patch or {}).items():
        spec["providers"][provider_name].update(patch)
    out = tmp_path / name
    out.write_text(yaml.safe_dump(doc))
    return out


def _run(spec: Path, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = canaryctl("run", str(spec), "--no-live", "--format", "json",
                    "--state-dir", str(tmp_path / "state"), timeout=120, env=env)
    assert res.returncode == 1, res.stdout + res.stderr  # every example's canary is bad
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    report = json.loads(Path(summary["reports"]["json"]).read_text())
    assert report["rollout"]["verdict"] == "Failed"
    return report


def _classes(report: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["classification"] for m in report["metrics"]}


def test_prometheus_example_scraping_the_mesh_during_a_rollout(tmp_path: Path) -> None:
    asyncio.run(_prometheus(tmp_path))


async def _prometheus(tmp_path: Path) -> None:
    async with DemoEnvironment(scenario="bad", rate=250, duration=60) as env:
        admin = env.admin_url.removeprefix("http://")
        prom = await asyncio.to_thread(start_prometheus, scrape_targets=[admin],
                                       scrape_interval="0.5s")
        try:
            await asyncio.to_thread(prom.wait_for, "canaryctl_mesh_requests_total")
            spec = _localize("prometheus-rollout.yaml", env, tmp_path,
                             {"prom": {"url": prom.url}})
            report = await asyncio.to_thread(_run, spec, tmp_path)
        finally:
            prom.stop()
    classes = _classes(report)
    assert set(classes) == {"error-rate", "latency"}
    assert "High" in classes.values(), classes
    # The numbers came from Prometheus's view of the mesh: the baseline really served.
    first = report["measurements"][0]
    assert not first["errors"], first["errors"]


def _points(start: float, end: float, value: float, noise: float,
            rng: random.Random) -> list[list[float]]:
    # Datadog's contract: timestamps are integer milliseconds.
    return [[t * 1000, value + rng.gauss(0, noise)] for t in range(int(start), int(end))]


def test_datadog_example_against_the_contract_checked_fake(tmp_path: Path) -> None:
    rng = random.Random(7)
    fake = DatadogFake(api_key="dd-api-secret-1234", app_key="dd-app-secret-5678")
    now = time.time()
    lo, hi = now - 60, now + 120
    for version, latency, errors in (("v1.4.2", 100.0, 0.1), ("v1.5.0", 135.0, 4.0)):
        tags = f"{{service:demo,version:{version}}}"
        fake.metrics[f"p95:trace.http.request.duration{tags}"] = _points(lo, hi, latency, 4,
                                                                         rng)
        fake.metrics[f"sum:trace.http.request.errors{tags}.as_count()"] = [
            [t * 1000, float(rng.random() < errors / 10) * 10] for t in range(int(lo), int(hi))]
        fake.metrics[f"sum:trace.http.request.hits{tags}.as_count()"] = [
            [t * 1000, 100.0] for t in range(int(lo), int(hi))]
    url = fake.start()
    try:
        async def go() -> dict[str, Any]:
            async with DemoEnvironment(scenario="good", rate=100, duration=60) as env:
                spec = _localize("datadog-rollout.yaml", env, tmp_path, {"dd": {"url": url}})
                return await asyncio.to_thread(
                    _run, spec, tmp_path,
                    {"DD_API_KEY": fake.api_key, "DD_APP_KEY": fake.app_key})

        report = asyncio.run(go())
    finally:
        fake.stop()
    assert fake.violations == []
    assert fake.requests, "the provider never called Datadog"
    classes = _classes(report)
    assert set(classes) == {"latency-p95", "error-rate"}
    assert "High" in classes.values(), classes
    text = json.dumps(report)
    assert fake.api_key not in text and fake.app_key not in text


def test_splunk_example_against_the_contract_checked_fake(tmp_path: Path) -> None:
    rng = random.Random(11)
    fake = SplunkFake(token="splunk-token-secret-42")
    now = int(time.time())
    for version, latency, errors in (("v1.4.2", 100.0, 2), ("v1.5.0", 140.0, 60)):
        base = f'search index=web service="demo" version="{version}"'
        fake.searches[f"{base} | timechart span=1s avg(latency) by version"] = [
            {"_time": datetime.fromtimestamp(now - 30 + i, UTC).isoformat(),
             version: f"{latency + rng.gauss(0, 4):.2f}"} for i in range(30)]
        fake.searches[f"{base} | stats count(eval(status>=500)) as events count as trials"] = [
            {"events": str(errors), "trials": "1000"}]
    url = fake.start()
    try:
        async def go() -> dict[str, Any]:
            async with DemoEnvironment(scenario="good", rate=100, duration=60) as env:
                spec = _localize("splunk-rollout.yaml", env, tmp_path, {"splunk": {"url": url}})
                return await asyncio.to_thread(_run, spec, tmp_path,
                                               {"SPLUNK_TOKEN": fake.token})

        report = asyncio.run(go())
    finally:
        fake.stop()
    assert fake.violations == []
    classes = _classes(report)
    assert "High" in (classes["latency"], classes["error-rate"]), classes
    assert fake.token not in json.dumps(report)


def test_file_example_replays_the_recording(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "recorded.json", tmp_path / "recorded.json")

    async def go() -> dict[str, Any]:
        async with DemoEnvironment(scenario="good", rate=100, duration=60) as env:
            spec = _localize("file-rollout.yaml", env, tmp_path)
            return await asyncio.to_thread(_run, spec, tmp_path)

    report = asyncio.run(go())
    assert "High" in _classes(report).values()
