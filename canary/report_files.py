"""Building a rollout's report from the store and writing it next to the state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from analysis.report import (
    EventEntry,
    MeasurementEntry,
    MetricLook,
    Report,
    report_json,
    report_markdown,
)
from analysis.report_html import report_html
from canary.store import RolloutRecord, Store

_SECRET_KEYS = ("token", "key", "password", "secret", "authorization")


def redact(value: Any, key: str = "") -> Any:
    """The spec with anything that looks like a credential replaced. Specs only name env
    vars and files for secrets, but a user may still paste one in a header map."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    lowered = key.lower()
    is_reference = lowered.endswith(("env", "file"))
    if isinstance(value, str) and any(s in lowered for s in _SECRET_KEYS) and not is_reference:
        return "<redacted>"
    return value


def _metric_looks(result: dict[str, Any]) -> tuple[MetricLook, ...]:
    judged = result.get("judgeResult") or {}
    sides = result.get("sides") or {}
    return tuple(
        MetricLook(
            name=r["name"], classification=r["classification"],
            reason=r.get("classificationReason", ""), critical=bool(r.get("critical")),
            baseline=r.get("controlMetadata", {}).get("stats", {}),
            canary=r.get("experimentMetadata", {}).get("stats", {}),
            evidence=r.get("evidence", {}),
            baseline_dist=sides.get(r["name"], {}).get("baseline", {}),
            canary_dist=sides.get(r["name"], {}).get("canary", {}),
        )
        for r in judged.get("results", [])
    )


def build_report(store: Store, rec: RolloutRecord) -> Report:
    spec = rec.spec.get("spec", {})
    events = store.events(rec.name)
    measurements = store.measurements(rec.name)
    steps = []
    for ev in events:
        if ev.kind == "weight":
            steps.append({"at": ev.ts, "canaryWeight": ev.data.get("canary"),
                          "message": ev.message})
    return Report(
        name=rec.name,
        service=spec.get("service", ""),
        baseline_version=spec.get("baseline", {}).get("version") or "baseline",
        canary_version=spec.get("canary", {}).get("version") or "canary",
        judge=spec.get("analysis", {}).get("judge", ""),
        phase=rec.phase,
        verdict=rec.verdict or "Running",
        reason=rec.message or "",
        started_at=rec.created_at,
        ended_at=rec.updated_at if rec.terminal else time.time(),
        steps=tuple(steps),
        measurements=tuple(
            MeasurementEntry(
                step=m.step_index, weight=m.weight, phase=m.phase, decision=m.decision,
                score=m.score, verdict=m.verdict, message=m.message,
                window_start=m.window_start, window_end=m.window_end,
                metrics=_metric_looks(m.result), errors=m.result.get("errors", {}),
            )
            for m in measurements
        ),
        events=tuple(EventEntry(e.ts, e.kind, e.message) for e in events),
        config=redact(rec.spec),
    )


REPORT_FORMATS = ("json", "md", "html")


def render_report(report: Report, fmt: str) -> str:
    """The report as text in one of REPORT_FORMATS."""
    if fmt == "json":
        return json.dumps(report_json(report), indent=2) + "\n"
    if fmt == "md":
        return report_markdown(report)
    if fmt == "html":
        return report_html(report)
    raise ValueError(f"unknown report format {fmt!r}; expected one of {REPORT_FORMATS}")


def write_reports(store: Store, rec: RolloutRecord, report_dir: Path) -> dict[str, Path]:
    """Writes the JSON, Markdown and HTML reports; returns their paths by format."""
    report = build_report(store, rec)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {fmt: report_dir / f"{rec.name}.{fmt}" for fmt in REPORT_FORMATS}
    for fmt, path in paths.items():
        path.write_text(render_report(report, fmt), encoding="utf-8")
    store.update_rollout(rec.name, report_dir=str(report_dir))
    return paths
