"""The Prometheus provider against Debian's real `prometheus`: backfilled deterministic data
for exact values, and a live scrape of a loopback exporter."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from analysis.metric_data import MetricData
from providers.prometheus import PrometheusProvider, histogram_from_buckets
from providers.provider import MetricQuery, ProviderError, Window
from providers.secrets import Secret
from tests.prometheus_server import PrometheusHandle, start_prometheus

pytestmark = pytest.mark.slow

STEP = 15
N = 120  # samples per series, 30 minutes
# Old enough to be out of the head block's range, as backfilling requires.
T0 = (int(time.time()) - 3 * 3600) // 60 * 60
RESET_AT = 60  # the canary's histogram counters restart (a pod restart) at this sample
# Per-scrape increments of the non-cumulative buckets le=0.1, 0.5, +Inf.
BUCKET_INC = {"baseline": (10, 5, 1), "canary": (4, 8, 4)}
BOUNDS = ("0.1", "0.5", "+Inf")


def latency(version: str, i: int) -> float:
    return (0.1 if version == "baseline" else 0.2) + (i % 5) * 0.01


def _openmetrics() -> str:
    lines = ["# TYPE req_latency_seconds gauge"]
    for version in ("baseline", "canary"):
        for i in range(N):
            lines.append(
                f'req_latency_seconds{{service="checkout",version="{version}"}} '
                f"{latency(version, i)} {T0 + i * STEP}"
            )
    lines.append("# TYPE nan_gauge gauge")
    for i in range(N):
        value = "NaN" if 20 <= i < 24 else str(float(i))
        lines.append(f'nan_gauge{{service="checkout",version="canary"}} {value} {T0 + i * STEP}')
    lines.append("# TYPE gappy_gauge gauge")
    for i in range(N):
        if 40 <= i < 80:  # 10 minutes without samples: longer than the 5 min lookback
            continue
        lines.append(f'gappy_gauge{{service="checkout",version="canary"}} 7 {T0 + i * STEP}')
    lines.append("# TYPE http_request_duration_seconds histogram")
    for version, incs in BUCKET_INC.items():
        for b, le in enumerate(BOUNDS):
            per_step = sum(incs[: b + 1])
            for i in range(N):
                k = i - RESET_AT if version == "canary" and i >= RESET_AT else i
                lines.append(
                    f'http_request_duration_seconds_bucket{{service="checkout",'
                    f'version="{version}",le="{le}"}} {per_step * k} {T0 + i * STEP}'
                )
    lines.append("# TYPE http_requests counter")
    lines.append("# TYPE http_errors counter")
    for i in range(N):
        lines.append(f'http_requests_total{{version="canary"}} {100 * i} {T0 + i * STEP}')
    for i in range(N):
        lines.append(f'http_errors_total{{version="canary"}} {3 * i} {T0 + i * STEP}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def backfilled() -> Iterator[PrometheusHandle]:
    prom = start_prometheus(openmetrics=_openmetrics())
    try:
        prom.wait_for("req_latency_seconds", at=T0 + 10 * STEP)
        yield prom
    finally:
        prom.stop()


def _query(
    template: str,
    version: str = "canary",
    start: float = T0 + 300,
    end: float = T0 + 1500,
    step: float = 60,
    kind: str = "auto",
    **variables: str,
) -> MetricQuery:
    return MetricQuery(
        metric="m",
        query=template,
        scope="canary" if version == "canary" else "baseline",
        service="checkout",
        version=version,
        window=Window(start, end, step),
        kind=kind,  # type: ignore[arg-type]
        variables=variables,
    )


def fetch(url: str, query: MetricQuery, **kwargs: object) -> MetricData:
    async def go() -> MetricData:
        provider = PrometheusProvider("prom", url, **kwargs)  # type: ignore[arg-type]
        try:
            return await provider.fetch(query)
        finally:
            await provider.aclose()

    return asyncio.run(go())


SELECTOR = '{service="{{service}}",version="{{version}}"}'


def test_range_query_gives_exact_backfilled_values(backfilled: PrometheusHandle) -> None:
    for version in ("baseline", "canary"):
        data = fetch(backfilled.url, _query("req_latency_seconds" + SELECTOR, version))
        assert data.series is not None
        expected_ts = np.arange(T0 + 300, T0 + 1500 + 1, 60, dtype=float)
        np.testing.assert_array_equal(data.series.timestamps, expected_ts)
        expected = [latency(version, int((t - T0) // STEP)) for t in expected_ts]
        np.testing.assert_allclose(data.series.values, expected, rtol=0, atol=1e-12)
        assert data.notes == ()


def test_nan_values_stay_nan_and_are_noted(backfilled: PrometheusHandle) -> None:
    data = fetch(
        backfilled.url,
        _query("nan_gauge" + SELECTOR, start=T0 + 15 * STEP, end=T0 + 30 * STEP, step=STEP),
    )
    assert data.series is not None
    values = data.series.values
    assert np.isnan(values[5:9]).all()  # samples 20..23
    assert values[0] == 15.0 and values[-1] == 30.0
    assert any("partial" in n and "4 of 16" in n for n in data.notes)


def test_gap_longer_than_lookback_is_nan_not_dropped(backfilled: PrometheusHandle) -> None:
    data = fetch(backfilled.url, _query("gappy_gauge" + SELECTOR, step=60))
    assert data.series is not None
    assert data.series.values.size == 21  # the full grid, gaps included
    assert np.isnan(data.series.values).sum() > 0
    assert np.nanmax(data.series.values) == 7.0
    assert any(n.startswith("partial") for n in data.notes)


def test_empty_result_is_explicitly_empty(backfilled: PrometheusHandle) -> None:
    data = fetch(backfilled.url, _query("no_such_metric" + SELECTOR))
    assert data.empty
    assert data.series is None
    assert any("no data" in n for n in data.notes)


def test_bad_query_raises_with_prometheus_error_text(backfilled: PrometheusHandle) -> None:
    with pytest.raises(ProviderError) as err:
        fetch(backfilled.url, _query("sum(rate(req_latency_seconds[5m]"))
    message = str(err.value)
    assert message.startswith("prom: metric m (canary): HTTP 400 bad_data:")
    assert "parse error" in message


def test_several_series_are_an_error_not_a_silent_pick(backfilled: PrometheusHandle) -> None:
    with pytest.raises(ProviderError, match="returned 2 series"):
        fetch(backfilled.url, _query('req_latency_seconds{service="checkout"}'))


@pytest.mark.parametrize("version", ["baseline", "canary"])
def test_bare_bucket_selector_becomes_per_bucket_counts(
    backfilled: PrometheusHandle, version: str
) -> None:
    # Evaluated on a sample, over a window that is a whole number of steps, increase()
    # does not extrapolate, so the counts are exact.
    end = T0 + 100 * STEP
    start = end - 80 * STEP
    data = fetch(
        backfilled.url,
        _query("http_request_duration_seconds_bucket" + SELECTOR, version, start, end, STEP),
    )
    assert data.histogram is not None
    np.testing.assert_array_equal(data.histogram.upper_bounds, [0.1, 0.5, math.inf])
    # The canary restarted at sample 60: increase() adds the pre-reset value, and the
    # one scrape interval spanning the restart contributes nothing.
    steps = 80 if version == "baseline" else 79
    expected = [inc * steps for inc in BUCKET_INC[version]]
    np.testing.assert_allclose(data.histogram.counts, expected, rtol=1e-9)


def test_aggregated_bucket_query_is_used_as_written(backfilled: PrometheusHandle) -> None:
    end = T0 + 40 * STEP
    query = _query(
        "sum by (le) (increase(http_request_duration_seconds_bucket" + SELECTOR + "[{{window}}]))",
        "baseline",
        end - 20 * STEP,
        end,
        STEP,
        kind="histogram",
    )
    data = fetch(backfilled.url, query)
    assert data.histogram is not None
    np.testing.assert_allclose(data.histogram.counts, [200, 100, 20], rtol=1e-9)


def test_counts_from_events_and_trials_queries(backfilled: PrometheusHandle) -> None:
    end = T0 + 50 * STEP
    query = _query(
        'sum(increase(http_errors_total{version="{{version}}"}[{{window}}]))',
        start=end - 20 * STEP,
        end=end,
        step=STEP,
        kind="counts",
        trials='sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))',
    )
    data = fetch(backfilled.url, query)
    assert data.counts is not None
    assert data.counts.events == pytest.approx(60)
    assert data.counts.trials == pytest.approx(2000)


def test_counts_without_error_series_count_zero_events(backfilled: PrometheusHandle) -> None:
    end = T0 + 50 * STEP
    query = _query(
        'sum(increase(no_errors_total{version="{{version}}"}[{{window}}]))',
        start=end - 20 * STEP,
        end=end,
        step=STEP,
        kind="counts",
        trials='sum(increase(http_requests_total{version="{{version}}"}[{{window}}]))',
    )
    data = fetch(backfilled.url, query)
    assert data.counts is not None and data.counts.events == 0
    assert any("counted as 0" in n for n in data.notes)


def test_is_online(backfilled: PrometheusHandle) -> None:
    async def go() -> tuple[bool, bool]:
        up = PrometheusProvider("p", backfilled.url)
        down = PrometheusProvider("p", "http://127.0.0.1:9", retries=0, timeout=1)
        try:
            return await up.is_online(), await down.is_online()
        finally:
            await up.aclose()
            await down.aclose()

    assert asyncio.run(go()) == (True, False)


def test_concurrent_fetches_of_one_analysis(backfilled: PrometheusHandle) -> None:
    async def go() -> list[MetricData]:
        provider = PrometheusProvider("p", backfilled.url, concurrency=8)
        try:
            queries = [
                _query("req_latency_seconds" + SELECTOR, v) for v in ("baseline", "canary") * 10
            ]
            return list(await asyncio.gather(*(provider.fetch(q) for q in queries)))
        finally:
            await provider.aclose()

    results = asyncio.run(go())
    assert len(results) == 20
    assert all(r.series is not None and r.series.values.size == 21 for r in results)
    assert results[0].series is not None and results[1].series is not None
    assert results[0].series.values[0] == pytest.approx(latency("baseline", 20))
    assert results[1].series.values[0] == pytest.approx(latency("canary", 20))


# --- failures against a loopback stand-in (things a healthy Prometheus will not do) ---


class _Scripted(BaseHTTPRequestHandler):
    status = 503
    body = b'{"status":"error","errorType":"unavailable","error":"overloaded"}'
    hits: list[str] = []  # noqa: RUF012  # shared per subclass, set in the fixture

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.body.replace(b"$AUTH", self.headers.get("Authorization", "").encode())
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_retries_are_bounded_and_the_last_error_is_reported() -> None:
    handler: type[_Scripted] = type("H", (_Scripted,), {"hits": []})
    for url in _serve(handler):
        with pytest.raises(ProviderError, match="HTTP 503 unavailable: overloaded"):
            fetch(url, _query("up"), retries=2, backoff=0.01)
    assert len(handler.hits) == 3  # first try + 2 retries


def test_secret_header_never_appears_in_the_error() -> None:
    token = Secret("s3cr3t-prom-token-XYZ", "test")
    handler: type[_Scripted] = type(
        "H",
        (_Scripted,),
        {
            "hits": [],
            "status": 400,
            "body": b'{"status":"error","errorType":"bad_data","error":"bad auth $AUTH"}',
        },
    )
    for url in _serve(handler):
        with pytest.raises(ProviderError) as err:
            fetch(url, _query("up"), headers={"Authorization": f"Bearer {token.reveal()}"})
    assert "bad auth Bearer ***" in str(err.value)
    assert token.reveal() not in str(err.value)
    assert token.reveal() not in repr(err.value)


def test_unreachable_server_is_a_retryable_error() -> None:
    from tests.prometheus_server import free_port

    with pytest.raises(ProviderError) as err:
        fetch(f"http://127.0.0.1:{free_port()}", _query("up"), retries=1, backoff=0.01)
    assert err.value.retryable
    assert "ConnectionError" in str(err.value)


def test_histogram_from_buckets_clips_extrapolation_dips() -> None:
    hist, notes = histogram_from_buckets({0.1: 10.0, 0.5: 9.5, math.inf: 12.0})
    np.testing.assert_allclose(hist.counts, [10.0, 0.0, 2.5])
    assert notes == ("non-monotonic cumulative buckets clipped",)


# --- live: Prometheus scraping a tiny loopback exporter ---


class _Exporter(BaseHTTPRequestHandler):
    scrapes = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with _Exporter.lock:
            _Exporter.scrapes += 1
            n = _Exporter.scrapes
        # Each scrape adds 10 requests: 6 fast, 3 medium, 1 slow.
        text = (
            "# TYPE demo_latency_seconds histogram\n"
            f'demo_latency_seconds_bucket{{version="canary",le="0.1"}} {6 * n}\n'
            f'demo_latency_seconds_bucket{{version="canary",le="0.5"}} {9 * n}\n'
            f'demo_latency_seconds_bucket{{version="canary",le="+Inf"}} {10 * n}\n'
            f'demo_latency_seconds_count{{version="canary"}} {10 * n}\n'
            f'demo_latency_seconds_sum{{version="canary"}} {1.5 * n}\n'
            "# TYPE demo_requests_total counter\n"
            f'demo_requests_total{{version="canary"}} {10 * n}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args: object) -> None:
        pass


def test_live_scrape_gives_histogram_counts() -> None:
    for url in _serve(_Exporter):
        target = url.removeprefix("http://")
        prom = start_prometheus(scrape_targets=[target], scrape_interval="0.5s")
        try:
            # A window needs two samples for increase(); poll until it has some.
            prom.wait_for("increase(demo_requests_total[5s]) > 0", timeout=30)
            now = time.time()
            data = fetch(
                prom.url,
                _query(
                    'demo_latency_seconds_bucket{version="{{version}}"}',
                    start=now - 5,
                    end=now,
                    step=1,
                ),
            )
        finally:
            prom.stop()
    assert data.histogram is not None
    np.testing.assert_array_equal(data.histogram.upper_bounds, [0.1, 0.5, math.inf])
    assert data.histogram.total > 0
    np.testing.assert_allclose(data.histogram.counts / data.histogram.total, [0.6, 0.3, 0.1])
