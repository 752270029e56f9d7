"""examples/pipelines/ driven against a running `canaryctl serve`, each the way its tool
would: its URL, method, headers, body, and how the tool reads the answer.

What the tests substitute, and only that: the server's address for the example's host,
the token for the tool's secret reference, the tool's own template parameters, and a
recording (file provider) for the Prometheus the examples name."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.test_api_contracts import TOKEN, ApiServer, argo_web_measurement
from tests.test_api_contracts import server as server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "pipelines"
HOSTS = re.compile(r"https?://canaryctl(\.example\.com|\.canaryctl\.svc:8470)")


def recorded(tmp: Path, bad: bool) -> dict[str, Any]:
    """The examples' provider `prom`, replayed from a recording of both metrics."""
    rng = np.random.default_rng(3)
    doc = {"metrics": {
        "latency-p99": {"baseline": {"values": rng.normal(100, 5, 60).round(3).tolist()},
                        "canary": {"values": rng.normal(170 if bad else 100, 5, 60)
                                   .round(3).tolist()}},
        "error-rate": {"baseline": {"values": rng.normal(1, 0.1, 60).round(3).tolist()},
                       "canary": {"values": rng.normal(1, 0.1, 60).round(3).tolist()}},
    }}
    path = tmp / f"recording-{'bad' if bad else 'good'}.json"
    path.write_text(json.dumps(doc))
    return {"prom": {"type": "file", "path": str(path)}}


def with_recording(body: dict[str, Any], tmp: Path, bad: bool) -> dict[str, Any]:
    assert body["providers"]["prom"]["type"] == "prometheus"
    return {**body, "providers": recorded(tmp, bad)}


def at(url: str, server: ApiServer) -> str:
    assert HOSTS.match(url), url
    return HOSTS.sub(server.url, url, count=1)


def json_path(doc: Any, path: str) -> Any:
    """The `$.a.b` subset of JSONPath the examples use."""
    assert path.startswith("$")
    for part in [p for p in path[1:].split(".") if p]:
        doc = doc[part]
    return doc


