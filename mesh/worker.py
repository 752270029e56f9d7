"""One worker process of `--workers N` (started by mesh/workers.py, not by users).

It serves the listeners on its own SO_REUSEPORT sockets, counts into its region of the
shared counters, and takes routing tables from the supervisor over the control socket.
It stops when told to, or when the supervisor is gone (the control socket closes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from typing import Any

from mesh.config import MeshConfig, parse_config
from mesh.control_channel import frame, read_message
from mesh.data_plane import DataPlane
from mesh.metrics import MeshMetrics, VersionStats
from mesh.runner import new_event_loop
from mesh.shared_stats import HEADER_FIELDS, SharedCounters

_SWEEP_EVERY = 0.1


class Worker:
    def __init__(self, index: int, shared: SharedCounters) -> None:
        self.index = index
        self.shared = shared
        self.slots: dict[tuple[str, str], int] = {}
        self.metrics = MeshMetrics(stats_factory=self._stats)
        self.plane: DataPlane | None = None
        self.generation = -1
        self._sweeper: asyncio.Task[None] | None = None

    def _stats(self, service: str, version: str) -> VersionStats:
        slot = self.slots.get((service, version))
        if slot is None:
            raise RuntimeError(f"no shared slot for {service}/{version}")
        return self.shared.worker_stats(self.index, slot, service, version)

    def _learn(self, message: dict[str, Any]) -> MeshConfig:
        for service, version, slot in message["slots"]:
            self.slots[(str(service), str(version))] = int(slot)
        return parse_config(message["config"], "supervisor")

    async def run(self, control: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=control)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        reading = loop.create_task(self._control(reader, writer, stop))
        try:
            await stop.wait()
        finally:
            for task in (self._sweeper, reading):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.plane is not None:
                self.plane.sweep()
                await self.plane.close()
                self._publish()
            writer.close()

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       stop: asyncio.Event) -> None:
        try:
            while True:
                message = await read_message(reader)
                if message is None or message.get("op") == "stop":
                    break
                generation = int(message.get("generation", -1))
                if message["op"] == "start":
                    try:
                        config = self._learn(message)
                        plane = DataPlane(config, self.metrics, log_suffix=f".w{self.index}")
                        binds = [(str(h), int(p)) for h, p in message["binds"]]
                        await plane.start(binds, reuse_port=True)
                    except (OSError, ValueError) as exc:
                        writer.write(frame({"op": "error", "message": f"worker {self.index}: "
                                            f"cannot listen: {exc}"}))
                        break
                    self.plane = plane
                    self.generation = generation
                    self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
                    writer.write(frame({"op": "ready", "generation": generation}))
                elif message["op"] == "apply" and self.plane is not None:
                    self.plane.apply(self._learn(message))
                    self.generation = generation
                    writer.write(frame({"op": "ack", "generation": generation}))
        finally:
            stop.set()

    async def _sweep(self) -> None:
        assert self.plane is not None
        while True:
            await asyncio.sleep(_SWEEP_EVERY)
            self.plane.sweep()
            self._publish()

    def _publish(self) -> None:
        if self.plane is None:
            return
        header = self.shared.header(self.index)
        gauges = self.plane.gauges()
        gauges["generation"] = self.generation
        for i, name in enumerate(HEADER_FIELDS):
            header[i] = int(gauges.get(name, 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mesh.worker")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--stats-fd", type=int, required=True)
    args = p.parse_args(argv)
    # Ctrl-C reaches the whole process group; the supervisor decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    shared = SharedCounters(args.workers, fd=args.stats_fd)
    control = socket.socket(fileno=args.control_fd)
    worker = Worker(args.index, shared)
    loop = new_event_loop()
    started = time.monotonic()
    try:
        loop.run_until_complete(worker.run(control))
    finally:
        loop.close()
    if worker.plane is None and time.monotonic() - started < 1:
        print(f"mesh worker {args.index}: did not start", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
