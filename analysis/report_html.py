"""The report for people: one self-contained HTML file with inline SVG charts.

No scripts, fonts or images from anywhere: the file must open on a laptop with no
network, from a CI artifact or a mail attachment. Charts are drawn here as SVG so the
report needs nothing but the standard library to render.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape

from analysis.report import (
    QUANTILES,
    MetricLook,
    Report,
    explain,
    interval_text,
    iso,
    number,
    strength,
)

BASELINE = "#3461a8"
CANARY = "#d9480f"
PASS = "#2b8a3e"
FAIL = "#c92a2a"
MUTED = "#adb5bd"
PHASE_COLOR = {"Successful": PASS, "Failed": FAIL, "Inconclusive": "#e67700",
               "Error": "#862e9c"}

Point = tuple[float, float]


def _num(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


@dataclass
class Line:
    label: str
    color: str
    points: list[Point]
    step: bool = False
    width: float = 2.0
    dots: bool = True
    point_colors: list[str] = field(default_factory=list)


@dataclass
class Frame:
    """A plot area mapping data coordinates to SVG pixels."""

    width: int
    height: int
    x0: float
    x1: float
    y0: float
    y1: float
    left: int = 48
    right: int = 10
    top: int = 10
    bottom: int = 24

    def x(self, v: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        return self.height - self.bottom - (v - self.y0) / span * (
            self.height - self.top - self.bottom)


def _nice_range(values: Iterable[float], pad: float = 0.08) -> tuple[float, float]:
    vs = [v for v in values if math.isfinite(v)]
    if not vs:
        return 0.0, 1.0
    lo, hi = min(vs), max(vs)
    if lo == hi:
        delta = abs(lo) * 0.1 or 1.0
        return lo - delta, hi + delta
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 12))
        v += step
    return out


def _tick_label(t: float, ticks: list[float]) -> str:
    # Enough decimals that neighbouring ticks never print the same text.
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(t) or 1.0
    big = max(abs(ticks[0]), abs(ticks[-1]))
    if big >= 1e5 or (big and big < 1e-3):
        return f"{t:.2e}"
    decimals = max(0, -math.floor(math.log10(step)))
    if not math.isclose(round(step, decimals), step):
        decimals += 1
    return f"{t:.{decimals}f}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _axes(f: Frame, y_fmt: str, x_is_time: bool) -> list[str]:
    out = [f'<rect x="{f.left}" y="{f.top}" width="{f.width - f.left - f.right}" '
           f'height="{f.height - f.top - f.bottom}" fill="#fff" stroke="#dee2e6"/>']
    yticks = _ticks(f.y0, f.y1)
    for t in yticks:
        y = f.y(t)
        label = f"{t:.0%}" if y_fmt == "pct" else _tick_label(t, yticks)
        if y_fmt == "pow10":
            label = f"1e{t:.0f}" if abs(t) >= 3 else f"{10 ** t:.3g}"
        out.append(f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#f1f3f5"/><text x="{f.left - 4}" y="{y + 3:.1f}" '
                   f'text-anchor="end">{escape(label)}</text>')
    for t in _ticks(f.x0, f.x1, 5):
        x = f.x(t)
        label = f"+{_duration(t)}" if x_is_time else f"{t:.3g}"
        out.append(f'<text x="{x:.1f}" y="{f.height - 8}" text-anchor="middle">'
                   f'{escape(label)}</text>')
    return out


def _svg(f: Frame, title: str, body: Sequence[str], legend: Sequence[tuple[str, str]] = ()
         ) -> str:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {f.width} {f.height}" '
             f'width="{f.width}" height="{f.height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>', *body]
    x = f.left + 6
    for label, color in legend:
        parts.append(f'<rect x="{x}" y="{f.top + 4}" width="10" height="3" fill="{color}"/>'
                     f'<text x="{x + 13}" y="{f.top + 9}">{escape(label)}</text>')
        x += 20 + 6 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, lines: Sequence[Line], *, width: int = 360, height: int = 170,
               x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None, y_fmt: str = "num",
               hlines: Sequence[tuple[float, str, str]] = (),
               bands: Sequence[tuple[list[tuple[float, float, float]], str]] = ()) -> str:
    """Lines over time (x in seconds since the rollout started); `bands` are shaded
    intervals (x, low, high); `hlines` reference lines (y, label, color)."""
    xs = [p[0] for ln in lines for p in ln.points] + [b[0] for band, _ in bands for b in band]
    ys = ([p[1] for ln in lines for p in ln.points] + [h[0] for h in hlines]
          + [v for band, _ in bands for b in band for v in b[1:]])
    x0, x1 = x_range or (min(xs, default=0.0), max(xs, default=1.0))
    y0, y1 = y_range or _nice_range(ys)
    f = Frame(width, height, x0, x1 if x1 > x0 else x0 + 1, y0, y1)
    body = _axes(f, y_fmt, x_is_time=True)
    for band, color in bands:
        if not band:
            continue
        upper = " ".join(f"{f.x(x):.1f},{f.y(hi):.1f}" for x, _, hi in band)
        lower = " ".join(f"{f.x(x):.1f},{f.y(lo):.1f}" for x, lo, _ in reversed(band))
        body.append(f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.15"/>')
    for y, label, color in hlines:
        if f.y0 <= y <= f.y1:
            body.append(f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{f.y(y):.1f}" '
                        f'y2="{f.y(y):.1f}" stroke="{color}" stroke-dasharray="4 3"/>'
                        f'<text x="{f.width - f.right - 2}" y="{f.y(y) - 3:.1f}" '
                        f'text-anchor="end" fill="{color}">{escape(label)}</text>')
    for ln in lines:
        if not ln.points:
            continue
        pts: list[Point] = []
        for i, p in enumerate(ln.points):
            if ln.step and i:
                pts.append((p[0], ln.points[i - 1][1]))
            pts.append(p)
        coords = " ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in pts)
        body.append(f'<polyline points="{coords}" fill="none" stroke="{ln.color}" '
                    f'stroke-width="{ln.width}"><title>{escape(ln.label)}</title></polyline>')
        if ln.dots:
            for i, (x, y) in enumerate(ln.points):
                color = ln.point_colors[i] if i < len(ln.point_colors) else ln.color
                body.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="3" '
                            f'fill="{color}"><title>{escape(ln.label)}: {y:.4g}</title>'
                            f'</circle>')
    legend = [(ln.label, ln.color) for ln in lines if ln.label and len(lines) <= 4]
    return _svg(f, title, body, legend)


def box_chart(title: str, boxes: Sequence[tuple[str, str, list[float | None]]], *,
              width: int = 220, height: int = 170) -> str:
    """Distributions side by side as box plots of QUANTILES (5, 25, 50, 75, 95%)."""
    ys = [v for _, _, q in boxes for v in q if v is not None]
    y0, y1 = _nice_range(ys)
    f = Frame(width, height, 0, len(boxes), y0, y1)
    body = _axes(f, "num", x_is_time=False)[:1]
    body += [part for part in _axes(f, "num", x_is_time=False)[1:] if "<line" in part]
    slot = (f.width - f.left - f.right) / max(len(boxes), 1)
    for i, (label, color, q) in enumerate(boxes):
        cx = f.left + slot * (i + 0.5)
        body.append(f'<text x="{cx:.1f}" y="{f.height - 8}" text-anchor="middle">'
                    f'{escape(label)}</text>')
        if any(v is None for v in q):
            body.append(f'<text x="{cx:.1f}" y="{f.height / 2:.1f}" text-anchor="middle" '
                        f'fill="{MUTED}">no data</text>')
            continue
        p5, p25, p50, p75, p95 = (float(v) for v in q if v is not None)
        half = min(slot * 0.3, 28)
        tip = (f"{label}: p5 {p5:.4g}, p25 {p25:.4g}, median {p50:.4g}, p75 {p75:.4g}, "
               f"p95 {p95:.4g}")
        body.append(
            f'<g><title>{escape(tip)}</title>'
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{f.y(p5):.1f}" y2="{f.y(p95):.1f}" '
            f'stroke="{color}"/>'
            f'<rect x="{cx - half:.1f}" y="{f.y(p75):.1f}" width="{2 * half:.1f}" '
            f'height="{max(f.y(p25) - f.y(p75), 1):.1f}" fill="{color}" fill-opacity="0.25" '
            f'stroke="{color}"/>'
            f'<line x1="{cx - half:.1f}" x2="{cx + half:.1f}" y1="{f.y(p50):.1f}" '
            f'y2="{f.y(p50):.1f}" stroke="{color}" stroke-width="2.5"/></g>')
    return _svg(f, title, body)


# -- what each chart shows -------------------------------------------------------------


def _stats_quantiles(stats: dict[str, object]) -> list[float | None]:
    # Measurements without a stored distribution still have Kayenta's stats: draw
    # min / mean-std / mean / mean+std / max, which is honest about spread if not shape.
    mean, std = _num(stats.get("mean")), _num(stats.get("std")) or 0.0
    lo, hi = _num(stats.get("min")), _num(stats.get("max"))
    if mean is None or lo is None or hi is None:
        return [None] * len(QUANTILES)
    return [lo, max(lo, mean - std), mean, min(hi, mean + std), hi]


def _side_quantiles(dist: dict[str, object], stats: dict[str, object]) -> list[float | None]:
    q = dist.get("q")
    if isinstance(q, list) and len(q) == len(QUANTILES):
        return [_num(v) for v in q]
    return _stats_quantiles(stats)


def _side_value(dist: dict[str, object], stats: dict[str, object]) -> float | None:
    value = _num(stats.get("mean"))
    if value is None:
        value = _num(dist.get("mean"))
    q = dist.get("q")
    if value is None and isinstance(q, list) and len(q) == len(QUANTILES):
        value = _num(q[QUANTILES.index(0.5)])  # histograms: the median
    if value is None:
        events, trials = _num(dist.get("events")), _num(dist.get("trials"))
        if events is not None and trials:
            value = events / trials
    return value


def _rel(report: Report, t: float) -> float:
    return t - report.started_at


def _log10_evidence(look: MetricLook) -> float | None:
    e_value = _num(look.evidence.get("e_value"))
    if e_value is not None and e_value > 0:
        return math.log10(e_value)
    p_value = _num(look.evidence.get("p_value"))
    if p_value is not None and p_value > 0:
        return -math.log10(p_value)
    return None


def overview_chart(report: Report) -> str:
    end = _rel(report, report.ended_at)
    weights: list[Point] = [(0.0, 0.0)]
    for step in report.steps:
        at, weight = _num(step.get("at")), _num(step.get("canaryWeight"))
        if at is not None and weight is not None:
            weights.append((_rel(report, at), weight))
    if report.phase in ("RolledBack", "Aborted"):
        weights.append((end, 0.0))
    elif report.phase == "Promoted":
        weights.append((end, 100.0))
    weights.append((end, weights[-1][1]))
    scores = [(_rel(report, m.window_end), m.score) for m in report.measurements
              if _num(m.score) is not None]
    colors = [PHASE_COLOR.get(m.phase, MUTED) for m in report.measurements
              if _num(m.score) is not None]
    lines = [Line("canary weight %", CANARY, weights, step=True, dots=False),
             Line("score", "#495057", [(x, float(y or 0)) for x, y in scores],
                  point_colors=colors)]
    return line_chart("canary weight and judge score over time", lines, width=720,
                      height=220, x_range=(0.0, max(end, 1.0)), y_range=(0.0, 105.0))


def evidence_chart(report: Report) -> str:
    failing = {m.name for m in report.final_metrics() if m.failing}
    lines = []
    threshold = None
    for m in report.final_metrics():
        pts = []
        for me, look in report.metric_history(m.name):
            v = _log10_evidence(look)
            if v is not None:
                pts.append((_rel(report, me.window_end), v))
            threshold = threshold or _num(look.evidence.get("threshold"))
        if pts:
            lines.append(Line(m.name, FAIL if m.name in failing else MUTED, pts,
                              width=2.5 if m.name in failing else 1.0,
                              dots=m.name in failing))
    # Failing metrics drawn last so they sit on top of the grey crowd.
    lines.sort(key=lambda ln: ln.color == FAIL)
    hlines = [(math.log10(threshold), f"boundary e={threshold:.3g}", FAIL)] if threshold else []
    return line_chart("evidence that the canary is worse, per metric (log10 e-value, or "
                      "-log10 p)", lines, width=720, height=220,
                      x_range=(0.0, max(_rel(report, report.ended_at), 1.0)),
                      y_fmt="pow10", hlines=hlines)


def metric_figure(report: Report, final: MetricLook) -> str:
    history = report.metric_history(final.name)
    base = [(_rel(report, me.window_end), v) for me, lk in history
            if (v := _side_value(lk.baseline_dist, lk.baseline)) is not None]
    can = [(_rel(report, me.window_end), v) for me, lk in history
           if (v := _side_value(lk.canary_dist, lk.canary)) is not None]
    x_range = (0.0, max(_rel(report, report.ended_at), 1.0))
    over_time = line_chart(f"{final.name}: baseline vs canary over time",
                           [Line(report.baseline_version, BASELINE, base),
                            Line(report.canary_version, CANARY, can)], x_range=x_range)
    boxes = [(report.baseline_version, BASELINE,
              _side_quantiles(final.baseline_dist, final.baseline)),
             (report.canary_version, CANARY, _side_quantiles(final.canary_dist, final.canary))]
    distribution = box_chart(f"{final.name}: distribution at the last look", boxes)
    effects, band = [], []
    for me, lk in history:
        eff = _num(lk.evidence.get("effect"))
        if eff is None:
            continue
        x = _rel(report, me.window_end)
        effects.append((x, eff))
        interval = lk.evidence.get("interval")
        if isinstance(interval, list) and len(interval) == 2:
            lo, hi = _num(interval[0]), _num(interval[1])
            if lo is not None and hi is not None:
                band.append((x, lo, hi))
    color = FAIL if final.failing else PASS
    effect = line_chart(f"{final.name}: estimated change with its interval", [
        Line("canary vs baseline", color, effects)], x_range=x_range, y_fmt="pct",
        hlines=[(0.0, "no change", "#868e96")], bands=[(band, color)])
    cls = "fail" if final.failing else "pass" if final.classification == "Pass" else "other"
    crit = ' <span class="tag">critical</span>' if final.critical else ""
    return (
        f'<figure class="metric-chart {cls}" data-metric="{escape(final.name)}">'
        f'<figcaption><span class="badge {cls}">{escape(final.classification)}</span> '
        f'<b>{escape(final.name)}</b>{crit} — change '
        f'{escape(number(final.evidence.get("effect"), True))}, interval '
        f'{escape(interval_text(final.evidence))}, evidence '
        f'{escape(strength(final.evidence))}<br><small>{escape(final.reason)}</small>'
        f'</figcaption><div class="charts">{over_time}{distribution}{effect}</div></figure>')


# -- the page ----------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#212529;background:#f8f9fa}
main{max-width:1180px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:24px 0 8px}
.verdict{padding:12px 16px;border-radius:6px;color:#fff}
.verdict.Failed,.verdict.Aborted{background:#c92a2a}.verdict.Promoted{background:#2b8a3e}
.verdict.Running{background:#1971c2}
.why p{margin:4px 0}.meta{color:#495057}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border:1px solid #dee2e6;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f1f3f5}
svg{font-size:10px;fill:#495057;background:#fff;margin:2px}
figure{background:#fff;border:1px solid #dee2e6;border-radius:6px;margin:10px 0;padding:8px}
figure.fail{border-left:5px solid #c92a2a}figure.pass{border-left:5px solid #2b8a3e}
.charts{display:flex;flex-wrap:wrap;gap:4px}
.badge{color:#fff;border-radius:3px;padding:0 6px;background:#868e96}
.badge.fail{background:#c92a2a}.badge.pass{background:#2b8a3e}
.tag{border:1px solid #c92a2a;color:#c92a2a;border-radius:3px;padding:0 4px;font-size:11px}
pre{background:#fff;border:1px solid #dee2e6;padding:8px;overflow-x:auto;font-size:12px}
"""


