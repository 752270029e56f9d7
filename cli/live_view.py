"""What a person watching a rollout sees: a rich live view on a terminal, plain
timestamped lines otherwise. Both read only the store, so `get --watch` in another
process shows the same as the process running the rollout."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from canary.spec import Rollout
from canary.store import EventRecord, MeasurementRecord, RolloutRecord, Store

PHASE_STYLE = {
    "Progressing": "cyan", "Paused": "yellow", "Promoting": "green", "Promoted": "bold green",
    "RollingBack": "red", "RolledBack": "bold red", "Aborted": "bold red",
    "Initializing": "cyan",
}
CLASS_STYLE = {"Pass": "green", "High": "bold red", "Low": "bold red", "Nodata": "yellow",
               "NodataFailMetric": "bold red", "Error": "bold red"}


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def header(rec: RolloutRecord, plan_len: int) -> RenderableType:
    spec = rec.spec.get("spec", {})
    weights = rec.weights or {"baseline": 100, "canary": 0}
    phase = Text(rec.phase, style=PHASE_STYLE.get(rec.phase, ""))
    line = Text.assemble(
        (f"{spec.get('service', rec.name)} ", "bold"),
        (f"{spec.get('canary', {}).get('version') or 'canary'} ", "magenta"),
        "vs ",
        (f"{spec.get('baseline', {}).get('version') or 'baseline'}  ", "blue"),
        phase,
        f"  step {min(rec.step_index + 1, plan_len)}/{plan_len}",
    )
    bar_width = 30
    filled = round(bar_width * weights.get("canary", 0) / 100)
    bar = Text.assemble(
        ("canary ", "magenta"), ("█" * filled, "magenta"), ("░" * (bar_width - filled), "blue"),
        (f" {weights.get('canary', 0)}% / baseline {weights.get('baseline', 100)}%", ""),
    )
    parts: list[RenderableType] = [line, bar]
    if rec.message:
        parts.append(Text(rec.message, style="italic"))
    return Group(*parts)


def metrics_table(measurements: list[MeasurementRecord]) -> RenderableType:
    table = Table(expand=True, box=None, pad_edge=False, show_edge=False)
    table.add_column("metric", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("result", ratio=2, no_wrap=True)
    table.add_column("effect", ratio=2, justify="right", no_wrap=True)
    table.add_column("evidence", ratio=3, no_wrap=True, overflow="ellipsis")
    latest = next((m for m in reversed(measurements) if m.result.get("judgeResult")), None)
    if latest is None:
        table.add_row(Text("waiting for the first look…", style="dim"), "", "", "")
        return table
    for r in latest.result["judgeResult"].get("results", []):
        ev: dict[str, Any] = r.get("evidence", {})
        effect = ev.get("effect")
        shown = f"{effect:+.1%}" if isinstance(effect, int | float) else "–"
        if isinstance(ev.get("e_value"), int | float):
            strength = f"e={ev['e_value']:.3g}"
            if isinstance(ev.get("threshold"), int | float):
                strength += f" / {ev['threshold']:.3g}"
        elif isinstance(ev.get("p_value"), int | float):
            strength = f"p={ev['p_value']:.3g}"
        else:
            strength = ""
        cls = r.get("classification", "")
        table.add_row(r["name"] + (" *" if r.get("critical") else ""),
                      Text(cls, style=CLASS_STYLE.get(cls, "")), shown, strength)
    return table


def events_text(events: list[EventRecord], limit: int = 6) -> RenderableType:
    text = Text()
    for ev in events[-limit:]:
        style = "red" if ev.kind in ("rollback", "rolledback", "router-error") else "dim"
        text.append(f"{_clock(ev.ts)} ", style="dim")
        text.append(ev.message[:200] + "\n", style=style if style != "dim" else "")
    return text


def render(rec: RolloutRecord, plan_len: int, measurements: list[MeasurementRecord],
           events: list[EventRecord]) -> RenderableType:
    return Group(
        Panel(header(rec, plan_len), title="canaryctl", title_align="left"),
        Panel(metrics_table(measurements), title="metrics (latest look)", title_align="left"),
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
        self._plan_len = 0

    def _plan(self, rec: RolloutRecord) -> int:
        if not self._plan_len:
            self._plan_len = len(Rollout.model_validate(rec.spec).spec.plan())
        return self._plan_len

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
            self._live.update(render(rec, self._plan(rec), self.store.measurements(self.name),
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
