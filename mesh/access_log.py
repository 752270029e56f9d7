"""The optional JSON-lines access log: one line per finished request, kept in memory
and written in batches (on the sweep, or when the batch passes `_BATCH_BYTES`), so the
data plane never waits on the disk per request. Rotated by size: `path` becomes
`path.1`, `path.1` becomes `path.2`, ... up to `backups` files.

With `--workers N`, worker i writes `path` with `.w<i>` appended, so rotation never has
two writers on one file.
"""

from __future__ import annotations

import json
import os
import sys
import time

from mesh.config import AccessLogConfig

_BATCH_BYTES = 64 * 1024
_escape = json.JSONEncoder(ensure_ascii=False).encode


class AccessLog:
    def __init__(self, config: AccessLogConfig, *, suffix: str = "") -> None:
        self.path = config.path + suffix
        self.max_bytes = config.max_bytes
        self.backups = config.backups
        self._lines: list[str] = []
        self._pending = 0
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = os.fstat(self._fd).st_size

    def record(
        self, service: str, version: str, status: int, latency: float, bytes_in: int,
        bytes_out: int, request_id: str, method: bytes, path: bytes,
    ) -> None:
        # Formatted by hand: json.dumps of a dict costs several times more per line.
        line = (
            f'{{"time":{time.time():.6f},"service":{_escape(service)},'
            f'"version":{_escape(version)},"status":{status},"latency":{latency:.6f},'
            f'"bytes_in":{bytes_in},"bytes_out":{bytes_out},'
            f'"request_id":{_escape(request_id)},'
            f'"method":{_escape(method.decode("latin-1"))},'
            f'"path":{_escape(path.decode("latin-1"))}}}\n'
        )
        self._lines.append(line)
        self._pending += len(line)
        if self._pending >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines or self._fd < 0:
            return
        data = "".join(self._lines).encode()
        self._lines.clear()
        self._pending = 0
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            # A full disk must not take the proxy down; the lines are lost, said once.
            print(f"warning: access log {self.path}: {exc.strerror}", file=sys.stderr)
            return
        self._size += len(data)
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            if self.backups == 0:
                os.unlink(self.path)
            else:
                for i in range(self.backups - 1, 0, -1):
                    older = f"{self.path}.{i}"
                    if os.path.exists(older):
                        os.replace(older, f"{self.path}.{i + 1}")
                os.replace(self.path, f"{self.path}.1")
        except OSError as exc:
            print(f"warning: access log {self.path}: cannot rotate: {exc.strerror}",
                  file=sys.stderr)
        self._open()

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
