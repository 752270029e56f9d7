"""A loopback Datadog API held to Datadog's published OpenAPI definitions.

Every request the fake receives and every response it sends is validated with
openapi-core against the excerpts in shared/contracts/datadog/; a failure is recorded
in `violations` (a test asserts the list stays empty) and a bad request is answered 400
as Datadog would. Responses are the real recorded ones from the same directory where a
test asks for them, or built to the same shape.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.loopback_server import serve_loopback, stop_loopback

SPEC_HOST = "https://api.datadoghq.com"


def shared_dir() -> Path:
    """shared/ sits next to the repo checkout (CI clones the repo beside a copy)."""
    path = Path(__file__).resolve().parents[3] / "shared"
    if not (path / "contracts" / "datadog").is_dir():
        raise FileNotFoundError(
            f"{path}/contracts/datadog not found: the Datadog contract tests need the "
            "shared/ directory next to the repository checkout"
        )
    return path


def contracts_dir() -> Path:
    return shared_dir() / "contracts" / "datadog"


def load_cassette(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((contracts_dir() / name).read_text())
    return list(doc["interactions"])


@functools.cache
def openapi_spec(name: str) -> Any:
    from openapi_core import OpenAPI

    with warnings.catch_warnings():
        # openapi-core warns about the oauth2 scheme it does not check; the API-key
        # schemes it does check are the ones the provider uses.
        warnings.simplefilter("ignore", UserWarning)
        spec = OpenAPI.from_file_path(str(contracts_dir() / name))
    return spec


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class RateLimit:
    """Answer the next `times` requests with 429 and these rate-limit headers."""

    times: int
    reset: int = 1
    limit: int = 100
    period: int = 10


@dataclass
class DatadogFake:
    api_key: str
    app_key: str
    violations: list[str] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    # query string -> pointlist [[ms, value|None], ...] (one series), or a list of
    # pointlists (several series), or an error text (400)
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    rate_limit: RateLimit | None = None
    # Replaces the response body of the next metrics query (to prove response checks).
    corrupt_next_response: bytes | None = None
    use_recorded: bool = False
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._v1 = openapi_spec("v1-metrics-query.yaml")
        self._v2 = openapi_spec("v2-logs-search-and-timeseries.yaml")
        self._recorded_v1 = {
            urllib.parse.parse_qs(urllib.parse.urlsplit(i["request"]["uri"]).query)["query"][0]: i
            for i in load_cassette("recorded_v1_query_ok.yaml")
        }
        self._recorded_logs: dict[str | None, dict[str, Any]] = {}
        for interaction in load_cassette("recorded_v2_logs_search_paginated.yaml"):
            body = json.loads(interaction["request"]["body"])
            self._recorded_logs[body.get("page", {}).get("cursor")] = interaction

    # --- lifecycle ---

    def start(self) -> str:
        self._server, self.url = serve_loopback(self._handle)
        return self.url

    def stop(self) -> None:
        stop_loopback(self._server)

    # --- validation ---

    def _spec_for(self, path: str) -> Any:
        return self._v1 if path.startswith("/api/v1/") else self._v2

    def _openapi_request(
        self, method: str, path: str, query: str, headers: Any, body: bytes
    ) -> Any:
        from openapi_core.testing import MockRequest

        args = urllib.parse.parse_qs(query, keep_blank_values=True)
        return MockRequest(
            SPEC_HOST,
            method,
            path,
            args={k: v[0] for k, v in args.items()},
            headers=dict(headers.items()),
            data=body or None,
            content_type=headers.get("Content-Type", "application/json").split(";")[0],
        )

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    # --- serving ---

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        seen = SeenRequest(
            h.command,
            split.path,
            urllib.parse.parse_qs(split.query),
            {k: v for k, v in h.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(seen)

        if split.path == "/api/v1/validate":
            # Not in the excerpted definitions: the documented key check used by
            # is_online(); answered without validation.
            ok = h.headers.get("DD-API-KEY") == self.api_key
            self._send(h, 200 if ok else 403, {"valid": ok} if ok else {"errors": ["Forbidden"]})
            return

        spec = self._spec_for(split.path)
        request = self._openapi_request(h.command, split.path, split.query, h.headers, raw)
        try:
            spec.validate_request(request)
        except Exception as exc:
            self._violation(f"request {h.command} {h.path}: {type(exc).__name__}: {exc}")
            self._reply(h, spec, request, 400, {"errors": [f"Bad Request: {exc}"]})
            return

        if (
            h.headers.get("DD-API-KEY") != self.api_key
            or h.headers.get("DD-APPLICATION-KEY") != self.app_key
        ):
            self._reply(h, spec, request, 403, {"errors": ["Forbidden"]})
            return

        with self._lock:
            limited = self.rate_limit is not None and self.rate_limit.times > 0
            if limited and self.rate_limit is not None:
                self.rate_limit.times -= 1
                rl = self.rate_limit
        if limited:
            headers = {
                "X-RateLimit-Limit": str(rl.limit),
                "X-RateLimit-Period": str(rl.period),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(rl.reset),
            }
            self._reply(h, spec, request, 429, {"errors": ["Too many requests"]}, headers)
            return

        route: dict[str, Callable[[SeenRequest], tuple[int, Any]]] = {
            "/api/v1/query": self._metrics_query,
            "/api/v2/logs/events/search": self._logs_search,
        }
        status, doc = route[split.path](seen)
        if self.corrupt_next_response is not None and split.path == "/api/v1/query":
            doc, self.corrupt_next_response = self.corrupt_next_response, None
        self._reply(h, spec, request, status, doc)

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        spec: Any,
        request: Any,
        status: int,
        doc: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        from openapi_core.testing import MockResponse

        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        try:
            spec.validate_response(request, MockResponse(data, status, headers=headers or {}))
        except Exception as exc:
            self._violation(f"response {status} to {h.path}: {type(exc).__name__}: {exc}")
        self._send(h, status, data, headers)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, doc: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _metrics_query(self, req: SeenRequest) -> tuple[int, Any]:
        query = req.query["query"][0]
        start, end = int(req.query["from"][0]), int(req.query["to"][0])
        if self.use_recorded and query in self._recorded_v1:
            interaction = self._recorded_v1[query]
            return int(interaction["response"]["status"]["code"]), json.loads(
                interaction["response"]["body"]["string"]
            )
        spec = self.metrics.get(query)
        if isinstance(spec, str):
            return 400, {"errors": [spec]}
        pointlists: list[Any] = []
        if spec:
            pointlists = spec if isinstance(spec[0][0], list) else [spec]
        series = []
        for i, points in enumerate(pointlists):
            inside = [p for p in points if start * 1000 <= p[0] <= end * 1000]
            series.append(
                {
                    "metric": query.split("{")[0].split(":")[-1],
                    "display_name": query.split("{")[0].split(":")[-1],
                    "expression": query,
                    "scope": f"group:{i}",
                    "aggr": query.split(":")[0] if ":" in query else None,
                    "pointlist": inside,
                    "start": inside[0][0] if inside else start * 1000,
                    "end": inside[-1][0] if inside else end * 1000,
                    "length": len(inside),
                    "interval": 60,
                    "query_index": 0,
                    "tag_set": [],
                }
            )
        return 200, {
            "status": "ok",
            "res_type": "time_series",
            "resp_version": 1,
            "query": query,
            "message": "",
            "from_date": start * 1000,
            "to_date": end * 1000,
            "group_by": [],
            "series": series,
        }

    def _logs_search(self, req: SeenRequest) -> tuple[int, Any]:
        body = req.body if isinstance(req.body, dict) else {}
        page = body.get("page") or {}
        cursor = page.get("cursor")
        if self.use_recorded:
            interaction = self._recorded_logs.get(cursor)
            if interaction is None:
                return 400, {"errors": [f"unknown cursor {cursor}"]}
            return 200, json.loads(interaction["response"]["body"]["string"])
        limit = int(page.get("limit", 10))
        offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        chunk = self.logs[offset : offset + limit]
        doc: dict[str, Any] = {"data": chunk}
        if offset + limit < len(self.logs):
            after = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            doc["meta"] = {"page": {"after": after}, "status": "done"}
            doc["links"] = {"next": f"{SPEC_HOST}/api/v2/logs/events?page%5Bcursor%5D={after}"}
        return 200, doc
