"""The file provider (JSON and CSV replay), provider settings, the factory and secrets."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from analysis.metric_data import MetricData
from providers.factory import build_log_provider, build_metric_provider
from providers.file import FileProvider
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError, Window
from providers.secrets import Secret, SecretError, read_secret, redact
from providers.settings import (
    DatadogSettings,
    FileSettings,
    SplunkSettings,
    parse_provider_settings,
)

WINDOW = Window(1000, 1300, 60)

RECORDING = {
    "metrics": {
        "latency_p99": {
            "baseline": {"series": [[1000, 120.5], [1060, None], [1120, 118.0], [2000, 9.0]]},
            "canary": {"values": [130.0, 131.5]},
        },
        "latency": {"canary": {"histogram": {"bounds": [0.1, 0.5, "+Inf"], "counts": [10, 3, 1]}}},
        "errors": {"v2": {"counts": {"events": 3, "trials": 1000}}},
    },
    "logs": {
        "canary": [
            {
                "timestamp": 1001.5,
                "message": "ERROR boom",
                "level": "ERROR",
                "attributes": {"host": "web-1"},
            },
            {"timestamp": 5000, "message": "late"},
        ]
    },
}


def mq(metric: str, scope: str = "canary", version: str = "v2") -> MetricQuery:
    return MetricQuery(metric, metric, scope, "checkout", version, WINDOW)  # type: ignore[arg-type]


def call(provider: Any, method: str, arg: Any) -> Any:
    async def go() -> Any:
        try:
            return await getattr(provider, method)(arg)
        finally:
            await provider.aclose()

    return asyncio.run(go())


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps(RECORDING))
    return path


def test_json_series_values_histogram_counts(recording: Path) -> None:
    p = FileProvider("rec", recording)
    base: MetricData = call(p, "fetch", mq("latency_p99", "baseline", "v1"))
    assert base.series is not None
    assert base.series.timestamps.tolist() == [1000, 1060, 1120, 2000]
    assert math.isnan(base.series.values[1])
    assert base.notes == ("partial: 1 of 4 null",)
    canary: MetricData = call(p, "fetch", mq("latency_p99"))
    assert canary.series is not None and canary.series.values.tolist() == [130.0, 131.5]
    hist: MetricData = call(p, "fetch", mq("latency"))
    assert hist.histogram is not None
    assert hist.histogram.upper_bounds.tolist() == [0.1, 0.5, math.inf]
    # keyed by version instead of scope
    counts: MetricData = call(p, "fetch", mq("errors"))
    assert counts.counts is not None and (counts.counts.events, counts.counts.trials) == (3, 1000)


def test_clip_to_window(recording: Path) -> None:
    data: MetricData = call(
        FileProvider("rec", recording, clip_to_window=True), "fetch", mq("latency_p99", "baseline")
    )
    assert data.series is not None and data.series.timestamps.tolist() == [1000, 1060, 1120]
    logs: list[LogEvent] = call(
        FileProvider("rec", recording, clip_to_window=True),
        "fetch_logs",
        LogQuery("*", "canary", "checkout", "v2", WINDOW),
    )
    assert [e.message for e in logs] == ["ERROR boom"]


def test_missing_scope_is_empty_missing_metric_is_an_error(recording: Path) -> None:
    empty: MetricData = call(FileProvider("rec", recording), "fetch", mq("latency", "baseline"))
    assert empty.empty and empty.notes == ("no data: nothing recorded for baseline",)
    with pytest.raises(ProviderError, match="metric 'cpu' is not recorded"):
        call(FileProvider("rec", recording), "fetch", mq("cpu"))


def test_json_logs(recording: Path) -> None:
    events: list[LogEvent] = call(
        FileProvider("rec", recording), "fetch_logs", LogQuery("*", "canary", "c", "v2", WINDOW)
    )
    assert events[0] == LogEvent(1001.5, "ERROR boom", "ERROR", {"host": "web-1"})
    assert len(events) == 2


def test_csv_series_histogram_and_logs(tmp_path: Path) -> None:
    series = tmp_path / "series.csv"
    series.write_text(
        "metric,scope,timestamp,value\n"
        "latency,canary,1060,2.5\nlatency,canary,1000,2.0\nlatency,baseline,1000,\n"
    )
    data: MetricData = call(FileProvider("f", series), "fetch", mq("latency"))
    assert data.series is not None
    assert data.series.timestamps.tolist() == [1000, 1060]  # sorted by time
    assert data.series.values.tolist() == [2.0, 2.5]
    base: MetricData = call(FileProvider("f", series), "fetch", mq("latency", "baseline"))
    assert base.series is not None and np.isnan(base.series.values).all()

    hist = tmp_path / "hist.csv"
    hist.write_text("metric,scope,le,count\nlat,canary,+Inf,1\nlat,canary,0.1,10\n")
    h: MetricData = call(FileProvider("f", hist), "fetch", mq("lat"))
    assert h.histogram is not None and h.histogram.counts.tolist() == [10, 1]

    logs = tmp_path / "logs.csv"
    logs.write_text('scope,timestamp,level,message,host\ncanary,1001,ERROR,"boom, twice",web-1\n')
    events: list[LogEvent] = call(
        FileProvider("f", logs), "fetch_logs", LogQuery("*", "canary", "c", "v2", WINDOW)
    )
    assert events == [LogEvent(1001.0, "boom, twice", "ERROR", {"host": "web-1"})]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.json", '{\n  "metrics": [1,\n', "bad.json: line 3: not valid JSON"),
        (
            "bad.json",
            '{"metrics": {"m": {"canary": {"values": ["x"]}}}}',
            "metrics.m.canary.values[0]: expected a number or null, got 'x'",
        ),
        ("bad.json", '{"other": 1}', "top level: expected an object with `metrics`"),
        ("bad.csv", "a,b\n1,2\n", "line 1: header ['a', 'b'] is none of"),
        (
            "bad.csv",
            "metric,scope,timestamp,value\nm,canary,1,abc\n",
            "line 2: value: expected a number or null, got 'abc'",
        ),
    ],
)
def test_bad_files_name_the_place(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ProviderError) as err:
        call(FileProvider("rec", path), "fetch", mq("m"))
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="cannot read: No such file"):
        call(FileProvider("rec", tmp_path / "nope.json"), "fetch", mq("m"))


def test_example_recording_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "providers" / "recorded.json"
    data: MetricData = call(FileProvider("rec", example), "fetch", mq("latency_p99"))
    assert data.series is not None and data.series.values.size > 0


# --- settings, factory, secrets ---


def test_settings_discriminate_on_type_and_apply_defaults() -> None:
    dd = parse_provider_settings({"type": "datadog", "site": "datadoghq.eu"})
    assert isinstance(dd, DatadogSettings)
    assert dd.base_url() == "https://api.datadoghq.eu"
    assert (dd.api_key_env, dd.app_key_env) == ("DD_API_KEY", "DD_APP_KEY")
    dd_files = parse_provider_settings(
        {"type": "datadog", "apiKeyFile": "/run/dd/api", "appKeyFile": "/run/dd/app"}
    )
    assert isinstance(dd_files, DatadogSettings) and dd_files.api_key_env is None
    sp = parse_provider_settings(
        {
            "type": "splunk",
            "url": "https://splunk:8089",
            "auth": {"type": "basic", "usernameEnv": "U", "passwordEnv": "P"},
        }
    )
    assert isinstance(sp, SplunkSettings) and sp.api_version == "auto"
    assert isinstance(parse_provider_settings({"type": "file", "path": "x.json"}), FileSettings)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "datadog", "apiKey": "abc"}, "credentials may not be written in the spec"),
        (
            {"type": "splunk", "url": "https://s", "auth": {"type": "token", "token": "t"}},
            "credentials may not be written in the spec",
        ),
        (
            {"type": "splunk", "url": "https://s", "auth": {"type": "token"}},
            "token auth needs tokenEnv or tokenFile",
        ),
        ({"type": "datadog", "site": "example.com"}, "site"),
        ({"type": "prometheus", "url": "localhost:9090"}, "url"),
        ({"type": "graphite"}, "type"),
        ({"type": "mesh", "adminUrl": "http://127.0.0.1:9901"}, "needs tokenEnv or tokenFile"),
    ],
)
def test_settings_reject_bad_input(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_provider_settings(data)
    assert message in str(err.value)


def test_factory_reads_credentials_from_env_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from providers.datadog import DatadogProvider
    from providers.splunk import SessionCredentials, SplunkProvider

    monkeypatch.setenv("DD_API_KEY", "env-api-key-123")
    (tmp_path / "app").write_text("file-app-key-456\n")
    settings = parse_provider_settings({"type": "datadog", "appKeyFile": str(tmp_path / "app")})
    dd = build_metric_provider("dd", settings)
    assert isinstance(dd, DatadogProvider)
    assert "env-api-key-123" not in repr(dd) and "file-app-key-456" not in repr(dd)
    asyncio.run(dd.aclose())

    monkeypatch.setenv("SPLUNK_USER", "admin-user")
    monkeypatch.setenv("SPLUNK_PASSWORD", "hunter2-hunter2")
    sp = build_log_provider(
        "sp",
        parse_provider_settings(
            {
                "type": "splunk",
                "url": "https://s:8089",
                "auth": {
                    "type": "session",
                    "usernameEnv": "SPLUNK_USER",
                    "passwordEnv": "SPLUNK_PASSWORD",
                },
            }
        ),
    )
    assert isinstance(sp, SplunkProvider)
    assert isinstance(sp.credentials, SessionCredentials)
    assert "hunter2" not in repr(sp.credentials)
    asyncio.run(sp.aclose())


def test_factory_missing_credential_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DD_API_KEY", raising=False)
    with pytest.raises(ProviderError) as err:
        build_metric_provider("dd", parse_provider_settings({"type": "datadog"}))
    assert str(err.value) == (
        "dd: provider dd: apiKey: environment variable DD_API_KEY is not set or empty"
    )


def test_factory_prometheus_has_no_logs_and_file_paths_are_relative_to_spec(
    tmp_path: Path,
) -> None:
    with pytest.raises(ProviderError, match="has no logs"):
        build_log_provider(
            "p", parse_provider_settings({"type": "prometheus", "url": "http://x:9090"})
        )
    provider = build_metric_provider(
        "f", parse_provider_settings({"type": "file", "path": "data.json"}), base_dir=tmp_path
    )
    assert isinstance(provider, FileProvider) and provider.path == tmp_path / "data.json"


def test_factory_builds_the_mesh_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.mesh import MeshProvider

    monkeypatch.setenv("MESH_TOKEN", "mesh-admin-token-1")
    settings = parse_provider_settings(
        {"type": "mesh", "adminUrl": "http://127.0.0.1:9901", "tokenEnv": "MESH_TOKEN"}
    )
    provider = build_metric_provider("mesh", settings)
    assert isinstance(provider, MeshProvider)
    asyncio.run(provider.aclose())


def test_secrets_and_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "  k3y-from-env  ")
    secret = read_secret(env="MY_KEY", what="x")
    assert secret.reveal() == "k3y-from-env"
    assert "k3y" not in repr(secret) and "k3y" not in str(secret)
    assert redact("failed with k3y-from-env in url") == "failed with *** in url"
    assert secret == Secret("k3y-from-env")
    with pytest.raises(SecretError, match="cannot read file"):
        read_secret(file=tmp_path / "missing", what="x")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        read_secret(file=tmp_path / "empty", what="x")
    monkeypatch.setenv("EMPTY", "")
    (tmp_path / "fallback").write_text("from-file-123")
    assert read_secret(env="EMPTY", file=tmp_path / "fallback", what="x").reveal() == (
        "from-file-123"
    )
