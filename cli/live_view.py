"""What a person watching a rollout sees: a rich live view on a terminal, plain
timestamped lines otherwise. Both read only the store, so `get --watch` in another
process shows the same as the process running the rollout."""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from canary.spec import Rollout, Step
from canary.store import EventRecord, MeasurementRecord, RolloutRecord, Store

PHASE_STYLE = {
    "Progressing": "cyan", "Paused": "yellow", "Promoting": "green", "Promoted": "bold green",
    "RollingBack": "red", "RolledBack": "bold red", "Aborted": "bold red",
    "Initializing": "cyan",
}
CLASS_STYLE = {"Pass": "green", "High": "bold red", "Low": "bold red", "Nodata": "yellow",
               "NodataFailMetric": "bold red", "Error": "bold red"}
FAILING = ("High", "Low", "NodataFailMetric", "Error")


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _num(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _latest_look(measurements: list[MeasurementRecord]) -> MeasurementRecord | None:
    return next((m for m in reversed(measurements) if m.result.get("judgeResult")), None)


def request_rates(measurements: list[MeasurementRecord]) -> dict[str, float] | None:
    """Requests per second per version in the latest measured window: the most trials
    any metric saw for that version (the mesh's request counter), over the window."""
    latest = next((m for m in reversed(measurements) if m.result.get("sides")), None)
    if latest is None:
        return None
    window = latest.result.get("window") or [latest.window_start, latest.window_end]
    seconds = float(window[1]) - float(window[0])
    if seconds <= 0:
        return None
    rates: dict[str, float] = {}
    for version in ("baseline", "canary"):
        trials = [_num(side.get(version, {}).get("trials")) or _num(side.get(version, {})
                  .get("n")) for side in latest.result["sides"].values()]
        seen = [t for t in trials if t is not None]
        if seen:
            rates[version] = max(seen) / seconds
    return rates or None


def header(rec: RolloutRecord, plan: list[Step],
           measurements: list[MeasurementRecord] | None = None) -> RenderableType:
    spec = rec.spec.get("spec", {})
    weights = rec.weights or {"baseline": 100, "canary": 0}
    plan_len = len(plan)
    phase = Text(rec.phase, style=PHASE_STYLE.get(rec.phase, ""))
    line = Text.assemble(
        (f"{spec.get('service', rec.name)} ", "bold"),
        (f"{spec.get('canary', {}).get('version') or 'canary'} ", "magenta"),
        "vs ",
        (f"{spec.get('baseline', {}).get('version') or 'baseline'}  ", "blue"),
        phase,
        f"  step {min(rec.step_index + 1, plan_len)}/{plan_len}",
    )
    bar_width = 20
    canary = weights.get("canary", 0)
    filled = round(bar_width * canary / 100)
    bar = Text.assemble(
        ("desired ", "dim"), ("█" * filled, "magenta"), ("░" * (bar_width - filled), "blue"),
        (f" canary {canary}% / baseline {weights.get('baseline', 100)}%", ""),
    )
    parts: list[RenderableType] = [line, bar]
    rates = request_rates(measurements or [])
    if rates:
        total = sum(rates.values())
        observed = f"{100 * rates.get('canary', 0.0) / total:.1f}%" if total else "–"
        parts.append(Text.assemble(
            ("actual  ", "dim"), f"canary {observed} of requests  ",
            ("req/s ", "dim"), (f"baseline {rates.get('baseline', 0.0):.1f}", "blue"), "  ",
            (f"canary {rates.get('canary', 0.0):.1f}", "magenta")))
    if rec.message:
        parts.append(Text(rec.message, style="italic"))
    return Group(*parts)


def _step_label(step: Step) -> str:
    if step.set_weight is not None:
        return f"{step.set_weight}%"
    if step.pause is not None:
        return "pause" if step.pause.duration is None else f"pause {step.pause.duration:.0f}s"
    duration = step.analysis.duration if step.analysis is not None else None
    return "look" if duration is None else f"look {duration:.0f}s"


def timeline(rec: RolloutRecord, plan: list[Step]) -> RenderableType:
    """The plan as one wrapped line: done steps green, the current one highlighted, the
    step a rollback happened at red."""
    text = Text()
    failed = rec.phase in ("RollingBack", "RolledBack", "Aborted")
    for i, step in enumerate(plan):
        if i:
            text.append(" › ", style="dim")
        label = _step_label(step)
        if i < rec.step_index:
            text.append(f"✓{label}", style="green")
        elif i == rec.step_index and not rec.terminal:
            text.append(f"▶{label}", style="reverse red" if failed else "reverse cyan")
        elif i == rec.step_index and failed:
            text.append(f"✗{label}", style="bold red")
        elif rec.phase == "Promoted":
            text.append(f"✓{label}", style="green")
        else:
            text.append(label, style="dim")
    return text


def _evidence_bar(value: float | None, threshold: float | None, width: int = 5) -> str:
    # Progress of log(e) toward log(boundary): the boundary is where the judge decides.
    if value is None or threshold is None or threshold <= 1 or value <= 0:
        return ""
    frac = min(max(math.log(value) / math.log(threshold), 0.0), 1.0)
    filled = round(frac * width)
    return "▮" * filled + "▯" * (width - filled)


def metrics_table(measurements: list[MeasurementRecord]) -> RenderableType:
    latest = _latest_look(measurements)
    if latest is None:
        return Text("waiting for the first look…", style="dim")
    table = Table(expand=True, box=None, pad_edge=False, show_edge=False)
    table.add_column("metric", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("result", ratio=2, no_wrap=True)
    table.add_column("change", ratio=2, justify="right", no_wrap=True)
    table.add_column("to fail", ratio=4, no_wrap=True, overflow="ellipsis")
    table.add_column("to pass", ratio=2, no_wrap=True, overflow="ellipsis")
    results = sorted(latest.result["judgeResult"].get("results", []),
                     key=lambda r: (r.get("classification") not in FAILING, r["name"]))
    for r in results:
        ev: dict[str, Any] = r.get("evidence", {})
        effect = _num(ev.get("effect"))
        shown = f"{effect:+.1%}" if effect is not None else "–"
        threshold = _num(ev.get("threshold"))
        e_worse = _num(ev.get("e_value"))
        if e_worse is not None:
            toward_fail = f"{_evidence_bar(e_worse, threshold)} e={e_worse:.3g}"
            if threshold is not None:
                toward_fail += f"/{threshold:.3g}"
        elif _num(ev.get("p_value")) is not None:
            toward_fail = f"p={ev['p_value']:.3g}"
        else:
            toward_fail = ""
        e_within = _num((ev.get("details") or {}).get("e_within"))
        toward_pass = _evidence_bar(e_within, threshold)
        cls = r.get("classification", "")
        style = CLASS_STYLE.get(cls, "")
        table.add_row(Text(r["name"] + (" *" if r.get("critical") else ""),
                           style="bold red" if cls in FAILING else ""),
                      Text(cls, style=style), shown,
                      Text(toward_fail, style="red" if cls in FAILING else ""),
                      Text(toward_pass, style="green"))
    return table


def events_text(events: list[EventRecord], limit: int = 6) -> RenderableType:
    text = Text(overflow="fold")
    for ev in events[-limit:]:
        style = "red" if ev.kind in ("rollback", "rolledback", "router-error") else ""
        text.append(f"{_clock(ev.ts)} ", style="dim")
        text.append(ev.message[:200] + "\n", style=style)
    text.rstrip()
    return text


def render(rec: RolloutRecord, plan: list[Step], measurements: list[MeasurementRecord],
           events: list[EventRecord]) -> RenderableType:
    latest = _latest_look(measurements)
    look_title = "metrics" if latest is None else (
        f"metrics at step {latest.step_index + 1} ({latest.weight}% canary): {latest.phase}")
    return Group(
        Panel(Group(header(rec, plan, measurements), timeline(rec, plan)), title="canaryctl",
              title_align="left"),
        Panel(metrics_table(measurements), title=look_title, title_align="left"),
        Panel(events_text(events), title="events", title_align="left"),
    )


class Watcher:
    """Follows one rollout in the store and shows it, live or as plain lines."""

    def __init__(self, store: Store, name: str, live: bool, out: TextIO | None = None) -> None:
        self.store = store
        self.name = name
        self.out = out or sys.stdout
        self.live = live
        self._last_event = 0
        self._live: Any = None
        self._plan: list[Step] | None = None

    def plan(self, rec: RolloutRecord) -> list[Step]:
        if self._plan is None:
            self._plan = Rollout.model_validate(rec.spec).spec.plan()
        return self._plan

    def start(self) -> None:
        if self.live:
            from rich.live import Live

            console = Console(file=self.out)
            self._live = Live(Text("starting…"), console=console, refresh_per_second=4,
                              transient=False)
            self._live.start()

    def refresh(self) -> None:
        rec = self.store.get_rollout(self.name)
        if rec is None:
            return
        if self._live is not None:
            self._live.update(render(rec, self.plan(rec), self.store.measurements(self.name),
                                     self.store.events(self.name)))
            return
        for ev in self.store.events(self.name, self._last_event):
            stamp = datetime.fromtimestamp(ev.ts).strftime("%Y-%m-%dT%H:%M:%S")
            print(f"{stamp} {self.name} {ev.kind}: {ev.message}", file=self.out, flush=True)
            self._last_event = ev.id

    def stop(self) -> None:
        self.refresh()
        if self._live is not None:
            self._live.stop()
            self._live = None


def watch_until_done(store: Store, name: str, live: bool, poll: float = 0.5) -> RolloutRecord:
    """`canaryctl get NAME --watch`: follow a rollout another process runs."""
    watcher = Watcher(store, name, live)
    watcher.start()
    try:
        while True:
            watcher.refresh()
            rec = store.get_rollout(name)
            if rec is None or rec.terminal:
                break
            time.sleep(poll)
    finally:
        watcher.stop()
    assert rec is not None
    return rec
