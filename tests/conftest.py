"""Shared test helpers: running the real `canaryctl` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CANARYCTL = Path(sys.executable).parent / "canaryctl"


def canaryctl(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
              **kw: object) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script, as a pipeline would."""
    return subprocess.run(
        [str(CANARYCTL), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=ROOT, check=False, **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d
