"""The analysis report: everything that explains a verdict, and its JSON and Markdown forms.

Pure data: the controller fills it from its store; renderers turn it into text. The JSON
form is complete and machine-readable (schema in analysis/REPORT_SCHEMA.md, version in
`schemaVersion`); the Markdown form fits a PR comment or a chat message, verdict first,
failing metrics first. The HTML form lives in analysis/report_html.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from analysis.metric_data import Histogram, MetricData

SCHEMA_VERSION = "canaryctl.io/report/v1"
BAD_CLASSIFICATIONS = ("High", "Low", "NodataFailMetric", "Error")
# The quantiles kept per side and look: enough for a box plot, small enough that a
# rollout of 50 metrics over 20 steps stays a few hundred kilobytes.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class MetricLook:
    """One metric at one look, as the judge classified it (Kayenta's result shape).

    `baseline`/`canary` are Kayenta's per-side stats (count, mean, min, max, std);
    `baseline_dist`/`canary_dist` the compact distributions of `summarize_side`, empty
    when the measurement predates them."""

    name: str
    classification: str
    reason: str
    critical: bool
    baseline: dict[str, Any]
    canary: dict[str, Any]
    evidence: dict[str, Any]
    baseline_dist: dict[str, Any] = field(default_factory=dict)
    canary_dist: dict[str, Any] = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        return self.classification in BAD_CLASSIFICATIONS


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
        return sorted(latest.values(), key=lambda x: (not x.failing, x.name))

    def metric_history(self, name: str) -> list[tuple[MeasurementEntry, MetricLook]]:
        """Every look that judged metric `name`, oldest first."""
        return [(m, look) for m in self.measurements for look in m.metrics if look.name == name]


# -- per-side distributions, computed where the data is (canary/look.py) ---------------


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _histogram_quantiles(hist: Histogram) -> list[float | None]:
    counts = hist.counts
    total = float(counts.sum())
    if total <= 0:
        return [None] * len(QUANTILES)
    upper = hist.upper_bounds.copy()
    finite = upper[np.isfinite(upper)]
    # The +Inf bucket has no width: place its mass at the last finite bound.
    if finite.size:
        upper[~np.isfinite(upper)] = finite[-1]
    lower = np.concatenate(([min(0.0, float(upper[0]))], upper[:-1]))
    cum = np.cumsum(counts)
    out: list[float | None] = []
    for q in QUANTILES:
        rank = q * total
        i = int(np.searchsorted(cum, rank, side="left"))
        i = min(i, counts.size - 1)
        before = float(cum[i - 1]) if i else 0.0
        frac = (rank - before) / float(counts[i]) if counts[i] > 0 else 1.0
        out.append(_finite(float(lower[i] + (upper[i] - lower[i]) * min(max(frac, 0.0), 1.0))))
    return out


def summarize_side(data: MetricData) -> dict[str, Any]:
    """A compact picture of one version's data at one look, for charts and request rates:
    `q` (values at QUANTILES), `n`, `mean`, and `events`/`trials` for counts."""
    out: dict[str, Any] = {}
    if data.histogram is not None and data.histogram.total > 0:
        out["q"] = _histogram_quantiles(data.histogram)
        out["n"] = data.histogram.total
    elif data.series is not None:
        values = data.series.values[np.isfinite(data.series.values)]
        if values.size:
            out["q"] = [_finite(float(v)) for v in np.quantile(values, QUANTILES)]
            out["n"] = int(values.size)
            out["mean"] = _finite(float(values.mean()))
    if data.counts is not None:
        out["events"] = data.counts.events
        out["trials"] = data.counts.trials
    return out


# -- JSON ----------------------------------------------------------------------------------


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _look_json(x: MetricLook) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": x.name, "classification": x.classification, "reason": x.reason,
        "critical": x.critical, "baseline": x.baseline, "canary": x.canary,
        "evidence": x.evidence,
    }
    if x.baseline_dist or x.canary_dist:
        out["distribution"] = {"quantiles": list(QUANTILES), "baseline": x.baseline_dist,
                               "canary": x.canary_dist}
    return out


def report_json(report: Report) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "rollout": {
            "name": report.name, "service": report.service,
            "baselineVersion": report.baseline_version, "canaryVersion": report.canary_version,
            "judge": report.judge, "phase": report.phase, "verdict": report.verdict,
            "reason": report.reason, "explanation": explain(report),
            "startedAt": iso(report.started_at), "endedAt": iso(report.ended_at),
        },
        "metrics": [_look_json(m) for m in report.final_metrics()],
        "steps": list(report.steps),
        "measurements": [
            {"step": m.step, "weight": m.weight, "phase": m.phase, "decision": m.decision,
             "score": _clean(m.score), "verdict": m.verdict, "message": m.message,
             "windowStart": iso(m.window_start), "windowEnd": iso(m.window_end),
             "errors": m.errors,
             "metrics": [_look_json(x) for x in m.metrics]}
            for m in report.measurements
        ],
        "events": [{"ts": iso(e.ts), "kind": e.kind, "message": e.message}
                   for e in report.events],
        "config": report.config,
    }


# -- words ---------------------------------------------------------------------------------


def number(x: Any, pct: bool = False) -> str:
    """A number as people read it; "–" for missing values and NaN, ∞ for infinities
    (Kayenta's JSON spells those as strings)."""
    if isinstance(x, str):
        return {"Infinity": "+∞", "-Infinity": "−∞"}.get(x, "–" if x == "NaN" else x)
    if x is None or isinstance(x, bool) or not isinstance(x, int | float):
        return "–"
    if math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    if math.isnan(x):
        return "–"
    return f"{x:+.1%}" if pct else f"{x:.4g}"


def strength(ev: dict[str, Any]) -> str:
    """The evidence behind a classification, short: `e=230 / 100` or `p=0.003`."""
    e_value = ev.get("e_value")
    if isinstance(e_value, int | float):
        text = f"e={number(e_value)}"
        if isinstance(ev.get("threshold"), int | float):
            text += f" / {number(ev['threshold'])}"
        return text
    if isinstance(ev.get("p_value"), int | float):
        return f"p={number(ev['p_value'])}"
    return "–"


def interval_text(ev: dict[str, Any]) -> str:
    interval = ev.get("interval")
    if not interval or len(interval) != 2:
        return "–"
    low, high = number(interval[0], True), number(interval[1], True)
    return "–" if low == high == "–" else f"[{low}, {high}]"


def _metric_sentence(look: MetricLook) -> str:
    ev = look.evidence
    parts = [f"{look.name}{' (critical)' if look.critical else ''} was classified "
             f"{look.classification}"]
    effect = ev.get("effect")
    if isinstance(effect, int | float) and math.isfinite(effect):
        conf = ev.get("confidence")
        level = f"{conf:.0%} " if isinstance(conf, int | float) else ""
        parts.append(f": the canary differs from the baseline by {number(effect, True)}"
                     f" ({level}interval {interval_text(ev)})")
    shown = strength(ev)
    if shown != "–":
        parts.append(f", evidence {shown}")
    text = "".join(parts) + "."
    if look.reason:
        text += f" Judge: {look.reason}"
    return text


def explain(report: Report) -> list[str]:
    """The verdict in words: what happened, then one sentence per metric that decided it."""
    failing = [m for m in report.final_metrics() if m.failing]
    lines = [f"The canary {report.canary_version} of {report.service} was "
             f"{_outcome_word(report)}: {report.reason or 'no reason recorded'}."]
    if failing:
        lines += [_metric_sentence(m) for m in failing]
    elif report.verdict == "Promoted":
        lines.append(f"All {len(report.final_metrics())} metric(s) passed at their last look.")
    errors = [f"{name}: {msg}" for m in report.measurements for name, msg in m.errors.items()]
    if errors:
        lines.append(f"{len(errors)} metric fetch(es) failed during the rollout; the last: "
                     f"{errors[-1]}.")
    return lines


def _outcome_word(report: Report) -> str:
    return {"Promoted": "promoted", "Failed": "rolled back", "Aborted": "aborted by hand"}.get(
        report.verdict, f"still {report.phase.lower()}")


# -- Markdown ------------------------------------------------------------------------------


def _cell(text: str, limit: int = 200) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:limit]


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
        f"{iso(report.started_at)} to {iso(report.ended_at)}.",
        "",
        "| metric | result | canary vs baseline | interval | evidence | why |",
        "|---|---|---|---|---|---|",
    ]
    for m in report.final_metrics():
        ev = m.evidence
        crit = " (critical)" if m.critical else ""
        lines.append(f"| {m.name}{crit} | **{m.classification}** | "
                     f"{number(ev.get('effect'), True)} | {interval_text(ev)} | "
                     f"{strength(ev)} | {_cell(m.reason)} |")
    lines += ["", "<details><summary>Steps and events</summary>", "",
              "| step | weight | result | score | message |", "|---|---|---|---|---|"]
    for me in report.measurements:
        lines.append(f"| {me.step + 1} | {me.weight}% | {me.phase} | {number(me.score)} | "
                     f"{_cell(me.message)} |")
    lines += ["", "```"]
    lines += [f"{iso(e.ts)} {e.kind:<12} {e.message}" for e in report.events]
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)
