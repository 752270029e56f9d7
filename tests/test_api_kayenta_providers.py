"""Kayenta executions without inline data: `canaryctl serve --providers FILE` fetches
each metric of the canary config from the real Prometheus (backfilled with a stable, a
good and a bad version) and judges it, driven the way Argo Rollouts' kayenta provider and
Spinnaker's Kayenta stage drive Kayenta."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from canary.api.kayenta_queries import KayentaScope, QueryError, render
from tests.conftest import canaryctl
from tests.prometheus_server import PrometheusHandle, start_prometheus
from tests.test_api_contracts import TOKEN, ApiServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "pipelines"
CONFIG: dict[str, Any] = json.loads((EXAMPLES / "kayenta-canary-config.json").read_text())

STABLE, GOOD, BAD, GHOST = "5f7b9c6d48", "7c9d8f6b5", "84b6d7c9f", "0000000000"
MINUTES = 60
# Backfilled samples must be older than the head block Prometheus keeps in memory.
T0 = (int(time.time()) - 3 * 3600) // 60 * 60
START, END = T0 + 5 * 60, T0 + 55 * 60
BOUNDS = (0.05, 0.1, 0.2, 0.4, 0.8, float("inf"))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _openmetrics() -> str:
    """Per-minute latency histograms (600 requests a minute) and an error-ratio gauge;
    the bad version is four times slower and errs five times more."""
    lines = ["# TYPE http_request_duration_seconds histogram"]
    versions = {STABLE: (1, 0.05, 0.010), GOOD: (2, 0.05, 0.010), BAD: (3, 0.2, 0.05)}
    ratios: dict[str, np.ndarray] = {}
    for version, (seed, median, errors) in versions.items():
        rng = np.random.default_rng(seed)
        cumulative = np.zeros(len(BOUNDS))
        rows: list[list[str]] = [[] for _ in BOUNDS]
        for minute in range(MINUTES):
            latencies = rng.lognormal(np.log(median), 0.5, 600)
            counts = np.array([np.sum(latencies <= b) for b in BOUNDS], dtype=float)
            cumulative += counts
            for b, le in enumerate(BOUNDS):
                label = "+Inf" if le == float("inf") else f"{le:g}"
                rows[b].append(
                    f'http_request_duration_seconds_bucket{{service="checkout",'
                    f'rollouts_pod_template_hash="{version}",le="{label}"}} '
                    f"{cumulative[b]:.0f} {T0 + minute * 60}")
        for row in rows:
            lines.extend(row)
        ratios[version] = np.clip(rng.normal(errors, errors / 10, MINUTES), 0, 1)
    lines.append("# TYPE http_request_error_ratio gauge")
    for version, values in ratios.items():
        lines.extend(
            f'http_request_error_ratio{{service="checkout",rollouts_pod_template_hash='
            f'"{version}"}} {v:.5f} {T0 + i * 60}' for i, v in enumerate(values))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusHandle]:
    prom = start_prometheus(openmetrics=_openmetrics())
    try:
        prom.wait_for("http_request_error_ratio", at=T0 + 10 * 60)
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="module")
def server(prometheus: PrometheusHandle, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("kayenta-providers")
    accounts = {
        "prom": {"type": "prometheus", "url": prometheus.url, "timeout": 10},
        # Nothing listens there: every fetch fails.
        "broken": {"type": "prometheus", "url": f"http://127.0.0.1:{_closed_port()}",
                   "timeout": 2, "retries": 0},
    }
    providers = tmp / "providers.yaml"
    providers.write_text(yaml.safe_dump(accounts))
    srv = ApiServer(tmp, extra=("--kayenta-without-auth", "--providers", str(providers)))
    srv.start()
    try:
        with srv.client() as api:
            assert api.post("/canaryConfig", json=CONFIG).status_code == 200
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def anon(server: ApiServer) -> Iterator[httpx.Client]:
    # Argo's kayenta provider sends no Authorization header.
    with server.client(auth=False) as client:
        yield client


# -- Argo Rollouts' kayenta provider ------------------------------------------------------


def argo_scope(scope: str, start: str, end: str) -> dict[str, Any]:
    """Argo's ScopeDetail: scope, region, step, start, end."""
    return {"scope": scope, "region": "", "step": 60, "start": start, "end": end}


