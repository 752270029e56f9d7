"""`canaryctl serve` driven the way its callers drive it: Spinnaker's Webhook stage,
Argo Rollouts' web and kayenta providers, Flagger's webhooks, a Kayenta client. The real
server runs as a subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import CANARYCTL, ROOT

TOKEN = "test-token-5f1c"
SPINNAKER_STATUSES = {"RUNNING", "SUCCEEDED", "FAILED", "CANCELED"}

KAYENTA_CONFIG: dict[str, Any] = {
    "name": "checkout-canary",
    "applications": ["checkout"],
    "metrics": [
        {"name": "latency", "groups": ["perf"], "query": {"type": "prometheus"},
         "analysisConfigurations": {"canary": {"direction": "increase", "critical": True}}},
        {"name": "errors", "groups": ["errors"], "query": {"type": "prometheus"},
         "analysisConfigurations": {"canary": {"direction": "increase"}}},
    ],
    "classifier": {"groupWeights": {"perf": 50, "errors": 50},
                   "scoreThresholds": {"pass": 75, "marginal": 50}},
}

ANALYSIS_SPEC: dict[str, Any] = {
    "judge": "mann-whitney",
    "metrics": [{"name": "latency", "provider": "rec", "query": "latency",
                 "direction": "increase"}],
}


def pairs(bad: bool, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    control = rng.normal(100, 5, 60)
    experiment = rng.normal(160 if bad else 100, 5, 60)
    errs = rng.normal(1, 0.1, 60)
    return [
        {"name": "latency", "tags": {"le": "p99"},
         "values": {"control": control.round(3).tolist(),
                    "experiment": experiment.round(3).tolist()}},
        {"name": "errors", "tags": {},
         "values": {"control": errs.round(3).tolist(), "experiment": errs.round(3).tolist()}},
    ]


def recording(path: Path, bad: bool) -> Path:
    rng = np.random.default_rng(7)
    doc = {"metrics": {"latency": {
        "baseline": {"values": rng.normal(100, 5, 60).round(3).tolist()},
        "canary": {"values": rng.normal(160 if bad else 100, 5, 60).round(3).tolist()},
    }}}
    path.write_text(json.dumps(doc))
    return path


class ApiServer:
    """`canaryctl serve` as a subprocess; restartable over the same state directory."""

    def __init__(self, tmp: Path, extra: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.tmp / f"serve-{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if k != "CANARYCTL_API_TOKEN"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(CANARYCTL), "serve", "--port", "0", "--state-dir", str(self.state),
                 "--token-file", str(self.token_file), *self.extra],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            found = re.search(r"listening on (http://[\d.]+:\d+)", text)
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"canaryctl serve exited: {text}")
            time.sleep(0.05)
        raise RuntimeError("canaryctl serve did not start in 30 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    srv = ApiServer(tmp_path_factory.mktemp("api"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


# -- a Spinnaker Webhook stage with "wait for completion" ------------------------------


def spinnaker_webhook_stage(client: httpx.Client, url: str, payload: dict[str, Any],
                            timeout: float = 30) -> tuple[str, list[str], dict[str, Any]]:
    """Behaves as the stage configured with statusUrlResolution=locationHeader,
    statusJsonPath=$.status, progressJsonPath=$.progress and Spinnaker's default status
    lists: anything else than the listed statuses keeps it polling."""
    res = client.post(url, json=payload)
    assert 200 <= res.status_code < 300, res.text
    status_url = res.headers["Location"]
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll = client.get(status_url)
        assert poll.status_code == 200, poll.text
        body = poll.json()
        status, progress = body["status"], body["progress"]
        assert isinstance(progress, str)
        seen.append(status)
        if status in ("SUCCEEDED", "CANCELED", "FAILED"):
            return status, seen, body
        time.sleep(0.05)
    raise AssertionError(f"Spinnaker would still be polling: {seen[-3:]}")


def test_openapi_is_public_and_everything_else_needs_the_token(server: ApiServer) -> None:
    with server.client(auth=False) as anon:
        doc = anon.get("/openapi.json")
        assert doc.status_code == 200
        paths = doc.json()["paths"]
        for path in ("/api/v1/analyses", "/api/v1/analyses/{run_id}", "/api/v1/verdict",
                     "/api/v1/rollouts", "/api/v1/flagger/{hook}", "/canary",
                     "/canary/{run_id}", "/standalone_canary_analysis"):
            assert path in paths, path
        for method, path in (("GET", "/api/v1/analyses/x"), ("POST", "/api/v1/analyses"),
                             ("POST", "/api/v1/verdict"), ("GET", "/canary/x"),
                             ("POST", "/api/v1/flagger/rollout"), ("GET", "/canaryConfig")):
            res = anon.request(method, path, json={})
            assert res.status_code == 401, (method, path, res.status_code)
            assert res.headers["www-authenticate"] == "Bearer"
        wrong = anon.get("/api/v1/analyses/x", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert TOKEN not in wrong.text


@pytest.mark.parametrize(("bad", "expected"), [(False, "SUCCEEDED"), (True, "FAILED")])
def test_spinnaker_webhook_stage_sees_only_its_four_statuses(
        api: httpx.Client, bad: bool, expected: str) -> None:
    status, seen, body = spinnaker_webhook_stage(
        api, "/api/v1/analyses", {"name": "checkout", "config": KAYENTA_CONFIG,
                                  "data": pairs(bad)})
    assert status == expected
    assert set(seen) <= SPINNAKER_STATUSES
    assert body["verdict"] == ("Fail" if bad else "Pass")
    assert body["judgeResult"]["score"]["score"] == body["score"]
    latency = next(r for r in body["judgeResult"]["results"] if r["name"] == "latency")
    assert latency["classification"] == ("High" if bad else "Pass")


def test_spinnaker_post_answers_202_with_location_and_cancel(
        api: httpx.Client, tmp_path: Path) -> None:
    rec = recording(tmp_path / "rec.json", bad=False)
    res = api.post("/api/v1/analyses", json={
        "analysis": ANALYSIS_SPEC, "service": "checkout", "window": {"duration": "60s"},
        "providers": {"rec": {"type": "file", "path": str(rec)}}})
    assert res.status_code == 202, res.text
    body = res.json()
    assert res.headers["Location"] == body["statusUrl"]
    assert body["status"] == "RUNNING"
    running = api.get(body["statusUrl"]).json()
    assert running["status"] == "RUNNING" and "window" in running["progress"]
    canceled = api.post(body["cancelUrl"])
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    assert api.get(body["statusUrl"]).json()["status"] == "CANCELED"
    # Canceling again is harmless, and the status stays.
    assert api.post(body["cancelUrl"]).json()["status"] == "CANCELED"


def test_bad_input_is_400_with_one_line_naming_the_field(api: httpx.Client) -> None:
    res = api.post("/api/v1/analyses", json={"config": KAYENTA_CONFIG,
                                              "data": [{"name": "nope", "values": {
                                                  "control": [1], "experiment": [1]}}]})
    assert res.status_code == 400
    assert res.json()["error"] == ("request: data[0].name: a metric named in the config, "
                                   "got 'nope'")
    res = api.post("/api/v1/analyses", json={"analysis": ANALYSIS_SPEC, "service": "x",
                                              "window": {"last": "5m"}, "providers": {}})
    assert res.status_code == 400
    assert "analysis.metrics[0].provider" in res.json()["error"]
    assert api.get("/api/v1/analyses/unknown").status_code == 404


# -- Argo Rollouts' web provider ---------------------------------------------------------


def argo_web_measurement(client: httpx.Client, method: str, url: str, body: Any,
                         json_path: str, success: str, failure: str | None = None) -> str:
    """Argo's web metric: non-2xx is Error; otherwise jsonPath picks `result` and the
    conditions decide Successful, Failed or Inconclusive."""
    res = client.request(method, url, json=body)
    if not 200 <= res.status_code < 300:
        return "Error"
    value: Any = res.json()
    path = json_path.strip("{}")
    assert path.startswith("$")
    for part in [p for p in path[1:].split(".") if p]:
        value = value[part]

    def ns(v: Any) -> Any:
        return SimpleNamespace(**{k: ns(x) for k, x in v.items()}) if isinstance(v, dict) else v

    env = {"result": ns(value)}
    if eval(success, {}, env):
        return "Successful"
    if failure is None or eval(failure, {}, env):
        return "Failed"
    return "Inconclusive"


@pytest.mark.parametrize(("bad", "phase"), [(False, "Successful"), (True, "Failed")])
def test_argo_web_provider_gets_200_and_the_verdict_even_for_fail(
        api: httpx.Client, bad: bool, phase: str) -> None:
    body = {"config": KAYENTA_CONFIG, "data": pairs(bad)}
    res = api.post("/api/v1/verdict", json=body)
    assert res.status_code == 200
    assert res.json()["verdict"] == ("Fail" if bad else "Pass")
    assert argo_web_measurement(api, "POST", "/api/v1/verdict", body, "{$}",
                                'result.verdict == "Pass"', 'result.verdict == "Fail"') == phase
    assert argo_web_measurement(api, "POST", "/api/v1/verdict", body, "{$.score}",
                                "result >= 75") == phase


def test_argo_web_provider_sees_a_measurement_error_as_error(
        api: httpx.Client, tmp_path: Path) -> None:
    body = {"analysis": ANALYSIS_SPEC, "service": "checkout", "window": {"last": "1m"},
            "providers": {"rec": {"type": "file", "path": str(tmp_path / "missing.json")}}}
    assert argo_web_measurement(api, "POST", "/api/v1/verdict", body, "{$}",
                                'result.verdict == "Pass"') == "Error"


def test_argo_web_provider_get_on_an_analysis(api: httpx.Client, tmp_path: Path) -> None:
    rec = recording(tmp_path / "rec.json", bad=True)
    started = api.post("/api/v1/analyses", json={
        "analysis": ANALYSIS_SPEC, "service": "checkout", "window": {"last": "5m"},
        "providers": {"rec": {"type": "file", "path": str(rec)}}}).json()
    url = f"/api/v1/analyses/{started['id']}/verdict?wait=20"
    assert argo_web_measurement(api, "GET", url, None, "{$.verdict}",
                                'result == "Pass"', 'result == "Fail"') == "Failed"


# -- Flagger webhooks --------------------------------------------------------------------


def flagger_payload(hook: str, **metadata: str) -> dict[str, Any]:
    return {"name": "podinfo", "namespace": "test", "phase": "Progressing",
            "checksum": "85d557f47b", "type": hook, "metadata": metadata or None}


@pytest.mark.parametrize(("hook", "default"), [
    ("confirm-rollout", 403), ("pre-rollout", 200), ("rollout", 200),
    ("confirm-traffic-increase", 403), ("confirm-promotion", 403), ("post-rollout", 200),
    ("rollback", 403), ("event", 200)])
def test_flagger_webhooks_status_codes_and_gates(api: httpx.Client, hook: str,
                                                 default: int) -> None:
    name = f"podinfo-{hook}"
    payload = {**flagger_payload(hook), "name": name}
    assert api.post(f"/api/v1/flagger/{hook}", json=payload).status_code == default
    if hook == "event":
        return
    flipped = "open" if default == 403 else "close"
    gate = api.post(f"/api/v1/flagger/gates/test/{name}/{hook}/{flipped}")
    assert gate.status_code == 200 and gate.json()["open"] is (flipped == "open")
    assert api.post(f"/api/v1/flagger/{hook}", json=payload).status_code == (
        200 if default == 403 else 403)
    calls = api.get(f"/api/v1/flagger/test/{name}/calls").json()
    assert [c["answer"] for c in calls] == [default, 200 if default == 403 else 403]


def test_flagger_rollout_hook_answers_with_an_analysis(api: httpx.Client) -> None:
    ids = {}
    for bad in (False, True):
        _, _, body = spinnaker_webhook_stage(api, "/api/v1/analyses",
                                             {"config": KAYENTA_CONFIG, "data": pairs(bad)})
        ids[bad] = body["id"]
    good = api.post("/api/v1/flagger/rollout",
                    json=flagger_payload("rollout", analysisId=ids[False]))
    assert good.status_code == 200
    halted = api.post("/api/v1/flagger/rollout",
                      json=flagger_payload("rollout", analysisId=ids[True]))
    assert halted.status_code == 403 and "Fail" in halted.json()["reason"]
    assert api.post("/api/v1/flagger/rollout", json={"namespace": "x"}).status_code >= 400
    assert api.post("/api/v1/flagger/not-a-hook", json=flagger_payload("x")).status_code >= 400


# -- Kayenta subset, read as Argo Rollouts' kayenta provider and Spinnaker read it ------


def argo_kayenta_measurement(client: httpx.Client, config_name: str, application: str,
                             pass_: int, marginal: int, data: list[dict[str, Any]]) -> str:
    listing = client.get("/canaryConfig", params={"application": application,
                                                  "configurationAccountName": "store"})
    assert listing.status_code == 200
    config_id = next(c["id"] for c in listing.json() if c["name"] == config_name)
    scope = {"scope": "app", "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:10:00Z",
             "step": 60}
    res = client.post(f"/canary/{config_id}", params={
        "application": application, "metricsAccountName": "prom",
        "configurationAccountName": "store", "storageAccountName": "store"},
        json={"scopes": {"default": {"controlScope": scope, "experimentScope": scope}},
              "thresholds": {"pass": pass_, "marginal": marginal}, "metricSetPairs": data})
    assert res.status_code == 200, res.text
    execution = str(res.json()["canaryExecutionId"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = client.get(f"/canary/{execution}")
        assert got.status_code == 200
        body = got.json()
        if body["complete"] is True:
            # What Spinnaker's Kayenta stage reads too.
            assert body["status"].upper() in ("SUCCEEDED", "TERMINAL", "CANCELED")
            assert isinstance(body["application"], str)
            assert body["result"]["canaryDuration"].startswith("PT")
            assert all("stats" in r["controlMetadata"]
                       for r in body["result"]["judgeResult"]["results"])
            score = int(body["result"]["judgeResult"]["score"]["score"])
            if score >= pass_:
                return "Successful"
            return "Inconclusive" if score >= marginal else "Failed"
        assert body["complete"] is False
        time.sleep(0.05)
    raise AssertionError("never complete")


@pytest.mark.parametrize(("bad", "phase"), [(False, "Successful"), (True, "Failed")])
def test_kayenta_endpoints_as_argo_kayenta_provider_reads_them(
        api: httpx.Client, bad: bool, phase: str) -> None:
    saved = api.post("/canaryConfig", json=KAYENTA_CONFIG)
    assert saved.status_code == 200
    assert api.get(f"/canaryConfig/{saved.json()['canaryConfigId']}").json()["name"] == \
        "checkout-canary"
    assert argo_kayenta_measurement(api, "checkout-canary", "checkout", 90, 60,
                                    pairs(bad)) == phase


def test_kayenta_adhoc_and_standalone(api: httpx.Client) -> None:
    res = api.post("/canary", json={"canaryConfig": KAYENTA_CONFIG, "executionRequest": {
        "thresholds": {"pass": 75, "marginal": 50}, "metricSetPairs": pairs(True)}})
    assert res.status_code == 200
    execution = res.json()["canaryExecutionId"]
    deadline = time.monotonic() + 20
    while (body := api.get(f"/canary/{execution}").json())["complete"] is False:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["result"]["judgeResult"]["score"]["classification"] == "Fail"
    res = api.post("/standalone_canary_analysis", json={
        "canaryConfig": KAYENTA_CONFIG,
        "executionRequest": {"thresholds": {"pass": 75, "marginal": 50},
                             "metricSetPairs": pairs(False)}})
    assert res.status_code == 200
    sid = res.json()["canaryAnalysisExecutionId"]
    while (body := api.get(f"/standalone_canary_analysis/{sid}").json())["complete"] is False:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["executionStatus"] == "SUCCEEDED"
    assert body["canaryAnalysisExecutionResult"]["didPassThresholds"] is True
    missing = api.post("/canary", json={"canaryConfig": KAYENTA_CONFIG,
                                        "executionRequest": {"scopes": {}}})
    assert missing.status_code == 400 and "metricSetPairs" in missing.json()["error"]


def test_rollout_endpoints_validate_and_name_unknown_rollouts(api: httpx.Client) -> None:
    res = api.post("/api/v1/rollouts", json={"apiVersion": "canaryctl.io/v1", "kind": "Rollout",
                                             "metadata": {"name": "Bad_Name"}, "spec": {}})
    assert res.status_code == 400
    assert res.json()["error"].startswith("request: metadata.name: ")
    assert api.get("/api/v1/rollouts/nope").status_code == 404
    for action in ("pause", "resume", "promote", "abort", "cancel"):
        assert api.post(f"/api/v1/rollouts/nope/{action}").status_code == 404


def test_flagger_without_auth_opens_only_the_hook_endpoint(tmp_path: Path) -> None:
    # Flagger's webhook spec cannot carry a header: with --flagger-without-auth its hook
    # calls need no token, while gates and everything else still do.
    srv = ApiServer(tmp_path, extra=("--flagger-without-auth",))
    srv.start()
    try:
        with srv.client(auth=False) as anon:
            payload = flagger_payload("pre-rollout")
            assert anon.post("/api/v1/flagger/pre-rollout", json=payload).status_code == 200
            gate = "/api/v1/flagger/gates/test/podinfo/pre-rollout/close"
            assert anon.post(gate).status_code == 401
            assert anon.get("/api/v1/analyses/nope").status_code == 401
    finally:
        srv.stop()
