"""Datadog: metrics through the v1 timeseries query, logs through the v2 logs search.

Requests follow Datadog's published OpenAPI definitions (GET /api/v1/query, POST
/api/v2/logs/events/search with cursor pagination). A 429 is retried after the
`X-RateLimit-Reset` seconds the answer names, as long as that wait stays under a bound.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import numpy as np

from analysis.metric_data import Counts, MetricData, Series
from providers.http_failures import back_off, transport_failure
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError
from providers.secrets import Secret, redact

_RETRY_STATUSES = frozenset({500, 502, 503, 504})


def _render_log_query(query: LogQuery) -> str:
    return MetricQuery(
        "logs", query.query, query.scope, query.service, query.version, query.window
    ).render()


def _error_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)
        if doc.get("error"):
            return str(doc["error"])
    return response.text[:300]


def _header_float(response: httpx.Response, name: str) -> float | None:
    try:
        return float(response.headers[name])
    except (KeyError, ValueError):
        return None


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        out[prefix] = ",".join(str(v) for v in value)
    elif value is not None:
        out[prefix] = str(value)


def log_event_from_datadog(item: Mapping[str, Any]) -> LogEvent:
    attrs = item.get("attributes") or {}
    stamp = attrs.get("timestamp")
    try:
        timestamp = datetime.fromisoformat(str(stamp)).timestamp() if stamp else math.nan
    except ValueError:
        timestamp = math.nan
    extra: dict[str, str] = {}
    for key in ("host", "service"):
        if attrs.get(key):
            extra[key] = str(attrs[key])
    if attrs.get("tags"):
        extra["tags"] = ",".join(str(t) for t in attrs["tags"])
    if item.get("id"):
        extra["id"] = str(item["id"])
    _flatten("", attrs.get("attributes") or {}, extra)
    return LogEvent(
        timestamp=timestamp,
        message=str(attrs.get("message", "")),
        level=str(attrs.get("status", "")),
        attributes=extra,
    )


class DatadogProvider:
    """MetricProvider and LogProvider for one Datadog site."""

    def __init__(
        self,
        name: str,
        api_key: Secret,
        app_key: Secret,
        *,
        site: str = "datadoghq.com",
        base_url: str | None = None,
        timeout: float = 20.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_rate_limit_wait: float = 30.0,
        log_indexes: tuple[str, ...] = ("*",),
        page_size: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = (base_url or f"https://api.{site}").rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_rate_limit_wait = max_rate_limit_wait
        self.log_indexes = list(log_indexes)
        self.page_size = max(1, min(page_size, 1000))  # the API's maximum page
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={
                "DD-API-KEY": api_key.reveal(),
                "DD-APPLICATION-KEY": app_key.reveal(),
                "Accept": "application/json",
            },
        )

    def __repr__(self) -> str:
        return f"DatadogProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
    ) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._client.request(method, path, params=params, json=json_body)
            except httpx.HTTPError as exc:
                if attempt < self.retries:
                    attempt += 1
                    await back_off(self.backoff, attempt)
                    continue
                raise transport_failure(self.name, what, exc, self.timeout) from None

            if response.status_code == 429:
                wait = _header_float(response, "X-RateLimit-Reset")
                if wait is None:
                    wait = _header_float(response, "Retry-After")
                if wait is None:
                    wait = self.backoff * 2**attempt
                limit = response.headers.get("X-RateLimit-Limit", "?")
                period = response.headers.get("X-RateLimit-Period", "?")
                if attempt >= self.retries or wait > self.max_rate_limit_wait:
                    raise ProviderError(
                        self.name,
                        f"{what}: rate limited (limit {limit} per {period}s, resets in "
                        f"{wait:g}s; gave up after {attempt + 1} tries)",
                        retryable=True,
                    )
                attempt += 1
                await asyncio.sleep(max(wait, 0.0))
                continue
            if response.status_code in _RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                await back_off(self.backoff, attempt)
                continue
            if response.status_code >= 400:
                raise ProviderError(
                    self.name,
                    redact(f"{what}: HTTP {response.status_code}: {_error_text(response)}"),
                    retryable=response.status_code >= 500,
                )
            try:
                return response.json()
            except ValueError:
                raise ProviderError(
                    self.name, f"{what}: answer is not JSON: {response.text[:200]!r}"
                ) from None

    async def _points(self, query: str, start: float, end: float, what: str) -> Any:
        doc = await self._request(
            "GET",
            "/api/v1/query",
            what,
            params={"from": math.floor(start), "to": math.ceil(end), "query": query},
        )
        if not isinstance(doc, dict):
            raise ProviderError(self.name, f"{what}: unexpected answer")
        if doc.get("status") == "error" or doc.get("error"):
            raise ProviderError(self.name, redact(f"{what}: {doc.get('error') or 'query failed'}"))
        series = doc.get("series") or []
        if len(series) > 1:
            scopes = ", ".join(str(s.get("scope")) for s in series[:3])
            raise ProviderError(
                self.name,
                f"{what}: query returned {len(series)} series ({scopes}...); aggregate it to "
                "one series per version",
            )
        return series[0].get("pointlist") or [] if series else None

    async def fetch(self, query: MetricQuery) -> MetricData:
        what = f"metric {query.metric} ({query.scope})"
        rendered = query.render()
        window = query.window
        if query.kind == "histogram":
            raise ProviderError(
                self.name, f"{what}: histograms are not served by datadog; use series or counts"
            )
        if query.kind == "counts":
            return await self._fetch_counts(query, rendered, what)
        points = await self._points(rendered, window.start, window.end, what)
        if points is None:
            return MetricData(notes=("no data: the query returned no series",))
        ts = np.array([float(p[0]) / 1000.0 for p in points], dtype=np.float64)
        vs = np.array([math.nan if p[1] is None else float(p[1]) for p in points])
        notes: list[str] = []
        if not points:
            notes.append("no data: the series has no points")
        missing = int(np.sum(~np.isfinite(vs)))
        if missing:
            notes.append(f"partial: {missing} of {vs.size} points are null")
        return MetricData(series=Series.of(ts, vs), notes=tuple(notes))

    async def _fetch_counts(self, query: MetricQuery, rendered: str, what: str) -> MetricData:
        trials_template = query.variables.get("trials")
        if not trials_template:
            raise ProviderError(
                self.name, f"{what}: kind counts needs a trials query (variables['trials'])"
            )
        w = query.window
        events_points, trials_points = await asyncio.gather(
            self._points(rendered, w.start, w.end, what + " events"),
            self._points(query.render(trials_template), w.start, w.end, what + " trials"),
        )

        def total(points: Any) -> float:
            return float(sum(p[1] for p in points or [] if p[1] is not None))

        if not trials_points:
            return MetricData(notes=("no data: the trials query returned nothing",))
        trials = max(total(trials_points), 0.0)
        events = min(max(total(events_points), 0.0), trials)
        return MetricData(counts=Counts(events, trials))

    async def fetch_logs(self, query: LogQuery) -> list[LogEvent]:
        what = f"logs ({query.scope})"
        events: list[LogEvent] = []
        cursor: str | None = None
        base = {
            "filter": {
                "query": _render_log_query(query),
                "from": str(int(query.window.start * 1000)),
                "to": str(int(query.window.end * 1000)),
                "indexes": self.log_indexes,
            },
            "sort": "timestamp",
        }
        while len(events) < query.limit:
            page: dict[str, Any] = {"limit": min(self.page_size, query.limit - len(events))}
            if cursor:
                page["cursor"] = cursor
            doc = await self._request(
                "POST", "/api/v2/logs/events/search", what, json_body={**base, "page": page}
            )
            data = doc.get("data") or [] if isinstance(doc, dict) else []
            events.extend(log_event_from_datadog(item) for item in data)
            cursor = ((doc.get("meta") or {}).get("page") or {}).get("after")
            if not data or not cursor:
                break
        return events[: query.limit]

    async def is_online(self) -> bool:
        try:
            response = await self._client.get("/api/v1/validate")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()
