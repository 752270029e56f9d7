"""The mesh data plane against HAProxy, same machine, same run.

Two upstreams (one HAProxy process answering directly on two ports, so the upstreams
are never the bottleneck), then for 1 and 2 workers (HAProxy: `nbthread` 1 and 2) the
same weighted 90/10 route through HAProxy and through our proxy (`python -m mesh
--workers N`, metrics, timeouts and backpressure on, as shipped). wrk (keep-alive)
runs at 16, 64 and 256 connections against each target in alternation. Printed per
target: req/s, p50, p99, CPU microseconds per request of the proxy processes (user and
system, from /proc, steadier than req/s on a shared machine) and our/HAProxy ratios;
plus the latency each proxy adds at 16 connections over going to an upstream directly.

    python benchmarks/proxy_bench.py [--duration 5] [--rounds 1] [--workers 1,2]
        [--connections 16,64,256] [--json out.json]

Needs the Debian packages haproxy and wrk (tests/system_deps.sh --bench).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_ticks(pids: list[int]) -> tuple[int, int]:
    """User and system clock ticks of the processes (all their threads)."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def haproxy_upstreams(workdir: Path, ports: tuple[int, int]) -> subprocess.Popen[bytes]:
    body = "x" * 64
    cfg = workdir / "upstreams.cfg"
    cfg.write_text(f"""global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend baseline
    bind 127.0.0.1:{ports[0]}
    http-request return status 200 content-type text/plain string "{body}"
frontend canary
    bind 127.0.0.1:{ports[1]}
    http-request return status 200 content-type text/plain string "{body}"
""")
    return subprocess.Popen(["haproxy", "-f", str(cfg)], stdin=subprocess.DEVNULL)


def haproxy_proxy(workdir: Path, port: int, threads: int, upstreams: tuple[int, int]
                  ) -> subprocess.Popen[bytes]:
    cfg = workdir / f"proxy{threads}.cfg"
    cfg.write_text(f"""global
    nbthread {threads}
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s
    option http-keep-alive
frontend web
    bind 127.0.0.1:{port}
    default_backend web
backend web
    balance roundrobin
    http-reuse always
    server baseline 127.0.0.1:{upstreams[0]} weight 90
    server canary 127.0.0.1:{upstreams[1]} weight 10
""")
    return subprocess.Popen(["haproxy", "-f", str(cfg)], stdin=subprocess.DEVNULL)


def mesh_proxy(workdir: Path, workers: int, upstreams: tuple[int, int]
               ) -> tuple[subprocess.Popen[str], str, list[int]]:
    token = workdir / "token"
    token.write_text(TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--admin-token-file", str(token), "--service", "web",
         "--version", f"baseline=127.0.0.1:{upstreams[0]}",
         "--version", f"canary=127.0.0.1:{upstreams[1]}", "--weight", "canary=10",
         "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    pids = [proc.pid, *ready.get("worker_pids", [])]
    return proc, str(ready["listeners"][0]), pids


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Run:
    target: str
    workers: int
    connections: int
    rps: float
    p50: float
    p99: float
    requests: int
    errors: int
    cpu_us: float  # per request, user + system
    cpu_user_us: float


def wrk(url: str, connections: int, duration: float, threads: int) -> tuple[float, float, float,
                                                                           int, int]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
         "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "91.50%" ending the Latency line must not read as the 50th percentile.
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      out):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, requests, errors


