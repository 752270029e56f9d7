"""Splunk: SPL searches through the REST API, as streaming export (NDJSON) or as a search
job whose results are paged.

`timechart`/`stats` rows become series (or counts, or histogram buckets); raw events
become log events. Splunk returns every field value as a string and leaves empty
buckets out or empty, so parsing is explicit about what became NaN.
"""

from __future__ import annotations

import asyncio
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import numpy as np

from analysis.metric_data import Counts, Histogram, MetricData, Series
from providers.http_failures import back_off, transport_failure
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError, Window
from providers.secrets import Secret, redact

# Search endpoints moved to /search/v2/ in this release; older servers only have v1.
V2_SINCE = (9, 0, 2)
_LEVEL_FIELDS = ("log_level", "level", "severity", "loglevel")
_RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class BearerToken:
    token: Secret


@dataclass(frozen=True)
class BasicCredentials:
    username: Secret
    password: Secret


@dataclass(frozen=True)
class SessionCredentials:
    """Logged in at /services/auth/login; requests carry `Splunk <sessionKey>`."""

    username: Secret
    password: Secret


SplunkCredentials = BearerToken | BasicCredentials | SessionCredentials


def _version_tuple(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def splunk_time(text: str) -> float:
    """`_time` as Unix seconds; Splunk sends ISO-8601 with an offset (or epoch)."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def _number(value: Any) -> float:
    if isinstance(value, list):
        value = value[0] if value else ""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _messages_text(messages: Any, types: Sequence[str] = ("ERROR", "FATAL")) -> str:
    if not isinstance(messages, list):
        return ""
    return "; ".join(
        str(m.get("text", ""))
        for m in messages
        if isinstance(m, dict) and str(m.get("type", "")).upper() in types
    )


def spl(text: str) -> str:
    """A search as the REST API wants it: starting with `search ` or `|`."""
    text = text.strip()
    if text.startswith("|") or text.startswith("search ") or text == "search":
        return text
    return "search " + text


def _render_log_query(query: LogQuery) -> str:
    return MetricQuery(
        "logs", query.query, query.scope, query.service, query.version, query.window
    ).render()


class SplunkProvider:
    """MetricProvider and LogProvider over Splunk's REST search API."""

    def __init__(
        self,
        name: str,
        base_url: str,
        credentials: SplunkCredentials,
        *,
        verify_tls: bool = True,
        api_version: Literal["auto", "v1", "v2"] = "auto",
        mode: Literal["export", "job"] = "export",
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.25,
        page_size: int = 1000,
        poll_interval: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.api_version = api_version
        self.mode = mode
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.page_size = page_size
        self.poll_interval = poll_interval
        self._resolved_version: Literal["v1", "v2"] | None = (
            None if api_version == "auto" else api_version
        )
        self._session_key: Secret | None = None
        self._login_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            verify=verify_tls,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"SplunkProvider(name={self.name!r}, base_url={self.base_url!r})"

    # --- plumbing ---

    async def _auth_header(self) -> str:
        creds = self.credentials
        if isinstance(creds, BearerToken):
            return f"Bearer {creds.token.reveal()}"
        if isinstance(creds, BasicCredentials):
            return "Basic " + _basic(creds.username.reveal(), creds.password.reveal())
        async with self._login_lock:
            if self._session_key is None:
                self._session_key = await self._login(creds)
        return f"Splunk {self._session_key.reveal()}"

    async def _login(self, creds: SessionCredentials) -> Secret:
        try:
            response = await self._client.post(
                "/services/auth/login",
                data={
                    "username": creds.username.reveal(),
                    "password": creds.password.reveal(),
                    "output_mode": "json",
                },
            )
        except httpx.HTTPError as exc:
            raise ProviderError(
                self.name, redact(f"login: {type(exc).__name__}: {exc}"), retryable=True
            ) from None
        if response.status_code != 200:
            raise ProviderError(
                self.name, redact(f"login failed: HTTP {response.status_code}: {_error(response)}")
            )
        key: str | None = None
        try:
            key = response.json().get("sessionKey")
        except ValueError:
            try:
                key = ET.fromstring(response.text).findtext("./sessionKey")
            except ET.ParseError:
                key = None
        if not key:
            raise ProviderError(self.name, "login answered without a sessionKey")
        return Secret(key, "splunk session")

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        attempt = 0
        relogged = False
        while True:
            headers = {"Authorization": await self._auth_header()}
            request = self._client.build_request(
                method, path, data=data, params=params, headers=headers
            )
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if attempt < self.retries:
                    attempt += 1
                    await back_off(self.backoff, attempt)
                    continue
                raise transport_failure(self.name, what, exc, self.timeout) from None
            if response.status_code < 400:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if (
                response.status_code == 401
                and isinstance(self.credentials, SessionCredentials)
                and not relogged
            ):
                # Session keys expire; one fresh login, then the error stands.
                relogged = True
                self._session_key = None
                continue
            if response.status_code in _RETRY_STATUSES and attempt < self.retries:
                attempt += 1
                await back_off(self.backoff, attempt)
                continue
            raise ProviderError(
                self.name,
                redact(f"{what}: HTTP {response.status_code}: {_error(response)}"),
                retryable=response.status_code >= 500,
            )

    async def _jobs_path(self) -> str:
        if self._resolved_version is None:
            response = await self._send(
                "GET", "/services/server/info", "server info", params={"output_mode": "json"}
            )
            try:
                doc = response.json()
                version = str(
                    (doc.get("generator") or {}).get("version")
                    or doc["entry"][0]["content"]["version"]
                )
            except (ValueError, KeyError, IndexError, TypeError):
                raise ProviderError(self.name, "server info: no version in the answer") from None
            self._resolved_version = "v2" if _version_tuple(version) >= V2_SINCE else "v1"
        return (
            "/services/search/v2/jobs"
            if self._resolved_version == "v2"
            else "/services/search/jobs"
        )

    # --- searches ---

    async def search(
        self, query: str, window: Window, what: str, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Result rows of one SPL search over `window` (final results only)."""
        try:
            async with asyncio.timeout(self.timeout * (self.retries + 1)):
                if self.mode == "job":
                    return await self._job_rows(spl(query), window, what, limit)
                return [row async for row in self._export_rows(spl(query), window, what, limit)]
        except TimeoutError:
            raise ProviderError(
                self.name, f"{what}: search did not finish in time", retryable=True
            ) from None

    def _search_form(self, query: str, window: Window) -> dict[str, str]:
        return {
            "search": query,
            "earliest_time": f"{window.start:.3f}",
            "latest_time": f"{window.end:.3f}",
            "output_mode": "json",
        }

    async def _export_rows(
        self, query: str, window: Window, what: str, limit: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        form = {**self._search_form(query, window), "segmentation": "none"}
        path = await self._jobs_path() + "/export"
        response = await self._send("POST", path, what, data=form, stream=True)
        count = 0
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ProviderError(self.name, f"{what}: unreadable export line") from None
                errors = _messages_text(row.get("messages"))
                if errors:
                    raise ProviderError(self.name, redact(f"{what}: {errors}"))
                # Transforming searches stream previews before the final rows.
                if row.get("preview") or "result" not in row:
                    continue
                yield row["result"]
                count += 1
                if limit is not None and count >= limit:
                    break
        finally:
            await response.aclose()

    async def _job_rows(
        self, query: str, window: Window, what: str, limit: int | None
    ) -> list[dict[str, Any]]:
        jobs = await self._jobs_path()
        created = await self._send("POST", jobs, what, data=self._search_form(query, window))
        try:
            sid = str(created.json()["sid"])
        except (ValueError, KeyError):
            raise ProviderError(self.name, f"{what}: job creation answered without a sid") from None
        while True:
            state = await self._send("GET", f"{jobs}/{sid}", what, params={"output_mode": "json"})
            try:
                content = state.json()["entry"][0]["content"]
            except (ValueError, KeyError, IndexError):
                raise ProviderError(self.name, f"{what}: unreadable job state") from None
            dispatch = str(content.get("dispatchState", ""))
            if dispatch == "FAILED" or content.get("isFailed") in (True, "1", 1):
                text = _messages_text(content.get("messages")) or "search job failed"
                raise ProviderError(self.name, redact(f"{what}: {text}"))
            if dispatch == "DONE" or content.get("isDone") in (True, "1", 1):
                break
            await asyncio.sleep(self.poll_interval)
        rows: list[dict[str, Any]] = []
        method = "POST" if jobs.endswith("/v2/jobs") else "GET"
        while True:
            page = self.page_size if limit is None else min(self.page_size, limit - len(rows))
            form = {"output_mode": "json", "offset": str(len(rows)), "count": str(page)}
            kwargs: dict[str, Any] = {"data": form} if method == "POST" else {"params": form}
            response = await self._send(method, f"{jobs}/{sid}/results", what, **kwargs)
            try:
                doc = response.json()
            except ValueError:
                raise ProviderError(self.name, f"{what}: unreadable results page") from None
            errors = _messages_text(doc.get("messages"))
            if errors:
                raise ProviderError(self.name, redact(f"{what}: {errors}"))
            batch = doc.get("results") or []
            rows.extend(batch)
            if len(batch) < page or (limit is not None and len(rows) >= limit):
                return rows

    # --- metrics ---

    async def fetch(self, query: MetricQuery) -> MetricData:
        what = f"metric {query.metric} ({query.scope})"
        rows = await self.search(query.render(), query.window, what)
        if not rows:
            return MetricData(notes=("no data: the search returned no rows",))
        if query.kind == "counts":
            return self._counts(rows, query, what)
        if query.kind == "histogram":
            return self._histogram(rows, query, what)
        return self._series(rows, query, what)

    def _value_field(self, rows: list[dict[str, Any]], query: MetricQuery, what: str) -> str:
        fields: dict[str, None] = {}
        for row in rows:
            fields.update(dict.fromkeys(k for k in row if not k.startswith("_")))
        wanted = query.variables.get("field")
        for candidate in (wanted, query.version, query.scope):
            if candidate and candidate in fields:
                return candidate
        if wanted:
            raise ProviderError(self.name, f"{what}: no field {wanted!r} in {sorted(fields)}")
        if len(fields) == 1:
            return next(iter(fields))
        raise ProviderError(
            self.name,
            f"{what}: cannot tell which field holds the value among {sorted(fields)}; "
            "name it with variables['field'] or chart `by version`",
        )

    def _series(self, rows: list[dict[str, Any]], query: MetricQuery, what: str) -> MetricData:
        field = self._value_field(rows, query, what)
        values = np.array([_number(row.get(field)) for row in rows], dtype=np.float64)
        if all("_time" in row for row in rows):
            ts = np.array([splunk_time(str(row["_time"])) for row in rows], dtype=np.float64)
            order = np.argsort(ts, kind="stable")
            ts, values = ts[order], values[order]
        else:
            ts = np.arange(values.size, dtype=np.float64)
        notes: list[str] = []
        missing = int(np.sum(~np.isfinite(values)))
        if missing:
            notes.append(f"partial: {missing} of {values.size} rows have no {field} value")
        return MetricData(series=Series.of(ts, values), notes=tuple(notes))

    def _counts(self, rows: list[dict[str, Any]], query: MetricQuery, what: str) -> MetricData:
        events_field = query.variables.get("eventsField", "events")
        trials_field = query.variables.get("trialsField", "trials")
        if len(rows) != 1:
            raise ProviderError(self.name, f"{what}: counts search must return one row")
        events, trials = _number(rows[0].get(events_field)), _number(rows[0].get(trials_field))
        if not math.isfinite(trials):
            return MetricData(notes=(f"no data: no {trials_field} value",))
        events = 0.0 if not math.isfinite(events) else events
        return MetricData(counts=Counts(min(max(events, 0.0), trials), max(trials, 0.0)))

    def _histogram(self, rows: list[dict[str, Any]], query: MetricQuery, what: str) -> MetricData:
        bound_field = query.variables.get("boundField", "le")
        count_field = query.variables.get("countField", "count")
        buckets: dict[float, float] = {}
        for row in rows:
            bound = _number(str(row.get(bound_field, "")).replace("+Inf", "inf"))
            count = _number(row.get(count_field))
            if math.isnan(bound):
                raise ProviderError(self.name, f"{what}: histogram row without {bound_field}")
            buckets[bound] = buckets.get(bound, 0.0) + (count if math.isfinite(count) else 0.0)
        bounds = sorted(buckets)
        return MetricData(histogram=Histogram.of(bounds, [buckets[b] for b in bounds]))

    # --- logs ---

    async def fetch_logs(self, query: LogQuery) -> list[LogEvent]:
        what = f"logs ({query.scope})"
        rows = await self.search(_render_log_query(query), query.window, what, limit=query.limit)
        return [log_event_from_splunk(row) for row in rows[: query.limit]]

    async def is_online(self) -> bool:
        try:
            await self._send(
                "GET", "/services/server/info", "server info", params={"output_mode": "json"}
            )
        except ProviderError:
            return False
        return True

    async def aclose(self) -> None:
        await self._client.aclose()


def log_event_from_splunk(row: Mapping[str, Any]) -> LogEvent:
    stamp = row.get("_time")
    try:
        timestamp = splunk_time(str(stamp)) if stamp else math.nan
    except ValueError:
        timestamp = math.nan
    level = ""
    for key in _LEVEL_FIELDS:
        if row.get(key):
            level = str(row[key])
            break
    attributes = {
        key: ",".join(value) if isinstance(value, list) else str(value)
        for key, value in row.items()
        if not key.startswith("_") and key not in _LEVEL_FIELDS
    }
    return LogEvent(timestamp, str(row.get("_raw", "")), level, attributes)


def _basic(username: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _error(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        text = response.text.strip()
        try:
            root = ET.fromstring(text)
            found = [m.text or "" for m in root.iter("msg")]
            if found:
                return "; ".join(found)
        except ET.ParseError:
            pass
        return text[:300]
    text = _messages_text(
        doc.get("messages") if isinstance(doc, dict) else None, ("ERROR", "FATAL", "WARN")
    )
    return text or response.text[:300]
