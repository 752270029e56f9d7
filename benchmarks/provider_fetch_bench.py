"""Fetching one analysis's metrics from the real Prometheus: sequential vs concurrent.

50 metrics x 2 scopes (baseline, canary) of backfilled data, range queries over a
30-minute window; each mode runs several rounds and the median is compared, so the
ratio is measured against the sequential reference in the same run.

    python benchmarks/provider_fetch_bench.py [--metrics 50] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from providers.prometheus import PrometheusProvider
from providers.provider import MetricQuery, Window
from tests.prometheus_server import start_prometheus

STEP = 15
SAMPLES = 240  # an hour of samples per series


def openmetrics(metrics: int, t0: int) -> str:
    lines: list[str] = []
    for m in range(metrics):
        lines.append(f"# TYPE bench_metric_{m} gauge")
        for version in ("baseline", "canary"):
            for i in range(SAMPLES):
                value = m + (i % 7) * 0.5 + (1.0 if version == "canary" else 0.0)
                lines.append(
                    f'bench_metric_{m}{{service="bench",version="{version}"}} {value} '
                    f"{t0 + i * STEP}"
                )
    return "\n".join(lines) + "\n# EOF\n"


def queries(metrics: int, window: Window) -> list[MetricQuery]:
    return [
        MetricQuery(
            f"m{m}",
            f'avg_over_time(bench_metric_{m}{{service="{{{{service}}}}",version="{{{{version}}}}"}}[1m])',
            scope,
            "bench",
            scope,
            window,
            kind="series",
        )
        for m in range(metrics)
        for scope in ("baseline", "canary")
    ]


async def measure(
    url: str, qs: list[MetricQuery], rounds: int, concurrency: int
) -> tuple[float, float]:
    provider = PrometheusProvider("bench", url, concurrency=concurrency)
    try:
        await asyncio.gather(*(provider.fetch(q) for q in qs[:4]))  # warm connections
        seq: list[float] = []
        con: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            for q in qs:
                data = await provider.fetch(q)
                assert data.series is not None and data.series.values.size > 0
            seq.append(time.perf_counter() - start)
            start = time.perf_counter()
            results = await asyncio.gather(*(provider.fetch(q) for q in qs))
            con.append(time.perf_counter() - start)
            assert all(r.series is not None for r in results)
        return statistics.median(seq), statistics.median(con)
    finally:
        await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    t0 = (int(time.time()) - 3 * 3600) // 60 * 60
    prom = start_prometheus(openmetrics=openmetrics(args.metrics, t0))
    try:
        prom.wait_for("bench_metric_0", at=t0 + 100 * STEP)
        window = Window(t0 + 60 * STEP, t0 + 180 * STEP, STEP)
        qs = queries(args.metrics, window)
        seq, con = asyncio.run(measure(prom.url, qs, args.rounds, args.concurrency))
    finally:
        prom.stop()
    n = len(qs)
    print(
        f"prometheus fetch: {args.metrics} metrics x 2 scopes = {n} range queries, "
        f"{args.rounds} rounds (median), concurrency {args.concurrency}"
    )
    print(f"  sequential: {seq * 1000:8.1f} ms  ({seq / n * 1000:.2f} ms/query)")
    print(f"  concurrent: {con * 1000:8.1f} ms  ({con / n * 1000:.2f} ms/query)")
    print(f"  speedup sequential/concurrent: {seq / con:.2f}x")


if __name__ == "__main__":
    main()