def argo_kayenta(client: httpx.Client, address: str, kayenta: dict[str, Any],
                 timeout: float = 30) -> tuple[str, dict[str, Any]]:
    """One measurement as Argo Rollouts' kayenta provider takes it: the config id by name
    (looked up with the storage account as configuration account), the job POST with its
    fixed payload, then GET /canary/{id} until complete and the score against the
    thresholds. Returns the phase (Successful, Inconclusive, Failed or Error: a missing
    score is a measurement error) and the last body."""
    listing = client.get(f"{address}/canaryConfig", params={
        "application": kayenta["application"],
        "configurationAccountName": kayenta["storageAccountName"]})
    if listing.status_code != 200:
        return "Error", {}
    config_id = next((c["id"] for c in listing.json()
                      if c["name"] == kayenta["canaryConfigName"]), "")
    scopes = {s["name"]: {"controlScope": s["controlScope"],
                          "experimentScope": s["experimentScope"]} for s in kayenta["scopes"]}
    threshold = kayenta["threshold"]
    res = client.post(f"{address}/canary/{config_id}", params={
        "application": kayenta["application"],
        "metricsAccountName": kayenta["metricsAccountName"],
        "configurationAccountName": kayenta["configurationAccountName"],
        "storageAccountName": kayenta["storageAccountName"]},
        json={"scopes": scopes, "thresholds": {"pass": threshold["pass"],
                                               "marginal": threshold["marginal"]}})
    if res.status_code != 200:
        return "Error", {"status": res.status_code, "body": res.text}
    execution = str(res.json().get("canaryExecutionId") or "")
    assert execution
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.get(f"{address}/canary/{execution}")
        if got.status_code != 200:
            return "Error", {}
        body = got.json()
        if not isinstance(body.get("complete"), bool):
            return "Error", body
        if body["complete"]:
            score = ((body.get("result") or {}).get("judgeResult") or {}).get(
                "score", {}).get("score")
            if not isinstance(score, int | float):
                return "Error", body  # Argo: "Missing Score"
            s = int(score)
            if s >= threshold["pass"]:
                return "Successful", body
            return ("Inconclusive" if s >= threshold["marginal"] else "Failed"), body
        time.sleep(0.1)
    raise AssertionError("Argo would still be polling")


def template_kayenta(server: ApiServer, canary: str, account: str = "prom"
                     ) -> tuple[str, dict[str, Any]]:
    """The example AnalysisTemplate's kayenta provider with its args filled in."""
    template = yaml.safe_load((EXAMPLES / "argo-kayenta-analysis-template.yaml").read_text())
    assert template["kind"] == "AnalysisTemplate"
    args = {"start-time": _iso(START), "end-time": _iso(END), "stable-hash": STABLE,
            "canary-hash": canary}
    text = re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: args[m.group(1)],
                  json.dumps(template["spec"]["metrics"][0]["provider"]["kayenta"]))
    kayenta = json.loads(text)
    kayenta["metricsAccountName"] = account
    address = kayenta.pop("address")
    assert address == "http://canaryctl.canaryctl.svc:8470"
    return server.url, kayenta


@pytest.mark.parametrize(("canary", "phase"), [(GOOD, "Successful"), (BAD, "Failed")])
def test_argo_kayenta_provider_fetches_from_prometheus(
        server: ApiServer, anon: httpx.Client, canary: str, phase: str) -> None:
    address, kayenta = template_kayenta(server, canary)
    got, body = argo_kayenta(anon, address, kayenta)
    assert got == phase, json.dumps(body)[:2000]
    assert body["status"] == "succeeded"
    results = {r["name"]: r for r in body["result"]["judgeResult"]["results"]}
    assert set(results) == {"latency-p99", "error-ratio"}
    # The data came from Prometheus: one point per step of the 50-minute window.
    for r in results.values():
        assert r["controlMetadata"]["stats"]["count"] == 51
        assert r["experimentMetadata"]["stats"]["count"] == 51
    latency = results["latency-p99"]
    if canary == BAD:
        assert latency["classification"] == "High"
        assert results["error-ratio"]["classification"] == "High"
        assert latency["experimentMetadata"]["stats"]["mean"] > \
            2 * latency["controlMetadata"]["stats"]["mean"]
    else:
        assert {r["classification"] for r in results.values()} == {"Pass"}


