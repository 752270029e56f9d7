"""The Datadog provider against a loopback fake validated against Datadog's OpenAPI
definitions (shared/contracts/datadog), serving the real recorded responses."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from analysis.metric_data import MetricData
from providers.datadog import DatadogProvider
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError, Window
from providers.secrets import Secret
from tests.fakes.datadog_fake import DatadogFake, RateLimit, load_cassette

API_KEY = "dd-api-0123456789abcdef"
APP_KEY = "dd-app-fedcba9876543210"
# openapi-core cannot check the oauth2 scheme of the definitions; the API-key schemes it
# does check are the ones the provider uses.
pytestmark = pytest.mark.filterwarnings("ignore:Unsupported scheme type:UserWarning")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_shared_contracts_are_present() -> None:
    assert (SHARED / "contracts" / "datadog" / "v1-metrics-query.yaml").is_file(), (
        f"{SHARED} missing: clone the repo next to shared/"
    )


@pytest.fixture
def fake() -> Iterator[DatadogFake]:
    fake = DatadogFake(API_KEY, APP_KEY)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert fake.violations == [], fake.violations


def provider(fake: DatadogFake, **kwargs: Any) -> DatadogProvider:
    opts: dict[str, Any] = {"base_url": fake.url, "backoff": 0.01, **kwargs}
    return DatadogProvider("dd", Secret(API_KEY), Secret(APP_KEY), **opts)


def run(fake: DatadogFake, call: str, query: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        p = provider(fake, **kwargs)
        try:
            return await getattr(p, call)(query)
        finally:
            await p.aclose()

    return asyncio.run(go())


def mq(
    template: str, start: float, end: float, kind: str = "auto", **variables: str
) -> MetricQuery:
    return MetricQuery(
        "latency",
        template,
        "canary",
        "checkout",
        "v2",
        Window(start, end, 60),
        kind=kind,  # type: ignore[arg-type]
        variables=variables,
    )


def test_recorded_v1_query_is_read_point_for_point(fake: DatadogFake) -> None:
    fake.use_recorded = True
    recorded = json.loads(
        load_cassette("recorded_v1_query_ok.yaml")[0]["response"]["body"]["string"]
    )
    points = recorded["series"][0]["pointlist"]
    data: MetricData = run(fake, "fetch", mq("system.cpu.idle{*}", 1641343852, 1641430252))
    assert data.series is not None
    assert data.series.values.size == len(points) == 288
    np.testing.assert_array_equal(data.series.timestamps, [p[0] / 1000 for p in points])
    np.testing.assert_array_equal(data.series.values, [p[1] for p in points])
    (req,) = fake.requests
    assert req.method == "GET" and req.path == "/api/v1/query"
    assert req.query == {
        "from": ["1641343852"],
        "to": ["1641430252"],
        "query": ["system.cpu.idle{*}"],
    }
    assert req.headers["DD-API-KEY"] == API_KEY
    assert req.headers["DD-APPLICATION-KEY"] == APP_KEY


def test_template_placeholders_and_null_points(fake: DatadogFake) -> None:
    q = "avg:trace.http.request.duration{service:checkout,version:v2}"
    fake.metrics[q] = [
        [1_700_000_000_000, 1.5],
        [1_700_000_060_000, None],
        [1_700_000_120_000, 2.5],
    ]
    data: MetricData = run(
        fake,
        "fetch",
        mq(
            "avg:trace.http.request.duration{service:{{service}},version:{{version}}}",
            1_700_000_000,
            1_700_000_300,
        ),
    )
    assert data.series is not None
    assert data.series.values[0] == 1.5 and math.isnan(data.series.values[1])
    assert data.notes == ("partial: 1 of 3 points are null",)
    assert fake.requests[0].query["query"] == [q]


def test_no_series_is_explicitly_empty(fake: DatadogFake) -> None:
    data: MetricData = run(fake, "fetch", mq("avg:nothing{*}", 1_700_000_000, 1_700_000_300))
    assert data.empty and data.notes == ("no data: the query returned no series",)


def test_several_series_are_an_error(fake: DatadogFake) -> None:
    fake.metrics["avg:x{*} by {host}"] = [[[1_700_000_000_000, 1.0]], [[1_700_000_000_000, 2.0]]]
    with pytest.raises(ProviderError, match="returned 2 series"):
        run(fake, "fetch", mq("avg:x{*} by {host}", 1_700_000_000, 1_700_000_300))


def test_bad_query_reports_datadog_error_text(fake: DatadogFake) -> None:
    fake.metrics["avg:x{"] = "Error parsing query: unexpected end of input"
    with pytest.raises(ProviderError) as err:
        run(fake, "fetch", mq("avg:x{", 1_700_000_000, 1_700_000_300))
    assert str(err.value) == (
        "dd: metric latency (canary): HTTP 400: Error parsing query: unexpected end of input"
    )


def test_counts_sum_events_and_trials(fake: DatadogFake) -> None:
    fake.metrics["sum:errors{version:v2}.as_count()"] = [
        [1_700_000_000_000, 2.0],
        [1_700_000_060_000, 3.0],
    ]
    fake.metrics["sum:hits{version:v2}.as_count()"] = [
        [1_700_000_000_000, 100.0],
        [1_700_000_060_000, None],
    ]
    data: MetricData = run(
        fake,
        "fetch",
        mq(
            "sum:errors{version:{{version}}}.as_count()",
            1_700_000_000,
            1_700_000_300,
            kind="counts",
            trials="sum:hits{version:{{version}}}.as_count()",
        ),
    )
    assert data.counts is not None
    assert (data.counts.events, data.counts.trials) == (5.0, 100.0)


def test_rate_limit_waits_for_reset_then_succeeds(fake: DatadogFake) -> None:
    fake.metrics["avg:x{*}"] = [[1_700_000_000_000, 1.0]]
    fake.rate_limit = RateLimit(times=2, reset=0)
    data: MetricData = run(fake, "fetch", mq("avg:x{*}", 1_700_000_000, 1_700_000_300), retries=3)
    assert data.series is not None and data.series.values.tolist() == [1.0]
    assert len(fake.requests) == 3


def test_rate_limit_longer_than_allowed_wait_errors_at_once(fake: DatadogFake) -> None:
    fake.rate_limit = RateLimit(times=5, reset=3600, limit=100, period=3600)
    with pytest.raises(ProviderError) as err:
        run(fake, "fetch", mq("avg:x{*}", 1_700_000_000, 1_700_000_300), max_rate_limit_wait=5)
    assert err.value.retryable
    assert "rate limited (limit 100 per 3600s, resets in 3600s" in str(err.value)
    assert len(fake.requests) == 1


def test_rate_limit_retries_are_bounded(fake: DatadogFake) -> None:
    fake.rate_limit = RateLimit(times=100, reset=0)
    with pytest.raises(ProviderError, match="gave up after 3 tries"):
        run(fake, "fetch", mq("avg:x{*}", 1_700_000_000, 1_700_000_300), retries=2)
    assert len(fake.requests) == 3


def test_recorded_logs_pagination_follows_the_cursor(fake: DatadogFake) -> None:
    fake.use_recorded = True
    query = LogQuery(
        "service:checkout version:{{version}}",
        "canary",
        "checkout",
        "v2",
        Window(1_649_694_000, 1_649_695_000),
    )
    events: list[LogEvent] = run(fake, "fetch_logs", query, page_size=2)
    assert len(fake.requests) == 3
    cursors = [r.body["page"].get("cursor") for r in fake.requests]
    recorded = [
        json.loads(i["request"]["body"])["page"].get("cursor")
        for i in load_cassette("recorded_v2_logs_search_paginated.yaml")
    ]
    assert cursors == recorded
    assert fake.requests[0].body["filter"]["query"] == "service:checkout version:v2"
    assert fake.requests[0].body["filter"]["from"] == "1649694000000"
    assert [e.level for e in events] == ["ok", "info", "info"]
    assert events[0].message.startswith("169.254.0.1 - - [11/Apr/2022:16:29:47 +0000]")
    assert events[0].timestamp == 1649694587.0
    assert events[0].attributes["http.status_code"] == "200"
    assert events[0].attributes["host"] == "05f9b9df-ae45-4c8b-66bf-e24c"
    assert events[1].timestamp == pytest.approx(1649694587.401)


def test_logs_limit_stops_paging(fake: DatadogFake) -> None:
    fake.logs = [
        {
            "id": str(i),
            "type": "log",
            "attributes": {
                "message": f"m{i}",
                "status": "error",
                "timestamp": "2024-01-01T00:00:00Z",
            },
        }
        for i in range(25)
    ]
    query = LogQuery("*", "baseline", "checkout", "v1", Window(0, 10), limit=12)
    events: list[LogEvent] = run(fake, "fetch_logs", query, page_size=5)
    assert [e.message for e in events] == [f"m{i}" for i in range(12)]
    assert [r.body["page"]["limit"] for r in fake.requests] == [5, 5, 2]


def test_wrong_key_is_an_error_without_the_key(fake: DatadogFake) -> None:
    async def go() -> None:
        bad = Secret("dd-api-WRONG-9999999999")
        p = DatadogProvider("dd", bad, Secret(APP_KEY), base_url=fake.url, retries=0)
        try:
            await p.fetch(mq("avg:x{*}", 1_700_000_000, 1_700_000_300))
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as err:
        asyncio.run(go())
    assert str(err.value) == "dd: metric latency (canary): HTTP 403: Forbidden"


def test_transport_error_message_never_holds_a_secret() -> None:
    secret = "dd-api-SECRET-in-url-777777"

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {request.headers['DD-API-KEY']}")

    async def go() -> None:
        p = DatadogProvider(
            "dd",
            Secret(secret),
            Secret(APP_KEY),
            transport=httpx.MockTransport(boom),
            retries=1,
            backoff=0.0,
        )
        try:
            await p.fetch(mq("avg:x{*}", 1_700_000_000, 1_700_000_300))
        finally:
            await p.aclose()

    with pytest.raises(ProviderError) as err:
        asyncio.run(go())
    assert err.value.retryable
    assert secret not in str(err.value) and "***" in str(err.value)
    assert secret not in repr(Secret(secret))


def test_site_selects_the_api_host() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.host))
        return httpx.Response(200, json={"status": "ok", "series": []})

    async def go(site: str) -> None:
        p = DatadogProvider(
            "dd", Secret(API_KEY), Secret(APP_KEY), site=site, transport=httpx.MockTransport(record)
        )
        try:
            await p.fetch(mq("avg:x{*}", 1_700_000_000, 1_700_000_300))
        finally:
            await p.aclose()

    for site in ("datadoghq.eu", "us3.datadoghq.com", "ddog-gov.com"):
        asyncio.run(go(site))
    assert seen == ["api.datadoghq.eu", "api.us3.datadoghq.com", "api.ddog-gov.com"]


def test_is_online(fake: DatadogFake) -> None:
    async def go() -> bool:
        p = provider(fake)
        try:
            return await p.is_online()
        finally:
            await p.aclose()

    assert asyncio.run(go()) is True


# --- the fake itself must catch contract violations, or its silence proves nothing ---


def test_fake_flags_a_request_outside_the_contract() -> None:
    fake = DatadogFake(API_KEY, APP_KEY)
    fake.start()
    try:
        response = httpx.get(
            f"{fake.url}/api/v1/query",
            params={"to": "10", "query": "avg:x{*}"},  # `from` is required
            headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY},
        )
        assert response.status_code == 400
        assert len(fake.violations) == 1 and "from" in fake.violations[0]
        response = httpx.post(
            f"{fake.url}/api/v2/logs/events/search",
            json={"page": {"limit": 5000}},  # maximum is 1000
            headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY},
        )
        assert response.status_code == 400 and len(fake.violations) == 2
    finally:
        fake.stop()


def test_fake_flags_a_response_outside_the_contract() -> None:
    fake = DatadogFake(API_KEY, APP_KEY)
    fake.corrupt_next_response = b'{"series": [{"pointlist": [["not-a-number", 1]]}]}'
    fake.start()
    try:
        response = httpx.get(
            f"{fake.url}/api/v1/query",
            params={"from": "0", "to": "10", "query": "avg:x{*}"},
            headers={"DD-API-KEY": API_KEY, "DD-APPLICATION-KEY": APP_KEY},
        )
        assert response.status_code == 200
        assert len(fake.violations) == 1 and "response 200" in fake.violations[0]
    finally:
        fake.stop()
