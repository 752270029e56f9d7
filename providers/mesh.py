"""The `mesh` provider: per-version data of the built-in proxy, read from its admin API
(`GET /admin/v1/stats`, the JSON documented in mesh/README.md). It speaks HTTP only,
so it works against any proxy process and does not import mesh/.

Queries (MetricQuery.query, after placeholders are filled in):
  latency       histogram of request latency (s) + per-interval p50 series
  latency_p50   per-interval median series + histogram
  latency_p99   per-interval p99 series + histogram
  latency_mean  per-interval mean series + histogram
  error_rate    Counts(5xx, requests) + per-interval 5xx ratio series
  success_rate  Counts(non-5xx, requests) + per-interval ratio series
  request_rate  per-interval requests per second
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np

from analysis.metric_data import Counts, Histogram, MetricData, Series
from providers.provider import MetricQuery, ProviderError

QUERIES = (
    "latency", "latency_p50", "latency_p99", "latency_mean",
    "error_rate", "success_rate", "request_rate",
)
_SERIES_OF = {"latency": "latency_p50", "latency_p50": "latency_p50",
              "latency_p99": "latency_p99", "latency_mean": "latency_mean"}
_MAX_INTERVALS = 10_000


def _floats(values: list[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


class MeshProvider:
    name = "mesh"

    def __init__(
        self,
        admin_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.admin_url,
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ProviderError(
                self.name, f"{self.admin_url}{path}: {type(exc).__name__}: {exc or 'no answer'}",
                retryable=True,
            ) from None
        if response.status_code != 200:
            try:
                detail = str(response.json().get("error", ""))
            except ValueError:
                detail = response.text[:200]
            raise ProviderError(
                self.name, f"{self.admin_url}{path}: HTTP {response.status_code}: {detail}",
                retryable=response.status_code >= 500,
            )
        try:
            data = response.json()
        except ValueError:
            raise ProviderError(self.name, f"{self.admin_url}{path}: answer is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(self.name, f"{self.admin_url}{path}: answer is not an object")
        return data

    async def fetch(self, query: MetricQuery) -> MetricData:
        kind = query.render().strip()
        if kind not in QUERIES:
            raise ProviderError(
                self.name,
                f"metric {query.metric}: unknown mesh query {kind!r}; expected one of "
                + ", ".join(QUERIES),
            )
        window = query.window
        step = max(window.step, window.seconds / _MAX_INTERVALS)
        data = await self._get("/admin/v1/stats", {
            "service": query.service, "start": repr(window.start), "end": repr(window.end),
            "step": repr(step),
        })
        try:
            version = data["versions"].get(query.scope)
            if version is None:
                raise ProviderError(
                    self.name,
                    f"metric {query.metric}: service {query.service!r} has no version "
                    f"{query.scope!r}",
                )
            return self._data(kind, version, float(data.get("step", step)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError(
                self.name, f"metric {query.metric}: malformed stats answer: {exc}"
            ) from None

    @staticmethod
    def _data(kind: str, version: dict[str, Any], step: float) -> MetricData:
        series = version["series"]
        timestamps = series["timestamps"]
        requests = np.asarray(series["requests"], dtype=np.float64)
        errors = np.asarray(series["errors"], dtype=np.float64)
        total = int(version["requests"])
        five = int(version["by_class"]["5xx"])
        if kind in _SERIES_OF:
            latency = version["latency"]
            return MetricData(
                series=Series.of(timestamps, _floats(series[_SERIES_OF[kind]])),
                histogram=Histogram.of(latency["upper_bounds"], latency["counts"]),
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            error_ratio = np.where(requests > 0, errors / requests, np.nan)
        if kind == "error_rate":
            return MetricData(series=Series.of(timestamps, error_ratio),
                              counts=Counts(events=five, trials=total))
        if kind == "success_rate":
            return MetricData(series=Series.of(timestamps, 1.0 - error_ratio),
                              counts=Counts(events=total - five, trials=total))
        return MetricData(series=Series.of(timestamps, requests / step))

    async def is_online(self) -> bool:
        try:
            data = await self._get("/admin/v1/health")
        except ProviderError:
            return False
        return data.get("status") == "ok"

    async def aclose(self) -> None:
        await self._http.aclose()