def test_provider_error_ends_terminal_with_exception(server: ApiServer,
                                                     anon: httpx.Client) -> None:
    address, kayenta = template_kayenta(server, GOOD, account="broken")
    got, body = argo_kayenta(anon, address, kayenta)
    assert got == "Error"  # never a pass: Argo counts a missing score as an error
    assert body["complete"] is True and body["status"] == "terminal"
    assert body["result"] is None
    errors = body["exception"]["details"]["errors"]
    assert errors and "broken" in errors[0]
    assert set(body["exception"]["details"]["metrics"]) == {"latency-p99", "error-ratio"}
    assert spinnaker_monitor(body, {"pass": 90, "marginal": 75})[0] == "TERMINAL"


def test_metric_without_data_is_nodata(server: ApiServer, anon: httpx.Client) -> None:
    address, kayenta = template_kayenta(server, GHOST)
    _, body = argo_kayenta(anon, address, kayenta)
    assert body["status"] == "succeeded"
    results = {r["name"]: r for r in body["result"]["judgeResult"]["results"]}
    assert results["latency-p99"]["classification"] == "Nodata"
    assert results["latency-p99"]["experimentMetadata"]["stats"]["count"] == 0
    # Kayenta's rule: with nanStrategy replace, missing data is a Pass.
    assert results["error-ratio"]["classification"] == "Pass"
    # A metric that must have data fails the run instead.
    config = json.loads(json.dumps(CONFIG))
    config["metrics"][1]["analysisConfigurations"]["canary"].update(
        mustHaveData=True, nanStrategy="remove")
    scope = {"default": {"controlScope": argo_scope(STABLE, _iso(START), _iso(END)),
                         "experimentScope": argo_scope(GHOST, _iso(START), _iso(END))}}
    with server.client() as api:
        res = api.post("/canary", params={"metricsAccountName": "prom"}, json={
            "canaryConfig": config, "executionRequest": {"scopes": scope}})
        assert res.status_code == 200, res.text
        body = poll(api, f"/canary/{res.json()['canaryExecutionId']}")
    results = {r["name"]: r for r in body["result"]["judgeResult"]["results"]}
    assert results["error-ratio"]["classification"] == "NodataFailMetric"
    assert body["result"]["judgeResult"]["score"]["classification"] == "Fail"


# -- Spinnaker's Kayenta stage (Orca's RunKayentaCanaryTask / MonitorKayentaCanaryTask) ---


def poll(client: httpx.Client, url: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, params=params).json()
        if body["complete"]:
            return dict(body)
        time.sleep(0.1)
    raise AssertionError("never complete")


def spinnaker_monitor(body: dict[str, Any], thresholds: Mapping[str, float]
                      ) -> tuple[str, dict[str, Any]]:
    """MonitorKayentaCanaryTask: status upper-cased into Orca's ExecutionStatus; on
    SUCCEEDED the score against the marginal threshold, on a halt the exception."""
    status = body["status"].upper()
    assert status in ("RUNNING", "SUCCEEDED", "TERMINAL", "CANCELED")
    if status == "SUCCEEDED":
        result = body["result"]
        score = result["judgeResult"]["score"]["score"]
        outputs = {"canaryScore": score, "durationString": result["canaryDuration"],
                   "lastUpdatedIso": body["endTimeIso"]}
        return ("TERMINAL" if score <= thresholds["marginal"] else "SUCCEEDED"), outputs
    if status in ("TERMINAL", "CANCELED"):
        return "TERMINAL", {"exception": body.get("exception")}
    return "RUNNING", {}


@pytest.mark.parametrize(("canary", "stage"), [(GOOD, "SUCCEEDED"), (BAD, "TERMINAL")])
def test_spinnaker_kayenta_stage(server: ApiServer, canary: str, stage: str) -> None:
    thresholds = {"pass": 90, "marginal": 75}
    with server.client() as api:
        config_id = next(c["id"] for c in api.get("/canaryConfig").json()
                         if c["name"] == "checkout-canary")

        def orca_scope(scope: str) -> dict[str, Any]:
            # Orca's CanaryScope: Instants as ISO strings, location, extendedScopeParams.
            return {"scope": scope, "location": "us-east-1", "start": _iso(START),
                    "end": _iso(END), "step": 60,
                    "extendedScopeParams": {"dataset": "regional"}}

        res = api.post(f"/canary/{config_id}", params={
            "application": "checkout", "parentPipelineExecutionId": "01HXYZ",
            "metricsAccountName": "prom", "configurationAccountName": "canaryctl",
            "storageAccountName": "canaryctl"},
            json={"scopes": {"default": {"controlScope": orca_scope(STABLE),
                                         "experimentScope": orca_scope(canary)}},
                  "thresholds": thresholds, "siteLocal": {}})
        assert res.status_code == 200, res.text
        body = poll(api, f"/canary/{res.json()['canaryExecutionId']}",
                    storageAccountName="canaryctl")
    got, outputs = spinnaker_monitor(body, thresholds)
    assert got == stage, outputs
    assert outputs["durationString"].startswith("PT")
    assert body["metricsAccountName"] == "prom" and body["configId"] == config_id
    assert body["canaryExecutionRequest"]["scopes"]["default"]["controlScope"]["scope"] == \
        STABLE


