"""One controller per rollout, whichever process (`canaryctl run`, `resume`, `serve`)
drives it: an flock the kernel releases when the holder dies, so a SIGKILLed run never
blocks the run that resumes it."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from canary.controller import OperationalError


class RolloutLock:
    def __init__(self, state_dir: Path, name: str) -> None:
        lock_dir = state_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.path = lock_dir / f"{name}.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        f = open(self.path, "a+")  # noqa: SIM115 (held for as long as the rollout runs)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RolloutLock:
        if not self.acquire():
            raise OperationalError(
                f"rollout is being run by another canaryctl process (lock {self.path})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
