"""Prometheus through prometheus-api-client: range queries for series, instant queries
for histograms (`_bucket` series by `le`) and counts.

The client is synchronous (requests), so calls run on a small thread pool owned by the
provider; the pool, not asyncio's default one (cpu+4 threads), sets how many queries of
one analysis run at once.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from analysis.metric_data import Counts, Histogram, MetricData, Series
from providers.provider import MetricQuery, ProviderError, Window
from providers.secrets import redact, remember

T = TypeVar("T")

# A bare `_bucket` selector such as `latency_bucket{version="canary"}`: the provider
# turns it into per-bucket increases over the window itself.
_BARE_BUCKET = re.compile(r"^\s*[A-Za-z_:][A-Za-z0-9_:]*_bucket\s*(\{[^{}]*\})?\s*$")
_CLIENT_ERROR = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)
_RETRY_STATUSES = (408, 429, 500, 502, 503, 504)


def _float(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return math.nan


def _prometheus_error_text(exc: Exception) -> str:
    """Prometheus's own error text out of the client's exception message.

    The client formats errors as `HTTP Status Code N (b'<body>')`; the body is the
    Prometheus API's JSON with `errorType` and `error`.
    """
    message = str(exc)
    match = _CLIENT_ERROR.match(message)
    if not match:
        return message
    status, raw = match.groups()
    try:
        body = ast.literal_eval(raw)
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("error"):
            kind = doc.get("errorType", "error")
            return f"HTTP {status} {kind}: {doc['error']}"
        return f"HTTP {status}: {str(body)[:300]}"
    except (ValueError, SyntaxError):
        return f"HTTP {status}: {raw[:300]}"


def is_bare_bucket_selector(promql: str) -> bool:
    return bool(_BARE_BUCKET.match(promql))


def histogram_from_buckets(
    cumulative: Mapping[float, float],
) -> tuple[Histogram, tuple[str, ...]]:
    """Per-bucket counts from Prometheus's cumulative `le` buckets.

    increase() extrapolates each bucket on its own, so neighbouring cumulative values
    can come out slightly non-monotonic; such dips are clipped to zero and noted.
    """
    notes: list[str] = []
    bounds = sorted(cumulative)
    values = np.array([cumulative[b] for b in bounds], dtype=np.float64)
    if np.any(~np.isfinite(values)):
        notes.append("NaN bucket values treated as 0")
        values = np.where(np.isfinite(values), values, 0.0)
    counts = np.diff(values, prepend=0.0)
    if np.any(counts < 0):
        notes.append("non-monotonic cumulative buckets clipped")
        counts = np.clip(counts, 0.0, None)
    return Histogram.of(np.array(bounds, dtype=np.float64), counts), tuple(notes)


class PrometheusProvider:
    """MetricProvider for a Prometheus server (or anything speaking its HTTP API)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        headers: Mapping[str, str] | None = None,
        verify_tls: bool = True,
        concurrency: int = 16,
    ) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.name = name
        self.url = url.rstrip("/")
        self.timeout = timeout
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff,
            backoff_max=max(backoff * 8, 1.0),
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            # Hand the last response back so the client raises with Prometheus's
            # error body instead of urllib3's bare "too many retries".
            raise_on_status=False,
        )
        session = requests.Session()
        session.verify = verify_tls
        # The client mounts its own adapter on the base URL; a longer prefix takes
        # precedence in requests, so this one (bigger pool) serves the API calls.
        session.mount(
            self.url + "/api/",
            HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=concurrency),
        )
        self._session = session
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers or {}),
            disable_ssl=not verify_tls,
            retry=retry,
            session=session,
            timeout=timeout,
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"prom-{name}")

    def __repr__(self) -> str:
        return f"PrometheusProvider(name={self.name!r}, url={self.url!r})"

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except PrometheusApiClientException as exc:
            text = _prometheus_error_text(exc)
            raise ProviderError(self.name, redact(f"{what}: {text}")) from None
        except requests.Timeout:
            raise ProviderError(
                self.name, f"{what}: no answer within {self.timeout:g}s", retryable=True
            ) from None
        except requests.RequestException as exc:
            detail = type(exc).__name__
            raise ProviderError(
                self.name, redact(f"{what}: {detail}: {exc}"), retryable=True
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(self.name, redact(f"{what}: unreadable answer: {exc}")) from None

    def _server_timeout(self) -> dict[str, str]:
        # Prometheus stops evaluating after this, so a slow query fails on the server
        # too rather than running on after we gave up.
        return {"timeout": f"{self.timeout:g}s"}

    async def query_instant(self, promql: str, at: float, *, what: str = "query") -> Any:
        params = {"time": f"{at:.3f}", **self._server_timeout()}
        return await self._call(what, lambda: self._client.custom_query(promql, params=params))

    async def query_range(self, promql: str, window: Window, *, what: str = "query") -> Any:
        start = datetime.fromtimestamp(window.start, UTC)
        end = datetime.fromtimestamp(window.end, UTC)
        step = f"{window.step:g}"
        return await self._call(
            what,
            lambda: self._client.custom_query_range(
                promql, start, end, step, params=self._server_timeout()
            ),
        )

    async def fetch(self, query: MetricQuery) -> MetricData:
        promql = query.render()
        kind = query.kind
        if kind == "auto":
            kind = "histogram" if "_bucket" in promql else "series"
        what = f"metric {query.metric} ({query.scope})"
        if kind == "histogram":
            return await self._fetch_histogram(promql, query, what)
        if kind == "counts":
            return await self._fetch_counts(promql, query, what)
        return await self._fetch_series(promql, query.window, what)

    async def _fetch_series(self, promql: str, window: Window, what: str) -> MetricData:
        result = await self.query_range(promql, window, what=what)
        if not isinstance(result, list):
            raise ProviderError(self.name, f"{what}: unexpected answer {str(result)[:200]}")
        if not result:
            return MetricData(notes=("no data: the query returned no series",))
        if len(result) > 1:
            labels = ", ".join(json.dumps(s.get("metric", {}), sort_keys=True) for s in result[:3])
            raise ProviderError(
                self.name,
                f"{what}: query returned {len(result)} series ({labels}...); aggregate it to "
                "one series per version, e.g. sum(...)",
            )
        points = result[0].get("values", [])
        # The client rounds start/end to whole seconds; the grid follows it so missing
        # steps show up as NaN rather than as a shorter series.
        start, end, step = round(window.start), round(window.end), window.step
        grid = np.arange(start, end + step / 2, step, dtype=np.float64)
        values = np.full(grid.size, np.nan)
        index: dict[float, int] = {round(float(t), 3): i for i, t in enumerate(grid)}
        extra_ts: list[float] = []
        extra_vs: list[float] = []
        for ts, raw in points:
            t, v = float(ts), _float(raw)
            i = index.get(round(t, 3))
            if i is None:
                extra_ts.append(t)
                extra_vs.append(v)
            else:
                values[i] = v
        if extra_ts:
            # Off-grid points (a server that aligned differently): keep them, in order.
            ts_all = np.concatenate([grid, np.array(extra_ts)])
            vs_all = np.concatenate([values, np.array(extra_vs)])
            order = np.argsort(ts_all, kind="stable")
            grid, values = ts_all[order], vs_all[order]
        notes: list[str] = []
        missing = int(np.sum(~np.isfinite(values)))
        if missing:
            notes.append(f"partial: {missing} of {values.size} steps have no value or NaN")
        return MetricData(series=Series.of(grid, values), notes=tuple(notes))

    async def _fetch_histogram(self, promql: str, query: MetricQuery, what: str) -> MetricData:
        if is_bare_bucket_selector(promql):
            # increase() over the window handles counter resets (a restarted canary)
            promql = f"sum by (le) (increase({promql.strip()}[{query.render('{{window}}')}]))"
        result = await self.query_instant(promql, query.window.end, what=what)
        if not isinstance(result, list) or (result and not isinstance(result[0], dict)):
            raise ProviderError(self.name, f"{what}: histogram query must return a vector by le")
        if not result:
            return MetricData(notes=("no data: the histogram query returned no buckets",))
        cumulative: dict[float, float] = {}
        for sample in result:
            le = sample.get("metric", {}).get("le")
            if le is None:
                raise ProviderError(
                    self.name,
                    f"{what}: histogram query returned a series without an `le` label; "
                    "query `_bucket` series aggregated `by (le)`",
                )
            bound = _float(le)
            cumulative[bound] = cumulative.get(bound, 0.0) + _float(sample["value"][1])
        histogram, notes = histogram_from_buckets(cumulative)
        return MetricData(histogram=histogram, notes=notes)

    async def _single_value(self, promql: str, at: float, what: str) -> float | None:
        result = await self.query_instant(promql, at, what=what)
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            return _float(result[1])  # a scalar answer is a bare [ts, "v"]
        if not isinstance(result, list):
            raise ProviderError(self.name, f"{what}: unexpected answer {str(result)[:200]}")
        if not result:
            return None
        if len(result) > 1:
            raise ProviderError(
                self.name, f"{what}: counts query returned {len(result)} series; aggregate it"
            )
        return _float(result[0]["value"][1])

    async def _fetch_counts(self, promql: str, query: MetricQuery, what: str) -> MetricData:
        trials_template = query.variables.get("trials")
        if not trials_template:
            raise ProviderError(
                self.name, f"{what}: kind counts needs a trials query (variables['trials'])"
            )
        at = query.window.end
        events, trials = await asyncio.gather(
            self._single_value(promql, at, what + " events"),
            self._single_value(query.render(trials_template), at, what + " trials"),
        )
        if trials is None or not math.isfinite(trials):
            return MetricData(notes=("no data: the trials query returned nothing",))
        notes: list[str] = []
        if events is None or not math.isfinite(events):
            # Error counters often do not exist until the first error.
            notes.append("events query returned nothing: counted as 0")
            events = 0.0
        trials = max(trials, 0.0)
        events = max(events, 0.0)
        if events > trials:
            notes.append("events exceeded trials (extrapolation): clipped")
            events = trials
        return MetricData(counts=Counts(events, trials), notes=tuple(notes))

    async def is_online(self) -> bool:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._client.check_prometheus_connection
            )
        except Exception:
            return False

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()


def build_headers(headers_from_env: Mapping[str, str], bearer_token: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header, env in headers_from_env.items():
        value = os.environ.get(env)
        if value is None:
            raise ProviderError("prometheus", f"header {header}: environment variable {env} unset")
        remember(value)
        headers[header] = value
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    return headers