def test_extended_scope_params_feed_templates(server: ApiServer) -> None:
    config = {
        "name": "by-service", "templates": {},
        "metrics": [{"name": "error-ratio", "groups": ["errors"], "query": {
            "type": "prometheus", "metricName": "http_request_error_ratio",
            "customInlineTemplate":
                'service="${service}",rollouts_pod_template_hash="${scope}"'},
            "analysisConfigurations": {"canary": {"direction": "increase"}}}],
        "classifier": {"groupWeights": {"errors": 100}}}

    def scope(version: str) -> dict[str, Any]:
        return {"scope": version, "location": "", "start": START, "end": END, "step": 300,
                "extendedScopeParams": {"service": "checkout"}}

    with server.client() as api:
        res = api.post("/canary", params={"metricsAccountName": "prom"}, json={
            "canaryConfig": config, "executionRequest": {
            "scopes": {"default": {"controlScope": scope(STABLE),
                                   "experimentScope": scope(GOOD)}}}})
        assert res.status_code == 200, res.text
        body = poll(api, f"/canary/{res.json()['canaryExecutionId']}")
    result = body["result"]["judgeResult"]["results"][0]
    assert result["controlMetadata"]["stats"]["count"] == 11  # 50 minutes at 5-minute steps


def test_requests_that_cannot_be_fetched_are_400(server: ApiServer) -> None:
    scope = {"default": {"controlScope": argo_scope(STABLE, _iso(START), _iso(END)),
                         "experimentScope": argo_scope(GOOD, _iso(START), _iso(END))}}
    with server.client() as api:
        res = api.post("/canary", params={"metricsAccountName": "nope"},
                       json={"canaryConfig": CONFIG, "executionRequest": {"scopes": scope}})
        assert res.status_code == 400
        assert res.json()["error"] == ("request: metricsAccountName: a metrics account of this "
                                       "server (broken, prom), got 'nope'")
        # Two accounts and none named default: the request must name one.
        res = api.post("/canary", json={"canaryConfig": CONFIG,
                                        "executionRequest": {"scopes": scope}})
        assert res.status_code == 400 and "metricsAccountName" in res.json()["error"]
        bad = json.loads(json.dumps(CONFIG))
        bad["metrics"][0]["query"]["customInlineTemplate"] = "PromQL:up{x=\"${nope}\"}"
        res = api.post("/canary", params={"metricsAccountName": "prom"},
                       json={"canaryConfig": bad, "executionRequest": {"scopes": scope}})
        assert res.status_code == 400
        assert res.json()["error"].startswith(
            "request: canaryConfig.metrics[0].query.customInlineTemplate: template variable "
            "${nope} is not defined")
        bad["metrics"][0]["query"] = {"type": "signalfx", "metricName": "x"}
        res = api.post("/canary", params={"metricsAccountName": "prom"},
                       json={"canaryConfig": bad, "executionRequest": {"scopes": scope}})
        assert res.status_code == 400 and "metrics[0].query.type" in res.json()["error"]
        late = {"default": {"controlScope": argo_scope(STABLE, _iso(END), _iso(START)),
                            "experimentScope": argo_scope(GOOD, _iso(START), _iso(END))}}
        res = api.post("/canary", params={"metricsAccountName": "prom"},
                       json={"canaryConfig": CONFIG, "executionRequest": {"scopes": late}})
        assert res.status_code == 400
        assert "scopes.default.controlScope: end must be after start" in res.json()["error"]
        accounts = api.get("/credentials").json()
        assert [(a["name"], a["type"]) for a in accounts] == [("broken", "prometheus"),
                                                              ("prom", "prometheus")]
        assert all(a["supportedTypes"] == ["METRICS_STORE"] for a in accounts)


