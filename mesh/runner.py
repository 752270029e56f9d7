"""Runs a proxy process until SIGTERM or SIGINT: event loop choice, the ready line that
a parent process reads, and a clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from mesh.config import MeshConfig
from mesh.server import MeshServer


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about twice the throughput), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def print_ready(info: dict[str, Any]) -> None:
    # One JSON line: a parent that asked for port 0 learns the ports from it.
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


async def serve(
    config: MeshConfig, token: str | None, ready: Callable[[dict[str, Any]], None],
    *, workers: int = 1, config_path: str | None = None,
) -> None:
    server = MeshServer(config, token, workers=workers, config_path=config_path)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if config_path is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(server.reload()) and None
            )
    try:
        ready(server.ready_info())
        await stop.wait()
    finally:
        await server.close()


def run(config: MeshConfig, token: str | None,
        ready: Callable[[dict[str, Any]], None] = print_ready, *, workers: int = 1,
        config_path: str | None = None) -> None:
    """Blocks until the proxy is told to stop; raises MeshError when it cannot start.
    `config_path`: the file to reload on SIGHUP or when it changes."""
    loop = new_event_loop()
    try:
        loop.run_until_complete(
            serve(config, token, ready, workers=workers, config_path=config_path))
    finally:
        loop.close()
