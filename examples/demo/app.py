"""The demo's HTTP service: one version of a small API, with a tunable latency and error
rate so the demo can play a healthy baseline and a regressed canary.

    python examples/demo/app.py --port 0 --name canary --latency-ms 20 --error-rate 0.05

Prints one JSON line `{"port": N}` once listening. Stdlib only, HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 args: argparse.Namespace, rng: random.Random) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            # Log-normal latency: a median of --latency-ms with a realistic right tail.
            await asyncio.sleep(args.latency_ms / 1000.0 * rng.lognormvariate(0.0, 0.35))
            if path.startswith("/healthz"):
                status, body = "200 OK", b"ok\n"
            elif rng.random() < args.error_rate:
                status, body = "500 Internal Server Error", b'{"error": "injected"}\n'
            else:
                status = "200 OK"
                body = json.dumps({"version": args.name, "path": path}).encode() + b"\n"
            close = headers.get("connection", "").lower() == "close"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Demo-Version: {args.name}\r\n"
                f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
                .encode() + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="baseline")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, rng), args.host, args.port, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "name": args.name}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