def test_serve_rejects_a_bad_providers_file(tmp_path: Path) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text("prom:\n  type: prometheus\n  url: ftp://nowhere\n")
    res = canaryctl("serve", "--port", "0", "--state-dir", str(tmp_path / "s"),
                    "--providers", str(bad), env={"CANARYCTL_API_TOKEN": TOKEN}, timeout=30)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith(f"{bad}: prom.url: "), line
    secret = tmp_path / "secret.yaml"
    secret.write_text("dd:\n  type: datadog\n  apiKey: abc123\n")
    res = canaryctl("serve", "--port", "0", "--state-dir", str(tmp_path / "s"),
                    "--providers", str(secret), env={"CANARYCTL_API_TOKEN": TOKEN}, timeout=30)
    assert res.returncode == 2 and "abc123" not in res.stderr
    assert res.stderr.startswith(f"{secret}: dd: apiKey: credentials may not be written")


# -- query rendering, Kayenta's rules ------------------------------------------------------


def _scope(**kw: Any) -> KayentaScope:
    return KayentaScope.model_validate({"scope": "myapp-v002", "start": 0, "end": 60, **kw})


def test_prometheus_query_forms() -> None:
    q = {"type": "prometheus", "metricName": "cpu", "labelBindings": ["job=\"api\""],
         "customFilterTemplate": "t", "groupByFields": ["zone", "pod"]}
    assert render(q, {"t": 'app="${scope}",region="${location}"'},
                  _scope(location="us-east1"), "q") == \
        'avg(cpu{app="myapp-v002",region="us-east1",job="api"}) by (zone,pod)'
    assert render({"type": "prometheus", "customInlineTemplate": "PromQL:sum(x{a=\"$\\{scope}\"})"},
                  {}, _scope(), "q") == 'sum(x{a="myapp-v002"})'
    assert render({"type": "prometheus", "metricName": "up", "scopeLabel": "version"},
                  {}, _scope(), "q") == 'avg(up{version="myapp-v002"})'
    assert render({"type": "prometheus", "metricName": "up", "resourceType": "gce_instance"},
                  {}, _scope(region="us-central1", extendedScopeParams={"project": "p1"}),
                  "q") == ('avg(up{instance=~"myapp-v002-.{4}",'
                           'zone=~".+/projects/p1/zones/us-central1-.{1}"})')
    assert render({"type": "prometheus", "metricName": "up"}, {},
                  _scope(location="eu-west-1",
                         extendedScopeParams={"resourceType": "aws_ec2_instance"}), "q") == \
        'avg(up{asg_groupName="myapp-v002",zone=~"eu-west-1.{1}"})'
    with pytest.raises(QueryError, match="custom filter"):
        render({"type": "prometheus", "metricName": "up"}, {}, _scope(), "q")
    with pytest.raises(QueryError) as info:
        render({"type": "prometheus", "metricName": "up", "customFilterTemplate": "missing"},
               {}, _scope(), "q")
    assert info.value.field == "q.customFilterTemplate"


def test_datadog_query_forms() -> None:
    assert render({"type": "datadog", "metricName": "system.cpu.user",
                   "customFilter": "host:${scope}"}, {}, _scope(), "q") == \
        "avg:system.cpu.user{host:myapp-v002}"
    assert render({"type": "datadog", "metricName": "max:trace.http.request.duration"},
                  {}, _scope(), "q") == "max:trace.http.request.duration{myapp-v002}"
    assert render({"type": "datadog", "metricName": "http.errors", "metricType": "COUNT",
                   "tags": ["env:prod"]}, {}, _scope(), "q") == \
        "sum:http.errors{myapp-v002,env:prod}.as_count()"


def test_a_restarted_server_finishes_a_stored_fetch(prometheus: PrometheusHandle,
                                                    tmp_path: Path) -> None:
    """An execution stored as RUNNING (its server died before judging) is fetched and
    judged by the next server over the same state, from the stored request alone."""
    from canary.api.run_store import RunStore

    scope = {"default": {"controlScope": argo_scope(STABLE, _iso(START), _iso(END)),
                         "experimentScope": argo_scope(BAD, _iso(START), _iso(END))}}
    request = {"scopes": scope, "thresholds": {"pass": 90, "marginal": 75}}
    store = RunStore(tmp_path / "state")
    rec = store.create_run("kayenta", {
        "body": {"name": CONFIG["name"], "thresholds": {"pass": 90, "marginal": 75}},
        "kayentaFetch": {"canaryConfig": CONFIG, "executionRequest": request,
                         "metricsAccountName": "prom"},
        "receivedAt": time.time(),
        "kayenta": {"application": "checkout", "executionRequest": request}}, "fetching")
    store.close()
    providers = tmp_path / "providers.yaml"
    providers.write_text(yaml.safe_dump({"prom": {"type": "prometheus",
                                                  "url": prometheus.url}}))
    srv = ApiServer(tmp_path, extra=("--providers", str(providers)))
    srv.start()
    try:
        with srv.client() as api:
            body = poll(api, f"/canary/{rec.id}")
    finally:
        srv.stop()
    assert body["status"] == "succeeded"
    assert body["result"]["judgeResult"]["score"]["classification"] == "Fail"


