"""What a person watching sees at a rollback, at 80 and 120 columns, and the plain lines
a pipeline log gets. The store is filled through its own API, as the controller does."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from canary.store import Store
from cli.live_view import Watcher, metrics_table, render, request_rates
from tests.report_scenario import fill_rollout, fixed_clock


@pytest.fixture
def rolled_back(tmp_path: Path) -> Iterator[Store]:
    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock, fail_at=1)
    yield store
    store.close()


def _screen(store: Store, width: int) -> str:
    rec = store.get_rollout("checkout")
    assert rec is not None
    console = Console(record=True, width=width, force_terminal=True, color_system="truecolor")
    plan = Watcher(store, "checkout", live=False).plan(rec)
    console.print(render(rec, plan, store.measurements("checkout"), store.events("checkout")))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_rollback_screen_shows_phase_failing_metric_and_reason(rolled_back: Store,
                                                               width: int) -> None:
    screen = _screen(rolled_back, width)
    lines = screen.splitlines()
    assert all(len(line) <= width for line in lines)
    header = next(line for line in lines if "checkout v1.5.0 vs v1.4.2" in line)
    assert "RolledBack" in header and "step 4/6" in header
    # Desired weights after the rollback, and what the proxies actually served last.
    assert "canary 0% / baseline 100%" in screen
    assert "canary 25.0% of requests" in screen
    assert re.search(r"baseline 375\.0\s+canary 125\.0", screen)
    # The failing critical metric comes first in the table, with its numbers.
    rows = [line for line in lines if re.search(r"\b(High|Pass)\b", line)]
    assert "error-rate *" in rows[0] and "High" in rows[0]
    assert "+760.0%" in rows[0] and "e=1.58e+03/100" in rows[0]
    assert all("Pass" in r for r in rows[1:]) and len(rows) == 3
    # The reason in full (wrapped, never cut), so nobody has to open the report to see it.
    flat = " ".join(" ".join(line.strip("│ ").split()) for line in lines)
    assert ("error-rate is higher in the canary by more than the 20% margin: evidence e = "
            "1.58e+03 >= 100; estimated change +760.0%") in flat
    assert "canary weight is 0: all traffic on the baseline" in flat
    # The timeline marks the step the rollback happened at and keeps the rest unrun.
    assert "✓5% › ✓look 120s › ✓25% › ✗look 120s › 50% › look 120s" in flat


def test_narrow_screen_keeps_every_metric_row_on_one_line(tmp_path: Path) -> None:
    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock, n_metrics=12, fail_at=2)
    screen = _screen(store, 80)
    for i in range(3, 12):
        assert len([line for line in screen.splitlines() if f"metric-{i:02d}" in line]) == 1
    store.close()


def test_before_the_first_look_the_table_says_so(tmp_path: Path) -> None:
    console = Console(record=True, width=80)
    console.print(metrics_table([]))
    assert "waiting for the first look" in console.export_text()
    assert request_rates([]) is None


def test_request_rates_come_from_the_latest_window(rolled_back: Store) -> None:
    rates = request_rates(rolled_back.measurements("checkout"))
    # At 25% canary the scenario sends 600 * weight requests per version in a 120 s window.
    assert rates is not None
    assert rates["baseline"] == pytest.approx(375.0)
    assert rates["canary"] == pytest.approx(125.0)


def test_plain_lines_when_not_live(rolled_back: Store) -> None:
    out = io.StringIO()
    watcher = Watcher(rolled_back, "checkout", live=False, out=out)
    watcher.start()
    watcher.refresh()
    watcher.refresh()  # a second refresh prints nothing new
    watcher.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == len(rolled_back.events("checkout")) == 7
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d checkout "
    assert all(re.match(stamp, line) for line in lines)
    assert re.match(stamp + r"rollback: rolling back: error-rate is higher", lines[-2])
    assert "\x1b[" not in out.getvalue()


def test_live_mode_draws_the_rollback_into_the_console(rolled_back: Store) -> None:
    out = io.StringIO()
    watcher = Watcher(rolled_back, "checkout", live=True, out=out)
    watcher.start()
    watcher.refresh()
    watcher.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "RolledBack" in text and "error-rate" in text


def test_ctrl_c_abort_writes_the_rollback_decision_for_the_next_controller(
        tmp_path: Path) -> None:
    from cli.rollout_runner import interrupt_choice_is_abort

    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock, fail_at=None)
        # Back to the middle of the rollout, as if Ctrl-C came during step 4.
        store.update_rollout("checkout", phase="Progressing", step_index=3, verdict=None,
                             weights={"baseline": 75, "canary": 25})
    assert not interrupt_choice_is_abort(store, "checkout", ask=lambda: False)
    rec = store.get_rollout("checkout")
    assert rec is not None and rec.phase == "Progressing"
    assert interrupt_choice_is_abort(store, "checkout", ask=lambda: True)
    rec = store.get_rollout("checkout")
    assert rec is not None
    assert (rec.phase, rec.verdict, rec.weights) == (
        "RollingBack", "Aborted", {"baseline": 100, "canary": 0})
    assert store.events("checkout")[-1].kind == "rollback"
    store.close()


def test_ctrl_c_never_asks_about_a_rollout_that_ended(rolled_back: Store) -> None:
    from cli.rollout_runner import interrupt_choice_is_abort

    def ask() -> bool:
        raise AssertionError("must not ask")

    assert not interrupt_choice_is_abort(rolled_back, "checkout", ask=ask)
