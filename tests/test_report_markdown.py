"""The Markdown report of a realistic rollback, checked against a reviewed snapshot.

Regenerate after an intended change with CANARYCTL_UPDATE_SNAPSHOTS=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.report import report_markdown
from canary.report_files import build_report
from canary.store import Store
from tests.report_scenario import fill_rollout, fixed_clock

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _markdown(tmp_path: Path, fail_at: int | None) -> str:
    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock, fail_at=fail_at)
        rec = store.get_rollout("checkout")
        assert rec is not None
        text = report_markdown(build_report(store, rec))
        store.close()
    return text


def _check(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("CANARYCTL_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_rollback_markdown_matches_snapshot(tmp_path: Path) -> None:
    _check("report_rollback.md", _markdown(tmp_path, fail_at=1))


def test_promotion_markdown_matches_snapshot(tmp_path: Path) -> None:
    _check("report_promoted.md", _markdown(tmp_path, fail_at=None))


def test_rollback_markdown_puts_verdict_and_failing_metric_first(tmp_path: Path) -> None:
    text = _markdown(tmp_path, fail_at=1)
    lines = text.splitlines()
    assert lines[0].startswith("## ❌ canary failed: checkout v1.5.0 vs v1.4.2")
    assert "error-rate is higher in the canary" in lines[2]
    rows = [ln for ln in lines if ln.startswith("| ") and "**" in ln]
    assert rows[0].startswith("| error-rate (critical) | **High** | +760.0% |")
    assert all("**Pass**" in r for r in rows[1:])
    # A PR comment or chat message, not a document.
    assert len(text) < 4000


def test_pipes_in_reasons_do_not_break_the_table(tmp_path: Path) -> None:
    from dataclasses import replace

    with fixed_clock() as clock:
        store = Store(tmp_path)
        fill_rollout(store, clock)
        rec = store.get_rollout("checkout")
        assert rec is not None
        report = build_report(store, rec)
    first = report.measurements[-1]
    looks = tuple(replace(m, reason="a | b\nc") for m in first.metrics)
    report = replace(report, measurements=(*report.measurements[:-1],
                                           replace(first, metrics=looks)))
    for row in [ln for ln in report_markdown(report).splitlines() if ln.startswith("| ")
                and "**" in ln]:
        assert row.count(" | ") == 5 and "a \\| b c" in row
