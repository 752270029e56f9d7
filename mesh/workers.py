"""The supervisor's side of `--workers N`.

Why processes and this split: one Python process tops out at one core, so N worker
processes each accept on their own SO_REUSEPORT socket (the kernel spreads new
connections over them). The supervisor owns everything that must be one truth: the
routing table (sent whole to every worker over a control socket; an admin call returns
only when every worker has acknowledged it, so "applied" means applied everywhere), the
admin API, and the metrics (workers count into shared memory, mesh/shared_stats.py,
which the supervisor sums). A worker that dies is restarted with the current table
and keeps counting in its own region, so counters never go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from mesh.control_channel import frame, read_message
from mesh.shared_stats import SharedCounters

_START_TIMEOUT = 30.0
_RESTART_DELAY = 0.5


class WorkerStartError(Exception):
    pass


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    acked: int = -1
    ready: bool = False
    error: str | None = None
    restarts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerPool:
    def __init__(self, count: int, shared: SharedCounters, binds: list[tuple[str, int]]) -> None:
        self.shared = shared
        self.binds = binds
        self.workers = [_Worker(i) for i in range(count)]
        self._latest: dict[str, Any] = {}
        self._closing = False

    async def start(self, generation: int, config: dict[str, Any], slots: list[list[object]]
                    ) -> None:
        self._latest = {"generation": generation, "config": config, "slots": slots}
        for w in self.workers:
            await self._spawn(w)
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                for w in self.workers:
                    while not w.ready and w.error is None:
                        w.changed.clear()
                        await w.changed.wait()
        except TimeoutError:
            raise WorkerStartError(f"workers not ready within {_START_TIMEOUT:.0f}s") from None
        failed = [w for w in self.workers if w.error is not None]
        if failed:
            raise WorkerStartError(failed[0].error or "worker failed")

    async def _spawn(self, w: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.process = subprocess.Popen(
                [sys.executable, "-m", "mesh.worker", "--index", str(w.index),
                 "--workers", str(len(self.workers)), "--control-fd", str(child.fileno()),
                 "--stats-fd", str(self.shared.fd)],
                pass_fds=(child.fileno(), self.shared.fd), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        w.writer = writer
        w.ready = False
        w.error = None
        w.acked = -1
        writer.write(frame({"op": "start", "binds": self.binds, **self._latest}))
        w.reader_task = asyncio.get_running_loop().create_task(self._read(w, reader))

    async def _read(self, w: _Worker, reader: asyncio.StreamReader) -> None:
        while True:
            message = await read_message(reader)
            if message is None:
                break
            op = message.get("op")
            if op in ("ready", "ack"):
                w.acked = int(message["generation"])
                w.ready = True
            elif op == "error":
                w.error = str(message.get("message", "worker failed"))
            w.changed.set()
        w.changed.set()
        if w.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.get_running_loop().run_in_executor(None, w.process.wait, 5)
        if self._closing or not w.ready:
            if w.error is None and not self._closing:
                w.error = f"worker {w.index} exited while starting"
                w.changed.set()
            return
        code = w.process.returncode if w.process is not None else None
        print(f"warning: mesh worker {w.index} exited (code {code}); restarting",
              file=sys.stderr)
        w.ready = False
        w.restarts += 1
        await asyncio.sleep(_RESTART_DELAY)
        if not self._closing:
            await self._spawn(w)

    def broadcast(self, generation: int, config: dict[str, Any], slots: list[list[object]]
                  ) -> None:
        self._latest = {"generation": generation, "config": config, "slots": slots}
        message = frame({"op": "apply", **self._latest})
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                w.writer.write(message)

    async def wait_applied(self, generation: int, timeout: float = 10.0) -> None:
        """Returns once every live worker runs `generation` (or a later one)."""
        async with asyncio.timeout(timeout):
            for w in self.workers:
                while w.acked < generation:
                    w.changed.clear()
                    if w.acked >= generation:
                        break
                    await w.changed.wait()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]

    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    async def close(self) -> None:
        self._closing = True
        for w in self.workers:
            if w.writer is not None:
                with contextlib.suppress(Exception):
                    w.writer.write(frame({"op": "stop"}))
                    w.writer.close()
        loop = asyncio.get_running_loop()
        for w in self.workers:
            if w.process is None:
                continue
            try:
                await loop.run_in_executor(None, w.process.wait, 5)
            except subprocess.TimeoutExpired:
                w.process.kill()
                await loop.run_in_executor(None, w.process.wait)
            if w.reader_task is not None:
                w.reader_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w.reader_task
