"""The Splunk provider against a loopback fake held to shared/contracts/splunk/README.md,
and the fake held to the official splunk-sdk client."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.metric_data import MetricData
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError, Window
from providers.secrets import Secret
from providers.splunk import (
    BasicCredentials,
    BearerToken,
    SessionCredentials,
    SplunkCredentials,
    SplunkProvider,
)
from tests.fakes.splunk_fake import SearchError, SplunkFake

TOKEN = "splunk-token-abcdef123456"
USER, PASSWORD = "analyst", "pa55word-very-secret"
SHARED = Path(__file__).resolve().parents[2] / "shared"

TIMECHART = 'search index=web service="checkout" | timechart span=1m avg(latency) by version'
TIMECHART_TEMPLATE = 'index=web service="{{service}}" | timechart span=1m avg(latency) by version'
ROWS = [
    {"_time": "2024-05-01T10:00:00.000+00:00", "baseline": "120.5", "v2": "130.25", "_span": "60"},
    {"_time": "2024-05-01T10:01:00.000+00:00", "baseline": "121.0", "v2": "", "_span": "60"},
    {"_time": "2024-05-01T10:02:00.000+00:00", "baseline": "119.5", "_span": "60"},
    {"_time": "2024-05-01T10:03:00.000+00:00", "baseline": "122.0", "v2": "140", "_span": "60"},
]
T10 = 1714557600.0  # 2024-05-01T10:00:00Z


def test_splunk_contract_page_is_present() -> None:
    assert (SHARED / "contracts" / "splunk" / "README.md").is_file(), (
        f"{SHARED} missing: clone the repo next to shared/"
    )


@pytest.fixture
def fake() -> Iterator[SplunkFake]:
    fake = SplunkFake(token=TOKEN, username=USER, password=PASSWORD)
    fake.searches[TIMECHART] = ROWS
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert fake.violations == [], fake.violations


def bearer() -> SplunkCredentials:
    return BearerToken(Secret(TOKEN))


def run(
    fake: SplunkFake, call: str, query: Any, creds: SplunkCredentials | None = None, **kwargs: Any
) -> Any:
    async def go() -> Any:
        p = SplunkProvider(
            "splunk", fake.url, creds or bearer(), backoff=0.01, poll_interval=0.01, **kwargs
        )
        try:
            return await getattr(p, call)(query)
        finally:
            await p.aclose()

    return asyncio.run(go())


def mq(
    template: str = TIMECHART_TEMPLATE, kind: str = "auto", version: str = "v2", **variables: str
) -> MetricQuery:
    return MetricQuery(
        "latency",
        template,
        "canary",
        "checkout",
        version,
        Window(T10, T10 + 240, 60),
        kind=kind,  # type: ignore[arg-type]
        variables=variables,
    )


def _check_series(data: MetricData) -> None:
    assert data.series is not None
    np.testing.assert_array_equal(data.series.timestamps, [T10, T10 + 60, T10 + 120, T10 + 180])
    values = data.series.values
    assert values[0] == 130.25 and values[3] == 140.0
    assert math.isnan(values[1]) and math.isnan(values[2])  # "" and a missing key
    assert data.notes == ("partial: 2 of 4 rows have no v2 value",)


def test_export_timechart_by_version_to_series(fake: SplunkFake) -> None:
    data: MetricData = run(fake, "fetch", mq())
    _check_series(data)
    export = [r for r in fake.requests if r.path.endswith("/export")]
    assert len(export) == 1 and export[0].path == "/services/search/v2/jobs/export"
    form = export[0].form
    assert form["search"] == TIMECHART
    assert form["output_mode"] == "json"
    assert (form["earliest_time"], form["latest_time"]) == (f"{T10:.3f}", f"{T10 + 240:.3f}")
    assert export[0].authorization == f"Bearer {TOKEN}"


def test_baseline_column_is_picked_by_version(fake: SplunkFake) -> None:
    data: MetricData = run(fake, "fetch", mq(version="baseline"))
    assert data.series is not None
    assert data.series.values.tolist() == [120.5, 121.0, 119.5, 122.0]


def test_job_mode_pages_results(fake: SplunkFake) -> None:
    fake.job_polls = 2
    data: MetricData = run(fake, "fetch", mq(), mode="job", page_size=3)
    _check_series(data)
    paths = [(r.method, r.path.split("/jobs")[-1]) for r in fake.requests if "/jobs" in r.path]
    sid = paths[1][1].strip("/")
    assert paths == [
        ("POST", ""),
        ("GET", f"/{sid}"),
        ("GET", f"/{sid}"),
        ("GET", f"/{sid}"),
        ("POST", f"/{sid}/results"),
        ("POST", f"/{sid}/results"),
    ]
    offsets = [r.form["offset"] for r in fake.requests if r.path.endswith("/results")]
    assert offsets == ["0", "3"]


def test_old_server_uses_v1_endpoints(fake: SplunkFake) -> None:
    fake.version = "8.2.6"
    run(fake, "fetch", mq(), mode="job")
    data: MetricData = run(fake, "fetch", mq())
    _check_series(data)
    job_paths = {r.path for r in fake.requests if "/jobs" in r.path}
    assert all(p.startswith("/services/search/jobs") for p in job_paths)
    results = [r for r in fake.requests if r.path.endswith("/results")]
    assert results and all(r.method == "GET" for r in results)


def test_session_auth_logs_in_and_relogs_when_the_key_expires(fake: SplunkFake) -> None:
    creds = SessionCredentials(Secret(USER), Secret(PASSWORD))

    async def go() -> None:
        p = SplunkProvider("splunk", fake.url, creds)
        try:
            _check_series(await p.fetch(mq()))
            fake.sessions.clear()  # the server forgot the session
            _check_series(await p.fetch(mq()))
        finally:
            await p.aclose()

    asyncio.run(go())
    logins = [r for r in fake.requests if r.path == "/services/auth/login"]
    assert len(logins) == 2
    searches = [r for r in fake.requests if r.path.endswith("/export")]
    assert all(r.authorization.startswith("Splunk session-") for r in searches)


def test_basic_auth(fake: SplunkFake) -> None:
    _check_series(run(fake, "fetch", mq(), BasicCredentials(Secret(USER), Secret(PASSWORD))))
    assert all(r.authorization.startswith("Basic ") for r in fake.requests)


def test_bad_credentials_error_does_not_show_them(fake: SplunkFake) -> None:
    wrong = "wrong-token-zzzzzzzzzz"
    with pytest.raises(ProviderError) as err:
        run(fake, "fetch", mq(), BearerToken(Secret(wrong)))
    assert str(err.value) == "splunk: server info: HTTP 401: call not properly authenticated"
    with pytest.raises(ProviderError) as err:
        run(fake, "fetch", mq(), SessionCredentials(Secret(USER), Secret("nope-nope-nope")))
    assert "login failed: HTTP 401: Login failed" in str(err.value)
    assert "nope-nope-nope" not in str(err.value) and wrong not in str(err.value)


def test_spl_syntax_error_reports_splunk_text(fake: SplunkFake) -> None:
    fake.searches["search index=web | timechart spn=1m"] = SearchError(
        "Error in 'timechart' command: The argument 'spn=1m' is invalid."
    )
    for mode in ("export", "job"):
        with pytest.raises(ProviderError) as err:
            run(fake, "fetch", mq("index=web | timechart spn=1m"), mode=mode)
        assert str(err.value) == (
            "splunk: metric latency (canary): HTTP 400: "
            "Error in 'timechart' command: The argument 'spn=1m' is invalid."
        )


def test_failed_job_is_an_error(fake: SplunkFake) -> None:
    fake.searches["search index=gone"] = SearchError("index gone is unavailable", status=200)
    with pytest.raises(ProviderError, match="index gone is unavailable"):
        run(fake, "fetch", mq("index=gone"), mode="job")


def test_no_rows_is_explicitly_empty(fake: SplunkFake) -> None:
    data: MetricData = run(fake, "fetch", mq("index=nothing"))
    assert data.empty and data.notes == ("no data: the search returned no rows",)


def test_ambiguous_value_field_is_an_error(fake: SplunkFake) -> None:
    fake.searches["search index=web | stats avg(a) avg(b)"] = [{"avg(a)": "1", "avg(b)": "2"}]
    with pytest.raises(ProviderError, match="cannot tell which field"):
        run(fake, "fetch", mq("index=web | stats avg(a) avg(b)"))
    data: MetricData = run(fake, "fetch", mq("index=web | stats avg(a) avg(b)", field="avg(b)"))
    assert data.series is not None and data.series.values.tolist() == [2.0]


def test_counts_from_stats(fake: SplunkFake) -> None:
    spl = 'search index=web version="v2" | stats count(eval(status>=500)) as events count as trials'
    fake.searches[spl] = [{"events": "7", "trials": "1000"}]
    data: MetricData = run(fake, "fetch", mq(spl.replace('"v2"', '"{{version}}"'), kind="counts"))
    assert data.counts is not None
    assert (data.counts.events, data.counts.trials) == (7.0, 1000.0)


def test_histogram_from_bucket_rows(fake: SplunkFake) -> None:
    spl = "search index=web | stats count by le"
    fake.searches[spl] = [
        {"le": "0.5", "count": "3"},
        {"le": "0.1", "count": "10"},
        {"le": "+Inf", "count": "1"},
    ]
    data: MetricData = run(fake, "fetch", mq(spl, kind="histogram"))
    assert data.histogram is not None
    assert data.histogram.upper_bounds.tolist() == [0.1, 0.5, math.inf]
    assert data.histogram.counts.tolist() == [10.0, 3.0, 1.0]


def test_raw_events_become_log_events(fake: SplunkFake) -> None:
    spl = 'search index=app version="v2" | head 2'
    fake.searches[spl] = [
        {
            "_time": "2024-05-01T10:00:01.250+02:00",
            "_raw": "ERROR boom in checkout",
            "log_level": "ERROR",
            "host": "web-1",
            "source": "/var/log/app.log",
            "tags": ["a", "b"],
        },
        {"_time": "2024-05-01T10:00:02.000+02:00", "_raw": "INFO ok", "host": "web-2"},
    ]
    query = LogQuery(
        'index=app version="{{version}}" | head 2',
        "canary",
        "checkout",
        "v2",
        Window(T10, T10 + 60),
    )
    events: list[LogEvent] = run(fake, "fetch_logs", query)
    assert events[0] == LogEvent(
        T10 - 7200 + 1.25,
        "ERROR boom in checkout",
        "ERROR",
        {"host": "web-1", "source": "/var/log/app.log", "tags": "a,b"},
    )
    assert events[1].level == "" and events[1].message == "INFO ok"


def test_is_online(fake: SplunkFake) -> None:
    async def go() -> tuple[bool, bool]:
        up = SplunkProvider("s", fake.url, bearer())
        down = SplunkProvider("s", "http://127.0.0.1:9", bearer(), retries=0)
        try:
            return await up.is_online(), await down.is_online()
        finally:
            await up.aclose()
            await down.aclose()

    assert asyncio.run(go()) == (True, False)


# --- the fake is faithful: the official splunk-sdk client works against it ---


def test_splunk_sdk_export_oneshot_and_job_against_the_fake(fake: SplunkFake) -> None:
    import splunklib.client as client
    import splunklib.results as results

    host, port = fake.url.removeprefix("http://").split(":")
    service = client.connect(
        host=host, port=int(port), scheme="http", splunkToken=TOKEN, autologin=False
    )
    assert service.splunk_version == (9, 1, 2)
    kwargs = {"earliest_time": f"{T10:.0f}", "latest_time": f"{T10 + 240:.0f}"}

    reader = results.JSONResultsReader(service.jobs.export(TIMECHART, output_mode="json", **kwargs))
    # The stream starts with a preview of the table, as Splunk's does for transforming
    # searches; the reader flags it.
    rows = [(reader.is_preview, r) for r in reader if isinstance(r, dict)]
    assert rows[0] == (True, ROWS[0])
    assert [r for preview, r in rows if not preview] == ROWS
    assert reader.is_preview is False

    oneshot = list(
        results.JSONResultsReader(service.jobs.oneshot(TIMECHART, output_mode="json", **kwargs))
    )
    assert oneshot == ROWS

    job = service.jobs.create(TIMECHART, **kwargs)
    deadline = time.monotonic() + 5
    while not job.is_done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    paged = list(results.JSONResultsReader(job.results(output_mode="json", count=0)))
    assert paged == ROWS
    assert any(
        r.path == f"/services/search/v2/jobs/{job.sid}/results" and r.method == "POST"
        for r in fake.requests
    )


def test_splunk_sdk_session_login_and_v1_server(fake: SplunkFake) -> None:
    import splunklib.client as client
    import splunklib.results as results

    fake.version = "8.2.6"
    host, port = fake.url.removeprefix("http://").split(":")
    service = client.connect(
        host=host, port=int(port), scheme="http", username=USER, password=PASSWORD
    )
    job = service.jobs.create(TIMECHART)
    while not job.is_done():
        time.sleep(0.01)
    rows = list(results.JSONResultsReader(job.results(output_mode="json")))
    assert rows == ROWS
    results_req = [r for r in fake.requests if r.path.endswith("/results")]
    assert [(r.method, r.path.split("/jobs/")[0]) for r in results_req] == [
        ("GET", "/services/search")
    ]
    assert results_req[0].authorization.startswith("Splunk session-")


def test_splunk_sdk_basic_auth_and_errors(fake: SplunkFake) -> None:
    import splunklib.binding as binding
    import splunklib.client as client

    host, port = fake.url.removeprefix("http://").split(":")
    service = client.connect(
        host=host, port=int(port), scheme="http", username=USER, password=PASSWORD, basic=True
    )
    assert service.info["version"] == "9.1.2"
    fake.searches["search bad |"] = SearchError("Error in 'search' command: Missing a search.")
    with pytest.raises(binding.HTTPError) as err:
        service.jobs.oneshot("search bad |", output_mode="json")
    assert err.value.status == 400


def test_fake_flags_requests_outside_the_contract() -> None:
    import httpx

    fake = SplunkFake(token=TOKEN)
    fake.start()
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        # GET instead of POST, no output_mode=json, SPL without `search `/`|`
        httpx.get(
            f"{fake.url}/services/search/v2/jobs/export",
            params={"search": "index=web"},
            headers=headers,
        )
        assert len(fake.violations) == 3, fake.violations
        httpx.post(
            f"{fake.url}/services/search/v2/jobs/export",
            headers=headers,
            data={"search": "search x", "earliest_time": "yesterday", "output_mode": "json"},
        )
        assert "earliest_time='yesterday'" in fake.violations[-1]
    finally:
        fake.stop()
