"""The report built from a realistic rollback in the store: the JSON's contents, the
HTML's self-containment and charts, the files `run` and `demo` write, and
`canaryctl report`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis.metric_data import Counts, Histogram, MetricData, Series
from analysis.report import QUANTILES, Report, report_json, summarize_side
from analysis.report_html import report_html
from canary.report_files import build_report, redact, write_reports
from canary.store import Store
from cli.main import _register, app
from tests.report_scenario import fill_rollout, fixed_clock


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    with fixed_clock() as clock:
        store = Store(tmp_path / "state")
        fill_rollout(store, clock, fail_at=1)
        store.close()
    yield tmp_path / "state"


def _report(state: Path) -> Report:
    store = Store(state)
    rec = store.get_rollout("checkout")
    assert rec is not None
    report = build_report(store, rec)
    store.close()
    return report


def test_json_explains_the_rollback(state: Path) -> None:
    doc = report_json(_report(state))
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or Infinity tokens
    rollout = doc["rollout"]
    assert (rollout["phase"], rollout["verdict"]) == ("RolledBack", "Failed")
    assert rollout["reason"].startswith("error-rate is higher in the canary")
    assert any("(critical) was classified High" in s and "+760.0%" in s
               for s in rollout["explanation"])
    first = doc["metrics"][0]
    assert (first["name"], first["classification"], first["critical"]) == (
        "error-rate", "High", True)
    assert first["evidence"]["interval"] == [3.1, 12.4]
    assert first["evidence"]["e_value"] > first["evidence"]["threshold"]
    assert first["distribution"]["canary"]["events"] == 1350.0
    assert first["distribution"]["canary"]["trials"] == 15000.0
    assert [m["weight"] for m in doc["measurements"]] == [5, 25]
    assert [s["canaryWeight"] for s in doc["steps"]] == [5, 25]
    assert [e["kind"] for e in doc["events"]][-2:] == ["rollback", "rolledback"]
    latency = next(m for m in doc["metrics"] if m["name"] == "latency-p99")
    q = latency["distribution"]["baseline"]["q"]
    assert len(q) == len(QUANTILES) and q == sorted(q)


def test_config_in_the_report_has_secrets_redacted(state: Path) -> None:
    doc = report_json(_report(state))
    # References to where a secret lives are not secrets: they stay, so readers can check.
    assert doc["config"]["spec"]["mesh"]["tokenEnv"] == "CANARYCTL_MESH_TOKEN"
    assert doc["config"]["spec"]["providers"]["prom"]["bearerTokenEnv"] == "PROM_TOKEN"
    pasted = redact({"spec": {"headers": {"Authorization": "Bearer s3cr3t"},
                              "apiKey": "k", "tokenFile": "/run/t", "url": "http://x"}})
    assert pasted == {"spec": {"headers": {"Authorization": "<redacted>"},
                               "apiKey": "<redacted>", "tokenFile": "/run/t",
                               "url": "http://x"}}


def test_summaries_of_each_kind_of_data() -> None:
    hist = summarize_side(MetricData(histogram=Histogram.of([0.1, 0.2, float("inf")],
                                                            [50, 50, 0])))
    assert hist["n"] == 100
    assert hist["q"][2] == pytest.approx(0.1)  # the median sits on the first bound
    assert 0.0 < hist["q"][0] < 0.1 < hist["q"][4] <= 0.2
    series = summarize_side(MetricData(series=Series.values_only(np.arange(101.0))))
    assert series["q"] == pytest.approx([5, 25, 50, 75, 95]) and series["mean"] == 50
    counts = summarize_side(MetricData(counts=Counts(3, 10)))
    assert counts == {"events": 3, "trials": 10}
    assert summarize_side(MetricData(series=Series.values_only([float("nan")]))) == {}


def test_html_is_self_contained_with_a_chart_per_metric(state: Path) -> None:
    html = report_html(_report(state))
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    figures = re.findall(r'<figure class="metric-chart (\w+)" data-metric="([^"]+)"', html)
    assert figures == [("fail", "error-rate"), ("pass", "cpu-seconds"), ("pass", "latency-p99")]
    # Every SVG is well-formed XML, so browsers draw it without guessing.
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert len(svgs) == 2 + 3 * 3
    for svg in svgs:
        ElementTree.fromstring(svg)
    assert "The canary v1.5.0 of checkout was rolled back" in html
    assert "error-rate (critical) was classified High" in html


def test_html_escapes_what_users_wrote(tmp_path: Path) -> None:
    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock, name="x")
        store.update_rollout("x", message="<img src=x onerror=alert(1)>")
        rec = store.get_rollout("x")
        assert rec is not None
        html = report_html(build_report(store, rec))
    assert "<img" not in html and "&lt;img src=x" in html


def test_run_and_demo_write_all_three_formats(state: Path, tmp_path: Path) -> None:
    store = Store(state)
    rec = store.get_rollout("checkout")
    assert rec is not None
    paths = write_reports(store, rec, tmp_path / "reports")
    assert sorted(paths) == ["html", "json", "md"]
    assert json.loads(paths["json"].read_text())["rollout"]["verdict"] == "Failed"
    assert paths["md"].read_text().startswith("## ❌ canary failed")
    assert paths["html"].read_text().startswith("<!DOCTYPE html>")
    updated = store.get_rollout("checkout")
    assert updated is not None and updated.report_dir == str(tmp_path / "reports")
    store.close()


def test_report_command_writes_each_format(state: Path, tmp_path: Path) -> None:
    _register()
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "checkout", "--state-dir", str(state),
                              "--format", "html", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().count('class="metric-chart') == 3
    res = runner.invoke(app, ["report", "checkout", "--state-dir", str(state),
                              "--format", "json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["metrics"][0]["name"] == "error-rate"
    res = runner.invoke(app, ["report", "checkout", "--state-dir", str(state)])
    assert res.exit_code == 0 and res.stdout.startswith("## ❌ canary failed")


def test_report_command_rejects_bad_input(state: Path, tmp_path: Path) -> None:
    _register()
    runner = CliRunner()
    res = runner.invoke(app, ["report", "checkout", "--state-dir", str(state),
                              "--format", "pdf"])
    assert res.exit_code == 2
    assert "--format: expected one of json, md, html, got 'pdf'" in res.stderr
    res = runner.invoke(app, ["report", "nope", "--state-dir", str(state)])
    assert res.exit_code == 2 and "'nope': not found" in res.stderr
    res = runner.invoke(app, ["report", "checkout", "--state-dir", str(state),
                              "-o", str(tmp_path / "missing" / "r.md")])
    assert res.exit_code == 2 and "-o: expected a writable file path" in res.stderr
