"""`canaryctl analyze` through its real entry point: Kayenta config + metric set pairs
in, Kayenta's judge result shape out, exit codes 0 / 1 / 4 / 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import _register, app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kayenta"

if not any(c.name == "analyze" for c in app.registered_commands):
    _register()


def _example(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    config = json.loads((EXAMPLES / "canary-config.json").read_text())
    pairs = json.loads((EXAMPLES / "metric-set-pairs.json").read_text())
    return config, pairs


def _write(tmp_path: Path, config: Any, pairs: Any) -> tuple[Path, Path]:
    c, d = tmp_path / "canary-config.json", tmp_path / "metric-set-pairs.json"
    c.write_text(json.dumps(config))
    d.write_text(json.dumps(pairs))
    return c, d


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["analyze", *args])


def _json_run(config: Path, data: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = _run("--config", str(config), "--data", str(data), "--format", "json", *extra)
    return result.exit_code, json.loads(result.stdout)


def _by_name(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in out["judgeResult"]["results"]}


def test_example_bad_canary_fails_with_kayenta_shape(tmp_path: Path) -> None:
    code, out = _json_run(EXAMPLES / "canary-config.json", EXAMPLES / "metric-set-pairs.json")
    assert code == 1
    jr = out["judgeResult"]
    for r in jr["results"]:
        for key in ("name", "classification", "classificationReason", "critical", "groups"):
            assert key in r
        for side in ("experimentMetadata", "controlMetadata"):
            assert set(r[side]["stats"]) >= {"count", "mean", "min", "max", "std"}
        assert "ratio" in r["resultMetadata"]
    assert all(set(g) >= {"name", "score"} for g in jr["groupScores"])
    assert set(jr["score"]) >= {"score", "classification", "classificationReason"}
    results = _by_name(out)
    assert results["http_latency_p99"]["classification"] == "High"
    assert results["http_latency_p99"]["critical"] is True
    assert results["http_latency_p99"]["groups"] == ["Latency"]
    assert results["http_latency_p99"]["resultMetadata"]["ratio"] > 1.3
    for name in ("http_5xx_ratio", "cpu_utilisation", "requests_per_second"):
        assert results[name]["classification"] == "Pass", name
    assert results["gc_pause_ms"]["muted"] is True
    # The 5xx series has two nulls and nanStrategy "replace": they count as zeros.
    assert results["http_5xx_ratio"]["controlMetadata"]["stats"]["count"] == 60
    assert jr["score"]["score"] == 0.0
    assert jr["score"]["classification"] == "Fail"
    assert "http_latency_p99" in jr["score"]["classificationReason"]


def test_identical_data_passes(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    for p in pairs:
        p["values"]["experiment"] = list(p["values"]["control"])
    code, out = _json_run(*_write(tmp_path, config, pairs))
    assert code == 0
    assert {r["classification"] for r in out["judgeResult"]["results"]} == {"Pass"}
    assert out["judgeResult"]["score"] == {"score": 100.0, "classification": "Pass",
                                           "classificationReason": ""}


def test_non_critical_regression_is_marginal_with_flag_thresholds(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    config["metrics"][0]["analysisConfigurations"]["canary"]["critical"] = False
    config["classifier"]["groupWeights"] = {"Latency": 50, "Errors": 25, "System": 25}
    c, d = _write(tmp_path, config, pairs)
    # Latency (50%) fails, the rest pass: 50 is Fail by the config's 95/75 ...
    code, out = _json_run(c, d)
    assert (code, out["judgeResult"]["score"]["score"]) == (1, 50.0)
    # ... and Marginal when the flags say pass at 60, marginal at 40.
    code, out = _json_run(c, d, "--pass", "60", "--marginal", "40")
    assert code == 4
    assert out["judgeResult"]["score"]["classification"] == "Marginal"


def test_missing_required_data_counts_against_the_group(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    config["metrics"][0]["analysisConfigurations"]["canary"]["critical"] = False
    config["metrics"][2]["analysisConfigurations"]["canary"]["mustHaveData"] = True
    pairs[0]["values"]["experiment"] = pairs[0]["values"]["control"]
    pairs[2]["values"]["experiment"] = [None] * 60
    code, out = _json_run(*_write(tmp_path, config, pairs))
    results = _by_name(out)
    assert results["cpu_utilisation"]["classification"] == "NodataFailMetric"
    group = {g["name"]: g["score"] for g in out["judgeResult"]["groupScores"]}
    assert group["System"] == 50.0
    assert out["judgeResult"]["score"]["score"] == 90.0  # 50 + 30 + 20 * 0.5
    assert code == 4


def test_text_format_prints_a_table(tmp_path: Path) -> None:
    result = _run("--config", str(EXAMPLES / "canary-config.json"),
                  "--data", str(EXAMPLES / "metric-set-pairs.json"))
    assert result.exit_code == 1
    assert "http_latency_p99" in result.stdout and "Fail" in result.stdout


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_invalid_field_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    config["metrics"][1]["analysisConfigurations"]["canary"]["critical"] = "maybe"
    c, d = _write(tmp_path, config, pairs)
    line = _one_line_error(_run("--config", str(c), "--data", str(d)))
    assert str(c) in line
    assert "metrics[1].analysisConfigurations.canary.critical" in line
    assert "bool" in line


def test_bad_confidence_level_and_unknown_measure_are_rejected(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    config["metrics"][0]["analysisConfigurations"]["canary"]["confidenceLevel"] = 1.5
    line = _one_line_error(_run("--config", str(_write(tmp_path, config, pairs)[0]),
                                "--data", str(tmp_path / "metric-set-pairs.json")))
    assert "metrics[0].analysisConfigurations.canary.confidenceLevel" in line
    config, pairs = _example(tmp_path)
    config["metrics"][3]["analysisConfigurations"]["canary"]["effectSize"]["measure"] = "median"
    line = _one_line_error(_run("--config", str(_write(tmp_path, config, pairs)[0]),
                                "--data", str(tmp_path / "metric-set-pairs.json")))
    assert "effectSize.measure" in line and "meanRatio" in line


def test_data_errors_name_the_data_file(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    pairs.append({"name": "unknown_metric", "values": {"control": [1], "experiment": [2]}})
    c, d = _write(tmp_path, config, pairs)
    line = _one_line_error(_run("--config", str(c), "--data", str(d)))
    assert str(d) in line and "[5].name" in line and "unknown_metric" in line

    pairs = pairs[:5]
    pairs[2]["values"]["control"][3] = "fast"
    c, d = _write(tmp_path, config, pairs)
    line = _one_line_error(_run("--config", str(c), "--data", str(d)))
    assert str(d) in line and "[2].values.control[3]" in line


def test_not_a_kayenta_config_missing_and_broken_files(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text("[]")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"judges": []}))
    line = _one_line_error(_run("--config", str(other), "--data", str(pairs)))
    assert str(other) in line and "expected a Kayenta canary config" in line
    # Metrics without Kayenta's analysisConfigurations are read as our own analysis spec,
    # whose errors name the field.
    other.write_text(json.dumps({"metrics": [{"name": "x"}]}))
    line = _one_line_error(_run("--config", str(other), "--data", str(pairs)))
    assert str(other) in line and "metrics[0].query" in line

    line = _one_line_error(_run("--config", str(tmp_path / "nope.json"), "--data", str(pairs)))
    assert "nope.json" in line and "cannot read" in line

    broken = tmp_path / "broken.json"
    broken.write_text('{"metrics": [')
    line = _one_line_error(_run("--config", str(broken), "--data", str(pairs)))
    assert "broken.json" in line and "invalid JSON" in line


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    args = ["--config", str(EXAMPLES / "canary-config.json"),
            "--data", str(EXAMPLES / "metric-set-pairs.json")]
    assert "--format" in _one_line_error(_run(*args, "--format", "xml"))
    assert "--judge" in _one_line_error(_run(*args, "--judge", "coin-flip"))
    assert "--marginal" in _one_line_error(_run(*args, "--pass", "50", "--marginal", "60"))
    assert "--pass" in _one_line_error(_run(*args, "--pass", "150"))


def test_unknown_fields_are_tolerated(tmp_path: Path) -> None:
    config, pairs = _example(tmp_path)
    config["someFutureField"] = {"x": 1}
    config["metrics"][0]["analysisConfigurations"]["canary"]["experimental"] = True
    config["metrics"][0]["analysisConfigurations"]["other"] = {"direction": 7}
    pairs[0]["scopes"]["control"]["extra"] = [1, 2]
    code, _ = _json_run(*_write(tmp_path, config, pairs))
    assert code == 1


@pytest.mark.slow
def test_console_script_entry_point() -> None:
    exe = Path(sys.executable).with_name("canaryctl")
    proc = subprocess.run(
        [str(exe), "analyze", "--config", str(EXAMPLES / "canary-config.json"),
         "--data", str(EXAMPLES / "metric-set-pairs.json"), "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert _by_name(out)["http_latency_p99"]["classification"] == "High"


def test_own_analysis_spec_and_rollout_spec_are_accepted(tmp_path: Path) -> None:
    pairs = [
        {"name": "latency", "tags": {}, "values": {
            "control": [10, 11, 12, 10, 11, 12, 10, 11, 12, 10],
            "experiment": [20, 21, 22, 20, 21, 22, 20, 23, 21, 22]}},
        {"name": "errors", "tags": {}, "values": {
            "control": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            "experiment": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]}},
    ]
    own = {"groupWeights": {"latency": 80, "errors": 20}, "metrics": [
        {"name": "latency", "query": "latency", "direction": "increase", "group": "latency"},
        {"name": "errors", "query": "error_rate", "direction": "increase", "critical": True,
         "group": "errors"}]}
    config, data = _write(tmp_path, own, pairs)
    code, out = _json_run(config, data)
    results = _by_name(out)
    assert results["latency"]["classification"] == "High"
    assert results["errors"]["classification"] == "Pass"
    assert out["judgeResult"]["score"]["score"] == 20.0  # only the errors group passed
    assert code == 1
    # The same analysis inside a whole Rollout spec.
    rollout = {"apiVersion": "canaryctl.io/v1", "kind": "Rollout", "metadata": {"name": "x"},
               "spec": {"analysis": own}}
    (tmp_path / "r").mkdir()
    config2, _ = _write(tmp_path / "r", rollout, pairs)
    code2, out2 = _json_run(config2, data)
    assert (code2, _by_name(out2)["latency"]["classification"]) == (1, "High")
    # A wrong field in our own spec is one line naming its path.
    own["metrics"][0]["direction"] = "up"
    (tmp_path / "bad").mkdir()
    config3, _ = _write(tmp_path / "bad", own, pairs)
    res = _run("--config", str(config3), "--data", str(data))
    assert res.exit_code == 2
    assert "metrics[0].direction" in _one_line_error(res)
