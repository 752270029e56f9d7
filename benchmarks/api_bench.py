"""Status reads under load: 500 open analyses polled by 100 concurrent clients.

Starts the real `canaryctl serve` on a free loopback port, opens 500 analyses whose
window is still to come (so they stay RUNNING), then has 100 clients poll their status
URLs the way Spinnaker's Webhook stage does. The reference is the same load, from the
same clients against the same server in the same run, on its trivial `/healthz`; the
ratio is what this prints to compare across machines.

    .venv/bin/python benchmarks/api_bench.py [--analyses 500] [--clients 100] [--reads 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

CANARYCTL = Path(sys.executable).parent / "canaryctl"


def start_server(tmp: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    token_file = tmp / "token"
    token_file.write_text(token)
    log = tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "CANARYCTL_API_TOKEN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(CANARYCTL), "serve", "--port", "0", "--state-dir",
                                 str(tmp / "state"), "--token-file", str(token_file)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://[\d.]+:\d+)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"canaryctl serve exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("canaryctl serve did not start in 30 s")


def analysis_body(recording: Path, i: int) -> dict[str, object]:
    return {
        "name": f"bench-{i}", "service": "checkout",
        # A window that ends in an hour keeps the analysis open for the whole run.
        "window": {"duration": "3600s"},
        "providers": {"rec": {"type": "file", "path": str(recording)}},
        "analysis": {"judge": "mann-whitney", "metrics": [
            {"name": "latency", "provider": "rec", "query": "latency"}]},
    }


async def open_analyses(client: httpx.AsyncClient, recording: Path, n: int) -> list[str]:
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> str:
        async with sem:
            res = await client.post("/api/v1/analyses", json=analysis_body(recording, i))
            res.raise_for_status()
            return str(res.json()["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def load(client: httpx.AsyncClient, clients: int, reads: int,
               path_of: Callable[[int], str], check: Callable[[httpx.Response], bool]
               ) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(reads))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            t0 = time.perf_counter()
            try:
                res = await client.get(path_of(i))
                ok = res.status_code == 200 and check(res)
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


async def bench(args: argparse.Namespace) -> None:
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="canaryctl-api-bench-") as d:
        tmp = Path(d)
        recording = tmp / "rec.json"
        recording.write_text(json.dumps({"metrics": {"latency": {
            "baseline": {"values": [100.0] * 30}, "canary": {"values": [101.0] * 30}}}}))
        proc, url = start_server(tmp, token)
        try:
            limits = httpx.Limits(max_connections=args.clients,
                                  max_keepalive_connections=args.clients)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30, headers={
                    "Authorization": f"Bearer {token}"}) as client:
                ids = await open_analyses(client, recording, args.analyses)

                def is_running(res: httpx.Response) -> bool:
                    return bool(res.json()["status"] == "RUNNING")

                # Warm both paths, then measure the reference and the status reads
                # alternately, twice, so drift in the machine's load hits both alike.
                await load(client, args.clients, 500, lambda i: "/healthz", lambda r: True)
                ref: list[float] = []
                status: list[float] = []
                errors = 0
                ref_s = status_s = 0.0
                for _ in range(2):
                    lat, err, secs = await load(client, args.clients, args.reads // 2,
                                                lambda i: "/healthz", lambda r: True)
                    ref += lat
                    ref_s += secs
                    lat, err2, secs = await load(
                        client, args.clients, args.reads // 2,
                        lambda i: f"/api/v1/analyses/{ids[i % len(ids)]}", is_running)
                    status += lat
                    errors += err2
                    status_s += secs
                    errors += err
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"{args.analyses} open analyses, {args.clients} concurrent clients, "
          f"{len(status)} status reads")
    print(f"status read   p50 {pct(status, 50):7.2f} ms  p99 {pct(status, 99):7.2f} ms  "
          f"{len(status) / status_s:8.0f} req/s  errors {errors}")
    print(f"/healthz ref  p50 {pct(ref, 50):7.2f} ms  p99 {pct(ref, 99):7.2f} ms  "
          f"{len(ref) / ref_s:8.0f} req/s")
    print(f"ratio status/reference  p50 {pct(status, 50) / pct(ref, 50):.2f}x  "
          f"p99 {pct(status, 99) / pct(ref, 99):.2f}x  "
          f"throughput {(len(status) / status_s) / (len(ref) / ref_s):.2f}x")
    if errors:
        raise SystemExit(f"{errors} errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--analyses", type=int, default=500)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--reads", type=int, default=20000)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