def measure(target: str, workers: int, url: str, pids: list[int], connections: int,
            duration: float, threads: int) -> Run:
    u0, s0 = cpu_ticks(pids)
    rps, p50, p99, requests, errors = wrk(url, connections, duration, threads)
    u1, s1 = cpu_ticks(pids)
    per = 1e6 / CLK_TCK / max(1, requests)
    return Run(target, workers, connections, rps, p50, p99, requests, errors,
               ((u1 - u0) + (s1 - s0)) * per, (u1 - u0) * per)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median_run(runs: list[Run]) -> Run:
    runs = sorted(runs, key=lambda r: r.rps)
    return runs[len(runs) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds (median kept)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--connections", default="16,64,256")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--json", help="also write the runs here")
    args = p.parse_args()
    for tool in ("haproxy", "wrk"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found; run tests/system_deps.sh --bench", file=sys.stderr)
            return 2
    worker_counts = [int(x) for x in args.workers.split(",")]
    conns = [int(x) for x in args.connections.split(",")]
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        workdir = Path(tmp)
        ups = (free_port(), free_port())
        upstreams = haproxy_upstreams(workdir, ups)
        try:
            wait_port(ups[0])
            wait_port(ups[1])
            for c in (16, 1):
                results.append(measure("direct", 0, f"http://127.0.0.1:{ups[0]}/",
                                       [upstreams.pid], c, args.duration, args.wrk_threads))
            for workers in worker_counts:
                hport = free_port()
                hap = haproxy_proxy(workdir, hport, workers, ups)
                ours, address, our_pids = mesh_proxy(workdir, workers, ups)
                try:
                    wait_port(hport)
                    targets = {
                        "haproxy": (f"http://127.0.0.1:{hport}/", [hap.pid]),
                        "mesh": (f"http://{address}/", our_pids),
                    }
                    for url, _ in targets.values():  # warm up pools and caches
                        wrk(url, 64, 1, args.wrk_threads)
                    for c in conns:
                        runs: dict[str, list[Run]] = {"haproxy": [], "mesh": []}
                        for r in range(args.rounds):
                            order = ["haproxy", "mesh"] if r % 2 == 0 else ["mesh", "haproxy"]
                            for name in order:
                                url, pids = targets[name]
                                runs[name].append(measure(name, workers, url, pids, c,
                                                          args.duration, args.wrk_threads))
                        for name in ("haproxy", "mesh"):
                            results.append(median_run(runs[name]))
                    # One connection: the latency a proxy adds when it is not saturated
                    # (at 16 connections both run flat out, so p50 there follows req/s).
                    for name in ("haproxy", "mesh"):
                        url, pids = targets[name]
                        results.append(measure(name, workers, url, pids, 1, args.duration,
                                               args.wrk_threads))
                finally:
                    stop(hap)
                    stop(ours)
        finally:
            stop(upstreams)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


def report(results: list[Run]) -> None:
    direct = next(r for r in results if r.target == "direct" and r.connections == 16)
    direct1 = next(r for r in results if r.target == "direct" and r.connections == 1)
    print(f"upstream direct, 16 connections: {direct.rps:,.0f} req/s, "
          f"p50 {direct.p50 * 1e6:.0f} us, p99 {direct.p99 * 1e6:.0f} us")
    print()
    header = (f"{'workers':>7} {'conns':>5} | {'haproxy req/s':>13} {'p50 us':>7} "
              f"{'p99 us':>7} {'cpu us/req':>10} | {'mesh req/s':>11} {'p50 us':>7} "
              f"{'p99 us':>7} {'cpu us/req':>10} | {'rps ratio':>9} {'cpu ratio':>9}")
    print(header)
    print("-" * len(header))
    ratios: dict[int, list[float]] = {}
    for r in results:
        if r.target != "mesh" or r.connections == 1:
            continue
        h = next(x for x in results if x.target == "haproxy" and x.workers == r.workers
                 and x.connections == r.connections)
        ratio = r.rps / h.rps
        ratios.setdefault(r.workers, []).append(ratio)
        print(f"{r.workers:>7} {r.connections:>5} | {h.rps:>13,.0f} {h.p50 * 1e6:>7.0f} "
              f"{h.p99 * 1e6:>7.0f} {h.cpu_us:>5.1f} ({h.cpu_user_us:>4.1f}u) | "
              f"{r.rps:>11,.0f} {r.p50 * 1e6:>7.0f} {r.p99 * 1e6:>7.0f} "
              f"{r.cpu_us:>5.1f} ({r.cpu_user_us:>4.1f}u) | {ratio:>8.2f}x "
              f"{r.cpu_us / h.cpu_us:>8.2f}x")
        if r.errors or h.errors:
            print(f"        errors: haproxy {h.errors}, mesh {r.errors}")
    print()
    for workers, rs in ratios.items():
        print(f"{workers} worker(s): mesh/haproxy throughput, geometric mean "
              f"{statistics.geometric_mean(rs):.2f}x (target >= 0.75x)")
    for workers in ratios:
        h16 = next((x for x in results if x.target == "haproxy" and x.workers == workers
                    and x.connections == 16), None)
        m16 = next((x for x in results if x.target == "mesh" and x.workers == workers
                    and x.connections == 16), None)
        if h16 is None or m16 is None:
            continue
        added_h = max(h16.p50 - direct.p50, 1e-6)
        added_m = max(m16.p50 - direct.p50, 0.0)
        print(f"{workers} worker(s), 16 connections: added p50 haproxy "
              f"{added_h * 1e6:.0f} us, mesh {added_m * 1e6:.0f} us: "
              f"{added_m / added_h:.2f}x (target <= 1.5x)")
        h1 = next((x for x in results if x.target == "haproxy" and x.workers == workers
                   and x.connections == 1), None)
        m1 = next((x for x in results if x.target == "mesh" and x.workers == workers
                   and x.connections == 1), None)
        if h1 is not None and m1 is not None:
            a_h = max(h1.p50 - direct1.p50, 1e-6)
            a_m = max(m1.p50 - direct1.p50, 0.0)
            print(f"{workers} worker(s), 1 connection (unloaded): added p50 haproxy "
                  f"{a_h * 1e6:.0f} us, mesh {a_m * 1e6:.0f} us: {a_m / a_h:.2f}x; "
                  f"req/s {h1.rps:,.0f} vs {m1.rps:,.0f}")


if __name__ == "__main__":
    sys.exit(main())
