"""The HTML report opened in real headless Chromium (Debian's `chromium`, installed by
tests/system_deps.sh), driven by Playwright: it renders with no console errors and no
network, draws a chart for every metric, and leaves a screenshot to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from canary.report_files import write_reports
from canary.store import Store
from tests.report_scenario import fill_rollout, fixed_clock

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium: run tests/system_deps.sh")


def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    with fixed_clock() as clock:
        store = Store(tmp_path / "state")
        fill_rollout(store, clock, n_metrics=5, fail_at=1)
        rec = store.get_rollout("checkout")
        assert rec is not None
        html_path = write_reports(store, rec, tmp_path / "reports")["html"]
        store.close()

    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.as_uri(), wait_until="load")
            figures = page.locator("figure.metric-chart")
            names = [figures.nth(i).get_attribute("data-metric")
                     for i in range(figures.count())]
            assert names == ["error-rate", "cpu-seconds", "latency-p99", "metric-03",
                             "metric-04"]
            for i in range(figures.count()):
                box = figures.nth(i).locator("svg").first.bounding_box()
                assert box is not None and box["width"] > 100 and box["height"] > 100
                # The baseline and canary lines were actually drawn.
                assert figures.nth(i).locator("svg").first.locator("polyline").count() >= 2
            assert page.locator(".verdict").inner_text().startswith("Failed")
            assert "error-rate (critical) was classified High" in page.locator(
                ".why").inner_text()
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert requests == [html_path.as_uri()]
    assert screenshot.stat().st_size > 10_000
