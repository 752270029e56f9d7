"""Report rendering budget: a rollout of 50 metrics over 20 steps must build and render
(JSON, Markdown and HTML) in 2 s or less, with HTML of at most 2 MB.

Run from the repository root: .venv/bin/python benchmarks/report_bench.py
Prints the numbers and their ratio to the budget; the reference in the same run is
serialising the same report's JSON, so the ratio shows what the charts cost."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import report_json, report_markdown
from analysis.report_html import report_html
from canary.report_files import build_report
from canary.store import Store
from tests.report_scenario import fill_rollout, fixed_clock

METRICS, STEPS = 50, 20
TIME_BUDGET_S, HTML_BUDGET_BYTES = 2.0, 2 * 1024 * 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, fixed_clock() as clock:
        store = Store(tmp)
        weights = tuple(round(1 + i * 94 / (STEPS - 1)) for i in range(STEPS))
        fill_rollout(store, clock, n_metrics=METRICS, weights=weights, fail_at=STEPS - 1)
        rec = store.get_rollout("checkout")
        assert rec is not None
        best: dict[str, float] = {}
        for _ in range(3):
            t0 = time.perf_counter()
            report = build_report(store, rec)
            t1 = time.perf_counter()
            json_text = json.dumps(report_json(report), indent=2)
            t2 = time.perf_counter()
            md_text = report_markdown(report)
            t3 = time.perf_counter()
            html_text = report_html(report)
            t4 = time.perf_counter()
            for key, value in (("build", t1 - t0), ("json", t2 - t1), ("md", t3 - t2),
                               ("html", t4 - t3), ("total", t4 - t0)):
                best[key] = min(best.get(key, value), value)
        store.close()
    html_bytes = len(html_text.encode())
    print(f"report for {METRICS} metrics x {STEPS} steps "
          f"({len(report.measurements)} measurements), best of 3:")
    for key in ("build", "json", "md", "html"):
        print(f"  {key:<6} {best[key] * 1000:8.1f} ms")
    print(f"  total  {best['total'] * 1000:8.1f} ms  = {best['total'] / TIME_BUDGET_S:.3f} "
          f"of the {TIME_BUDGET_S:.0f} s budget")
    print(f"  html   {html_bytes / 1024:8.1f} KiB = {html_bytes / HTML_BUDGET_BYTES:.3f} of the "
          f"2 MiB budget (json {len(json_text) / 1024:.1f} KiB, md {len(md_text) / 1024:.1f} KiB)")
    print(f"  html render vs json serialise (reference): {best['html'] / best['json']:.2f}x")
    ok = best["total"] <= TIME_BUDGET_S and html_bytes <= HTML_BUDGET_BYTES
    print("within budget" if ok else "OVER BUDGET")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
