"""The analysis report: everything that explains a verdict, and its JSON and Markdown forms.

Pure data: the controller fills it from its store; renderers turn it into text. The JSON
form is complete and machine-readable (schema version in `schemaVersion`); the Markdown
form fits a PR comment or a chat message, verdict first, failing metrics first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = "canaryctl.io/report/v1"
_BAD = ("High", "Low", "NodataFailMetric", "Error")


@dataclass(frozen=True)
class MetricLook:
    """One metric at one look, as the judge classified it (Kayenta's result shape)."""

    name: str
    classification: str
    reason: str
    critical: bool
    baseline: dict[str, Any]
    canary: dict[str, Any]
    evidence: dict[str, Any]


@dataclass(frozen=True)
class MeasurementEntry:
    step: int
    weight: int
    phase: str
    decision: str
    score: float | None
    verdict: str | None
    message: str
    window_start: float
    window_end: float
    metrics: tuple[MetricLook, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventEntry:
    ts: float
    kind: str
    message: str


@dataclass(frozen=True)
class Report:
    name: str
    service: str
    baseline_version: str
    canary_version: str
    judge: str
    phase: str
    verdict: str
    reason: str
    started_at: float
    ended_at: float
    steps: tuple[dict[str, Any], ...]
    measurements: tuple[MeasurementEntry, ...]
    events: tuple[EventEntry, ...]
    config: dict[str, Any]

    def final_metrics(self) -> list[MetricLook]:
        """Each metric's classification at the latest look that judged it, failing first."""
        latest: dict[str, MetricLook] = {}
        for m in self.measurements:
            for look in m.metrics:
                latest[look.name] = look
        return sorted(latest.values(), key=lambda x: (x.classification not in _BAD, x.name))


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_json(report: Report) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "rollout": {
            "name": report.name, "service": report.service,
            "baselineVersion": report.baseline_version, "canaryVersion": report.canary_version,
            "judge": report.judge, "phase": report.phase, "verdict": report.verdict,
            "reason": report.reason, "startedAt": _ts(report.started_at),
            "endedAt": _ts(report.ended_at),
        },
        "metrics": [
            {"name": m.name, "classification": m.classification, "reason": m.reason,
             "critical": m.critical, "baseline": m.baseline, "canary": m.canary,
             "evidence": m.evidence}
            for m in report.final_metrics()
        ],
        "steps": list(report.steps),
        "measurements": [
            {"step": m.step, "weight": m.weight, "phase": m.phase, "decision": m.decision,
             "score": _clean(m.score), "verdict": m.verdict, "message": m.message,
             "windowStart": _ts(m.window_start), "windowEnd": _ts(m.window_end),
             "errors": m.errors,
             "metrics": [
                 {"name": x.name, "classification": x.classification, "reason": x.reason,
                  "critical": x.critical, "baseline": x.baseline, "canary": x.canary,
                  "evidence": x.evidence}
                 for x in m.metrics
             ]}
            for m in report.measurements
        ],
        "events": [{"ts": _ts(e.ts), "kind": e.kind, "message": e.message}
                   for e in report.events],
        "config": report.config,
    }


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or isinstance(x, str):
        return "–" if not isinstance(x, str) else x
    return f"{x:+.1%}" if pct else f"{x:.4g}"


def report_markdown(report: Report) -> str:
    icon = {"Promoted": "✅", "Failed": "❌", "Aborted": "⛔"}.get(report.verdict, "⚠️")
    lines = [
        f"## {icon} canary {report.verdict.lower()}: {report.service} "
        f"{report.canary_version} vs {report.baseline_version}",
        "",
        f"**{report.reason}**",
        "",
        f"Rollout `{report.name}`, judge `{report.judge}`, "
        f"{len(report.measurements)} measurement(s), "
        f"{_ts(report.started_at)} to {_ts(report.ended_at)}.",
        "",
        "| metric | result | canary vs baseline | interval | evidence | why |",
        "|---|---|---|---|---|---|",
    ]
    for m in report.final_metrics():
        ev = m.evidence
        interval = ev.get("interval")
        shown_interval = (f"[{_fmt(interval[0], True)}, {_fmt(interval[1], True)}]"
                          if interval else "–")
        strength = (f"e={_fmt(ev['e_value'])}" if "e_value" in ev else
                    f"p={_fmt(ev['p_value'])}" if "p_value" in ev else "–")
        crit = " (critical)" if m.critical else ""
        reason = m.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {m.name}{crit} | **{m.classification}** | "
                     f"{_fmt(ev.get('effect'), True)} | {shown_interval} | {strength} | "
                     f"{reason} |")
    lines += ["", "<details><summary>Steps and events</summary>", "",
              "| step | weight | result | score | message |", "|---|---|---|---|---|"]
    for me in report.measurements:
        msg = me.message.replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {me.step + 1} | {me.weight}% | {me.phase} | {_fmt(me.score)} | "
                     f"{msg} |")
    lines += ["", "```"]
    lines += [f"{_ts(e.ts)} {e.kind:<12} {e.message}" for e in report.events]
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)