def test_datadog_metrics_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Datadog account (the contract-checked fake: no real Datadog here) answers the
    queries Kayenta's Datadog rule builds; the keys stay environment references."""
    from tests.fakes.datadog_fake import DatadogFake

    fake = DatadogFake("dd-api-key-0001", "dd-app-key-0001")
    fake.start()
    rng = np.random.default_rng(11)
    step_ms = [int((START + 60 * i) * 1000) for i in range(51)]
    for version, mean in (("stable", 0.10), ("bad", 0.30)):
        fake.metrics[f"avg:trace.http.request.duration{{version:{version},env:prod}}"] = [
            [t, float(v)] for t, v in zip(step_ms, rng.normal(mean, 0.01, 51), strict=True)]
    monkeypatch.setenv("KAYENTA_TEST_DD_API", fake.api_key)
    monkeypatch.setenv("KAYENTA_TEST_DD_APP", fake.app_key)
    providers = tmp_path / "providers.yaml"
    providers.write_text(yaml.safe_dump({"dd": {
        "type": "datadog", "url": fake.url, "apiKeyEnv": "KAYENTA_TEST_DD_API",
        "appKeyEnv": "KAYENTA_TEST_DD_APP", "retries": 0}}))
    config = {"name": "dd", "metrics": [{
        "name": "duration", "groups": ["latency"],
        "query": {"type": "datadog", "metricName": "trace.http.request.duration",
                  "customInlineTemplate": "version:${scope},env:prod"},
        "analysisConfigurations": {"canary": {"direction": "increase", "critical": True}}}],
        "classifier": {"groupWeights": {"latency": 100}}}
    scope = {"default": {"controlScope": argo_scope("stable", _iso(START), _iso(END)),
                         "experimentScope": argo_scope("bad", _iso(START), _iso(END))}}
    srv = ApiServer(tmp_path, extra=("--providers", str(providers)))
    srv.start()
    try:
        with srv.client() as api:
            res = api.post("/canary", json={"canaryConfig": config, "executionRequest": {
                "scopes": scope, "thresholds": {"pass": 90, "marginal": 75}}})
            assert res.status_code == 200, res.text
            body = poll(api, f"/canary/{res.json()['canaryExecutionId']}")
    finally:
        srv.stop()
        fake.stop()
    assert fake.violations == []
    result = body["result"]["judgeResult"]
    assert result["results"][0]["classification"] == "High"
    assert result["results"][0]["controlMetadata"]["stats"]["count"] == 51
    assert result["score"]["score"] == 0
    assert fake.api_key not in json.dumps(body)


def test_several_series_per_scope_end_terminal(server: ApiServer) -> None:
    # Kayenta would judge each groupBy series apart; canaryctl judges one series per
    # metric and scope, and says so rather than pick one.
    config = json.loads(json.dumps(CONFIG))
    config["metrics"][1]["query"] = {
        "type": "prometheus", "metricName": "http_request_error_ratio",
        "customInlineTemplate": 'service="checkout"',
        "groupByFields": ["rollouts_pod_template_hash"]}
    scope = {"default": {"controlScope": argo_scope(STABLE, _iso(START), _iso(END)),
                         "experimentScope": argo_scope(GOOD, _iso(START), _iso(END))}}
    with server.client() as api:
        res = api.post("/canary", params={"metricsAccountName": "prom"},
                       json={"canaryConfig": config, "executionRequest": {"scopes": scope}})
        assert res.status_code == 200, res.text
        body = poll(api, f"/canary/{res.json()['canaryExecutionId']}")
    assert body["status"] == "terminal" and body["result"] is None
    assert "3 series" in body["exception"]["details"]["errors"][0]
    assert list(body["exception"]["details"]["metrics"]) == ["error-ratio"]
