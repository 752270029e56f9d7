"""A bounded load generator for the demo: keep-alive HTTP/1.1 clients at a target rate.

    python examples/demo/loadgen.py --target 127.0.0.1:8080 --rate 300 --duration 60

Stops by itself after --duration seconds or --max-requests requests, whichever is first.
Prints a JSON summary on exit. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections import Counter


async def client(host: str, port: int, host_header: str, interval: float, deadline: float,
                 budget: list[int], stats: Counter[str]) -> None:
    request = (f"GET /api/items HTTP/1.1\r\nHost: {host_header}\r\n"
               "User-Agent: canaryctl-demo-loadgen\r\n\r\n").encode()
    reader = writer = None
    next_at = time.monotonic()
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            stats[status[0] + "xx"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats["connection_errors"] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_at = time.monotonic()  # behind schedule: don't burst to catch up
    if writer is not None:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the proxy listener")
    parser.add_argument("--host-header", default="demo")
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    deadline = time.monotonic() + args.duration
    stats: Counter[str] = Counter()
    budget = [args.max_requests]
    interval = args.connections / args.rate
    loop = asyncio.get_running_loop()
    tasks = [
        asyncio.create_task(client(host, int(port), args.host_header, interval, deadline,
                                   budget, stats))
        for _ in range(args.connections)
    ]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(dict(stats)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
