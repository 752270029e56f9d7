"""Replays recorded metrics and logs from a JSON or CSV file (format: providers/README.md).

For offline analysis and tests. Data are keyed by metric name and scope (or version);
a metric the file does not hold at all is an error, a scope it holds nothing for is
empty data (the judge then applies mustHaveData).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.metric_data import Counts, Histogram, MetricData, Series
from providers.provider import LogEvent, LogQuery, MetricQuery, ProviderError, Window

METRIC_SERIES_COLUMNS = ("metric", "scope", "timestamp", "value")
METRIC_HISTOGRAM_COLUMNS = ("metric", "scope", "le", "count")
LOG_COLUMNS = ("scope", "timestamp", "level", "message")


class _BadRecord(ValueError):
    """A record that does not have the documented shape; names where it is."""


def _num(value: Any, where: str) -> float:
    if value is None or value == "":
        return math.nan
    if isinstance(value, str) and value.strip().lower() in ("+inf", "inf"):
        return math.inf
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _BadRecord(f"{where}: expected a number or null, got {value!r}") from None


@dataclass
class _Recording:
    # metric -> scope-or-version -> data
    metrics: dict[str, dict[str, MetricData]] = field(default_factory=dict)
    # scope-or-version -> events
    logs: dict[str, list[LogEvent]] = field(default_factory=dict)


def _metric_from_json(doc: Any, where: str) -> MetricData:
    if not isinstance(doc, Mapping):
        raise _BadRecord(f"{where}: expected an object with series, values, histogram or counts")
    unknown = set(doc) - {"series", "values", "histogram", "counts"}
    if unknown:
        raise _BadRecord(f"{where}: unknown field(s) {sorted(unknown)}")
    series = histogram = counts = None
    if "series" in doc:
        points = doc["series"]
        if not isinstance(points, list) or any(
            not isinstance(p, list) or len(p) != 2 for p in points
        ):
            raise _BadRecord(f"{where}.series: expected [[timestamp, value], ...]")
        series = Series.of(
            [_num(p[0], f"{where}.series[{i}][0]") for i, p in enumerate(points)],
            [_num(p[1], f"{where}.series[{i}][1]") for i, p in enumerate(points)],
        )
    elif "values" in doc:
        values = doc["values"]
        if not isinstance(values, list):
            raise _BadRecord(f"{where}.values: expected a list of numbers or nulls")
        series = Series.values_only([_num(v, f"{where}.values[{i}]") for i, v in enumerate(values)])
    if "histogram" in doc:
        h = doc["histogram"]
        if not isinstance(h, Mapping) or "bounds" not in h or "counts" not in h:
            raise _BadRecord(f"{where}.histogram: expected {{bounds: [...], counts: [...]}}")
        try:
            histogram = Histogram.of(
                [_num(b, f"{where}.histogram.bounds") for b in h["bounds"]],
                [_num(c, f"{where}.histogram.counts") for c in h["counts"]],
            )
        except ValueError as exc:
            raise _BadRecord(f"{where}.histogram: {exc}") from None
    if "counts" in doc:
        c = doc["counts"]
        if not isinstance(c, Mapping) or "events" not in c or "trials" not in c:
            raise _BadRecord(f"{where}.counts: expected {{events: N, trials: N}}")
        try:
            counts = Counts(_num(c["events"], where), _num(c["trials"], where))
        except ValueError as exc:
            raise _BadRecord(f"{where}.counts: {exc}") from None
    return MetricData(series=series, histogram=histogram, counts=counts)


def _log_from_json(doc: Any, where: str) -> LogEvent:
    if not isinstance(doc, Mapping) or "message" not in doc:
        raise _BadRecord(f"{where}: expected {{timestamp, message, level?, attributes?}}")
    attributes = doc.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise _BadRecord(f"{where}.attributes: expected an object")
    return LogEvent(
        timestamp=_num(doc.get("timestamp"), f"{where}.timestamp"),
        message=str(doc["message"]),
        level=str(doc.get("level") or ""),
        attributes={str(k): str(v) for k, v in attributes.items()},
    )


def _load_json(text: str) -> _Recording:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadRecord(f"line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, Mapping) or not ({"metrics", "logs"} & set(doc)):
        raise _BadRecord("top level: expected an object with `metrics` and/or `logs`")
    rec = _Recording()
    for name, scopes in (doc.get("metrics") or {}).items():
        if not isinstance(scopes, Mapping):
            raise _BadRecord(f"metrics.{name}: expected an object keyed by scope or version")
        rec.metrics[str(name)] = {
            str(scope): _metric_from_json(data, f"metrics.{name}.{scope}")
            for scope, data in scopes.items()
        }
    for scope, events in (doc.get("logs") or {}).items():
        if not isinstance(events, list):
            raise _BadRecord(f"logs.{scope}: expected a list of events")
        rec.logs[str(scope)] = [
            _log_from_json(e, f"logs.{scope}[{i}]") for i, e in enumerate(events)
        ]
    return rec


def _load_csv(text: str) -> _Recording:
    reader = csv.DictReader(text.splitlines())
    header = tuple(h.strip() for h in reader.fieldnames or ())
    rec = _Recording()
    if set(METRIC_SERIES_COLUMNS) <= set(header):
        points: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for line, row in enumerate(reader, start=2):
            key = (row["metric"], row["scope"])
            points.setdefault(key, []).append(
                (
                    _num(row["timestamp"], f"line {line}: timestamp"),
                    _num(row["value"], f"line {line}: value"),
                )
            )
        for (metric, scope), pts in points.items():
            pts.sort()
            rec.metrics.setdefault(metric, {})[scope] = MetricData(
                series=Series.of([p[0] for p in pts], [p[1] for p in pts])
            )
    elif set(METRIC_HISTOGRAM_COLUMNS) <= set(header):
        buckets: dict[tuple[str, str], dict[float, float]] = {}
        for line, row in enumerate(reader, start=2):
            b = buckets.setdefault((row["metric"], row["scope"]), {})
            le = _num(row["le"], f"line {line}: le")
            b[le] = b.get(le, 0.0) + _num(row["count"], f"line {line}: count")
        for (metric, scope), b in buckets.items():
            bounds = sorted(b)
            try:
                hist = Histogram.of(bounds, [b[x] for x in bounds])
            except ValueError as exc:
                raise _BadRecord(f"{metric}/{scope}: {exc}") from None
            rec.metrics.setdefault(metric, {})[scope] = MetricData(histogram=hist)
    elif set(LOG_COLUMNS) <= set(header):
        extra = [h for h in header if h not in LOG_COLUMNS]
        for line, row in enumerate(reader, start=2):
            rec.logs.setdefault(row["scope"], []).append(
                LogEvent(
                    timestamp=_num(row["timestamp"], f"line {line}: timestamp"),
                    message=row["message"] or "",
                    level=row["level"] or "",
                    attributes={k: row[k] for k in extra if row.get(k)},
                )
            )
    else:
        raise _BadRecord(
            f"line 1: header {list(header)} is none of: {list(METRIC_SERIES_COLUMNS)}, "
            f"{list(METRIC_HISTOGRAM_COLUMNS)}, {list(LOG_COLUMNS)}"
        )
    return rec


def _clip(data: MetricData, window: Window) -> MetricData:
    if data.series is None:
        return data
    ts, vs = data.series.timestamps, data.series.values
    keep = (ts >= window.start) & (ts < window.end)
    return MetricData(
        series=Series.of(ts[keep], vs[keep]),
        histogram=data.histogram,
        counts=data.counts,
        notes=data.notes,
    )


class FileProvider:
    """MetricProvider and LogProvider replaying one recorded file."""

    def __init__(self, name: str, path: str | Path, *, clip_to_window: bool = False) -> None:
        self.name = name
        self.path = Path(path)
        self.clip_to_window = clip_to_window
        self._recording: _Recording | None = None

    def __repr__(self) -> str:
        return f"FileProvider(name={self.name!r}, path={str(self.path)!r})"

    def _load(self) -> _Recording:
        if self._recording is None:
            try:
                text = self.path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ProviderError(
                    self.name, f"{self.path}: cannot read: {exc.strerror}"
                ) from None
            try:
                if self.path.suffix.lower() == ".csv":
                    self._recording = _load_csv(text)
                else:
                    self._recording = _load_json(text)
            except _BadRecord as exc:
                raise ProviderError(self.name, f"{self.path}: {exc}") from None
        return self._recording

    @staticmethod
    def _pick(table: Mapping[str, Any], scope: str, version: str) -> Any:
        if scope in table:
            return table[scope]
        return table.get(version)

    async def fetch(self, query: MetricQuery) -> MetricData:
        rec = self._load()
        scopes = rec.metrics.get(query.metric)
        if scopes is None:
            scopes = rec.metrics.get(query.render())
        if scopes is None:
            raise ProviderError(
                self.name,
                f"{self.path}: metric {query.metric!r} is not recorded "
                f"(recorded: {sorted(rec.metrics)})",
            )
        data: MetricData | None = self._pick(scopes, query.scope, query.version)
        if data is None:
            return MetricData(notes=(f"no data: nothing recorded for {query.scope}",))
        if self.clip_to_window:
            data = _clip(data, query.window)
        if data.series is not None and np.any(~np.isfinite(data.series.values)):
            missing = int(np.sum(~np.isfinite(data.series.values)))
            data = MetricData(
                series=data.series,
                histogram=data.histogram,
                counts=data.counts,
                notes=(*data.notes, f"partial: {missing} of {data.series.values.size} null"),
            )
        return data

    async def fetch_logs(self, query: LogQuery) -> list[LogEvent]:
        rec = self._load()
        events = self._pick(rec.logs, query.scope, query.version) or []
        if self.clip_to_window:
            events = [e for e in events if query.window.start <= e.timestamp < query.window.end]
        return list(events[: query.limit])

    async def is_online(self) -> bool:
        return self.path.is_file()

    async def aclose(self) -> None:
        self._recording = None