def _row(*cells: str) -> str:
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def report_html(report: Report) -> str:
    finals = report.final_metrics()
    failing = [m for m in finals if m.failing]
    summary_rows = "".join(
        _row(m.name + (" (critical)" if m.critical else ""), m.classification,
             number(m.evidence.get("effect"), True), interval_text(m.evidence),
             strength(m.evidence), m.reason)
        for m in finals)
    measurement_rows = "".join(
        _row(str(m.step + 1), f"{m.weight}%", iso(m.window_end), m.phase, number(m.score),
             m.message)
        for m in report.measurements)
    step_rows = "".join(
        _row(iso(float(s["at"])) if _num(s.get("at")) is not None else "–",
             f"{s.get('canaryWeight')}%", str(s.get("message", "")))
        for s in report.steps)
    events = "\n".join(f"{iso(e.ts)} {e.kind:<12} {e.message}" for e in report.events)
    figures = "".join(metric_figure(report, m) for m in finals)
    why = "".join(f"<p>{escape(line)}</p>" for line in explain(report))
    title = (f"canary {report.verdict.lower()}: {report.service} {report.canary_version} "
             f"vs {report.baseline_version}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{escape(title)}</h1>
<div class="verdict {escape(report.verdict)}"><b>{escape(report.verdict)}</b> —
{escape(report.reason or "no reason recorded")}</div>
<p class="meta">Rollout <code>{escape(report.name)}</code>, judge
<code>{escape(report.judge)}</code>, phase {escape(report.phase)},
{len(report.measurements)} measurement(s), {len(finals)} metric(s)
({len(failing)} failing), {iso(report.started_at)} to {iso(report.ended_at)}.</p>
<section class="why"><h2>Why</h2>{why}</section>
<section><h2>Metrics at their last look</h2>
<table><thead><tr><th>metric</th><th>result</th><th>canary vs baseline</th><th>interval</th>
<th>evidence</th><th>why</th></tr></thead><tbody>{summary_rows}</tbody></table></section>
<section><h2>Traffic and score over time</h2>
<p class="meta">The canary's traffic weight (steps) and the judge's score at each look
(dots coloured by the measurement's phase).</p>{overview_chart(report)}</section>
<section><h2>Evidence over time</h2>
<p class="meta">A metric fails when its evidence crosses the boundary; failing metrics in
red.</p>{evidence_chart(report)}</section>
<section><h2>Per metric</h2>
<p class="meta"><span style="color:{BASELINE}">■</span> baseline
{escape(report.baseline_version)}, <span style="color:{CANARY}">■</span> canary
{escape(report.canary_version)}. Boxes: 5th, 25th, 50th, 75th, 95th percentile.</p>
{figures}</section>
<section><h2>Weight steps</h2><table><thead><tr><th>at</th><th>canary weight</th>
<th>message</th></tr></thead><tbody>{step_rows}</tbody></table></section>
<section><h2>Measurements</h2><table><thead><tr><th>step</th><th>weight</th><th>at</th>
<th>result</th><th>score</th><th>message</th></tr></thead><tbody>{measurement_rows}
</tbody></table></section>
<section><h2>Events</h2><pre>{escape(events)}</pre></section>
</main></body></html>
"""