@pytest.fixture
def anon(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# -- Spinnaker ----------------------------------------------------------------------------


def spel(text: str, context: dict[str, Any]) -> str:
    """The `${a.b}` and `${parameterValues['x']}` SpEL forms the examples use."""
    def value(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("parameterValues['"):
            return str(context["parameterValues"][expr[len("parameterValues['"):-2]])
        node: Any = context
        for part in expr.split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def webhook_stage(client: httpx.Client, stage: dict[str, Any], context: dict[str, Any],
                  payload: dict[str, Any], cancel_after_post: bool = False) -> str:
    """Orca's monitored Webhook stage: POST, then GET the Location until the status at
    statusJsonPath is in one of the three lists; anything else keeps it polling."""
    headers = {k: spel(v[0], context) for k, v in stage["customHeaders"].items()}
    url = spel(stage["url"], context)
    res = client.request(stage["method"], url, json=payload, headers=headers)
    assert res.status_code not in stage["failFastStatusCodes"], res.text
    assert 200 <= res.status_code < 300, res.text
    assert stage["statusUrlResolution"] == "locationHeader"
    status_url = res.headers["Location"]
    lists = {name: {s.strip() for s in str(stage[name]).split(",")}
             for name in ("successStatuses", "canceledStatuses", "terminalStatuses")}
    if cancel_after_post:
        stage_context = {**context, "webhook": {"body": res.json()}}
        cancel = client.request(stage["cancelMethod"], spel(stage["cancelEndpoint"],
                                                            stage_context),
                                json=stage["cancelPayload"] or None, headers=headers)
        assert cancel.status_code == 200, cancel.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        poll = client.get(status_url, headers=headers)
        assert poll.status_code == 200
        body = poll.json()
        assert isinstance(json_path(body, stage["progressJsonPath"]), str)
        status = json_path(body, stage["statusJsonPath"])
        for name, values in lists.items():
            if status in values:
                return name
        time.sleep(0.1)
    raise AssertionError("the stage would still be polling")


@pytest.mark.parametrize(("bad", "ending"), [(False, "successStatuses"),
                                             (True, "terminalStatuses")])
def test_spinnaker_pipeline_webhook_stage(server: ApiServer, anon: httpx.Client,
                                          tmp_path: Path, bad: bool, ending: str) -> None:
    pipeline = json.loads((EXAMPLES / "spinnaker-pipeline.json").read_text())
    stage = next(s for s in pipeline["stages"] if s["type"] == "webhook")
    assert stage["waitForCompletion"] is True
    params = {p["name"]: p.get("default") for p in pipeline["parameterConfig"]}
    params.update(canaryctlUrl=server.url, canaryctlToken=TOKEN)
    context = {"parameters": params, "trigger": {"buildInfo": {"number": 42}}}
    payload = json.loads(spel(json.dumps(stage["payload"]), context))
    assert payload["name"] == "checkout 42"
    assert webhook_stage(anon, stage, context, with_recording(payload, tmp_path, bad)) == ending


def test_spinnaker_cancel_endpoint_cancels(server: ApiServer, anon: httpx.Client,
                                           tmp_path: Path) -> None:
    pipeline = json.loads((EXAMPLES / "spinnaker-pipeline.json").read_text())
    stage = next(s for s in pipeline["stages"] if s["type"] == "webhook")
    context = {"parameters": {"canaryctlUrl": server.url, "canaryctlToken": TOKEN},
               "trigger": {"buildInfo": {"number": 7}}}
    payload = json.loads(spel(json.dumps(stage["payload"]), context))
    # A window still to come keeps the analysis RUNNING until the cancel.
    payload = {**with_recording(payload, tmp_path, False), "window": {"duration": "60s"}}
    assert webhook_stage(anon, stage, context, payload,
                         cancel_after_post=True) == "canceledStatuses"


def test_spinnaker_preconfigured_webhook(server: ApiServer, anon: httpx.Client,
                                         tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLES / "orca-local.yml").read_text())
    stage = config["webhook"]["preconfigured"][0]
    assert stage["waitForCompletion"] is True
    secret_ref = stage["customHeaders"]["Authorization"][0].removeprefix("Bearer ")
    assert secret_ref.startswith("encrypted:")  # no token in the file
    stage = {**stage, "url": at(stage["url"], server), "customHeaders": {
        **stage["customHeaders"], "Authorization": [f"Bearer {TOKEN}"]}}
    context = {"parameterValues": {p["name"]: p.get("defaultValue") for p in
                                   stage["parameters"]}}
    context["parameterValues"]["service"] = "checkout"
    payload = json.loads(spel(stage["payload"], context))
    assert payload["window"] == {"last": "10m"}
    assert "checkout" in payload["analysis"]["metrics"][0]["query"]
    assert webhook_stage(anon, stage, context,
                         with_recording(payload, tmp_path, True)) == "terminalStatuses"


# -- Argo Rollouts -------------------------------------------------------------------------


def argo_args(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: values[m.group(1)], text)


@pytest.mark.parametrize(("bad", "phase"), [(False, "Successful"), (True, "Failed")])
def test_argo_rollouts_analysis_template(server: ApiServer, tmp_path: Path,
                                         bad: bool, phase: str) -> None:
    template = yaml.safe_load((EXAMPLES / "argo-analysis-template.yaml").read_text())
    assert template["kind"] == "AnalysisTemplate"
    metric = template["spec"]["metrics"][0]
    args = {"service": "checkout", "canaryctl-token": TOKEN}
    web = json.loads(argo_args(json.dumps(metric["provider"]["web"]), args))
    body = with_recording(web["jsonBody"], tmp_path, bad)
    headers = {h["key"]: h["value"] for h in web["headers"]}
    with httpx.Client(headers=headers, timeout=web["timeoutSeconds"]) as client:
        got = argo_web_measurement(client, web["method"], at(web["url"], server), body,
                                   web["jsonPath"], metric["successCondition"],
                                   metric["failureCondition"])
    assert got == phase


# -- Flagger -------------------------------------------------------------------------------


def test_flagger_canary_webhooks(server: ApiServer, anon: httpx.Client) -> None:
    canary = yaml.safe_load((EXAMPLES / "flagger-canary.yaml").read_text())
    hooks = canary["spec"]["analysis"]["webhooks"]
    assert {h["type"] for h in hooks} == {
        "confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
        "confirm-promotion", "post-rollout", "rollback", "event"}
    meta = canary["metadata"]
    # Flagger's own reading: 200 goes on; confirmations hold and rollback stays quiet
    # until a gate is opened.
    expected = {"confirm-rollout": 403, "confirm-traffic-increase": 403,
                "confirm-promotion": 403, "rollback": 403}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for hook in hooks:
        payload = {"name": meta["name"], "namespace": meta["namespace"],
                   "phase": "Progressing", "checksum": "6d9c5b7f", "type": hook["type"],
                   "metadata": hook.get("metadata")}
        res = anon.post(at(hook["url"], server), json=payload, headers=auth)
        assert res.status_code == expected.get(hook["type"], 200), (hook["name"], res.text)
    gate = f"{server.url}/api/v1/flagger/gates/{meta['namespace']}/{meta['name']}"
    assert anon.post(f"{gate}/confirm-promotion/open", headers=auth).status_code == 200
    promo = next(h for h in hooks if h["type"] == "confirm-promotion")
    res = anon.post(at(promo["url"], server), headers=auth, json={
        "name": meta["name"], "namespace": meta["namespace"], "phase": "WaitingPromotion"})
    assert res.status_code == 200
    calls = anon.get(f"{server.url}/api/v1/flagger/{meta['namespace']}/{meta['name']}/calls",
                     headers=auth).json()
    assert len(calls) == len(hooks) + 1
    assert any(c["metadata"] == {"team": "payments"} for c in calls)


# -- GitHub Actions ------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "code"), [(False, 0), (True, 1)])
def test_github_actions_step(server: ApiServer, tmp_path: Path,
                             bad: bool, code: int) -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    step = next(s for s in workflow["jobs"]["canary-analysis"]["steps"] if "run" in s)
    analysis = {"name": "checkout canary", "service": "checkout", "window": {"last": "10m"},
                "analysis": {"judge": "mann-whitney", "metrics": [
                    {"name": "latency-p99", "provider": "prom", "direction": "increase",
                     "query": "latency"}]},
                "providers": recorded(tmp_path, bad)}
    body = tmp_path / "analysis.json"
    body.write_text(json.dumps(analysis))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYCTL")}
    env.update(CANARYCTL_URL=server.url, CANARYCTL_TOKEN=TOKEN, ANALYSIS_FILE=str(body),
               POLL_SECONDS="0.2")
    res = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == code, res.stdout + res.stderr
    assert ("Pass" if not bad else "Fail") in res.stdout
    assert TOKEN not in res.stdout + res.stderr


# -- Argo Workflows ------------------------------------------------------------------------


def argo_condition(condition: str, status: int, body: str) -> bool:
    """The expr subset of the example's successCondition: ==, && and jsonpath()."""
    def jsonpath(text: str, path: str) -> Any:
        return json_path(json.loads(text), path)

    expr = condition.replace("&&", " and ").replace("||", " or ")
    response = type("Response", (), {"statusCode": status, "body": body})
    return bool(eval(expr, {"jsonpath": jsonpath}, {"response": response}))


@pytest.mark.parametrize(("bad", "succeeded"), [(False, True), (True, False)])
def test_argo_workflows_http_step(server: ApiServer, anon: httpx.Client,
                                  tmp_path: Path, bad: bool, succeeded: bool) -> None:
    workflow = yaml.safe_load((EXAMPLES / "argo-workflow.yaml").read_text())
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    http = workflow["spec"]["templates"][0]["http"]
    secrets = {("canaryctl", "authorization"): f"Bearer {TOKEN}"}
    headers = {}
    for h in http["headers"]:
        ref = h.get("valueFrom", {}).get("secretKeyRef")
        headers[h["name"]] = secrets[(ref["name"], ref["key"])] if ref else h["value"]
    text = re.sub(r"\{\{workflow\.parameters\.(\w+)\}\}", lambda m: params[m.group(1)],
                  http["body"])
    body = with_recording(json.loads(text), tmp_path, bad)
    res = anon.request(http["method"], at(http["url"], server), json=body, headers=headers,
                       timeout=http["timeoutSeconds"])
    assert argo_condition(http["successCondition"], res.status_code, res.text) is succeeded
