"""The demo's world on loopback: two versions of the demo service, the mesh proxy in front
of them and a bounded load generator, all child processes on free ports, all stopped on
exit (Ctrl-C included)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import yaml

Scenario = Literal["bad", "good"]
DEMO_DIR = Path(__file__).resolve().parents[1] / "examples" / "demo"
READY_TIMEOUT = 15.0


@dataclass(frozen=True)
class VersionProfile:
    latency_ms: float
    error_rate: float


BASELINE = VersionProfile(latency_ms=20.0, error_rate=0.002)
CANARIES: dict[Scenario, VersionProfile] = {
    # The regression the demo must catch: +50% latency and a 5% error rate.
    "bad": VersionProfile(latency_ms=30.0, error_rate=0.05),
    "good": BASELINE,
}


@dataclass
class DemoEnvironment:
    scenario: Scenario = "bad"
    rate: float = 300.0
    duration: float = 120.0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    listen_port: int = 0
    admin_url: str = ""
    token_file: str = ""
    version_ports: dict[str, int] = field(default_factory=dict)
    _drains: list[asyncio.Task[None]] = field(default_factory=list)
    _logs: list[BinaryIO] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> DemoEnvironment:
        if not (DEMO_DIR / "app.py").exists():
            raise FileNotFoundError(f"demo service not found at {DEMO_DIR}: run from a clone "
                                    "installed with `pip install -e .` (make demo does)")
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="canaryctl-demo-")
        token_path = Path(self._tmp.name) / "mesh-token"
        token_path.write_text(self.token)
        token_path.chmod(0o600)
        self.token_file = str(token_path)
        ports = self.version_ports
        for name, profile in (("baseline", BASELINE), ("canary", CANARIES[self.scenario])):
            ready = await self._spawn(name, [
                sys.executable, str(DEMO_DIR / "app.py"), "--port", "0", "--name", name,
                "--latency-ms", str(profile.latency_ms), "--error-rate", str(profile.error_rate),
            ])
            ports[name] = int(ready["port"])
        ready = await self._spawn("proxy", [
            sys.executable, "-m", "mesh",
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--admin-token-file", self.token_file,
            "--service", "demo",
            "--version", f"baseline=127.0.0.1:{ports['baseline']}",
            "--version", f"canary=127.0.0.1:{ports['canary']}",
            "--weight", "baseline=100", "--weight", "canary=0",
        ])
        self.listen_port = int(str(ready["listeners"][0]).rsplit(":", 1)[1])
        self.admin_url = str(ready["admin_url"])
        await self._spawn("loadgen", [
            sys.executable, str(DEMO_DIR / "loadgen.py"), "--target",
            f"127.0.0.1:{self.listen_port}", "--host-header", "demo", "--rate", str(self.rate),
            "--duration", str(self.duration),
        ], wait_ready=False)

    async def _spawn(self, name: str, argv: list[str], wait_ready: bool = True) -> dict[str, Any]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        assert self._tmp is not None
        log = open(Path(self._tmp.name) / f"{name}.log", "wb")  # noqa: SIM115
        self._logs.append(log)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_detach_but_follow_parent,
        )
        self.procs[name] = proc
        if not wait_ready:
            return {}
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"demo {name} did not start within {READY_TIMEOUT:.0f}s") from None
        if not line:
            await proc.wait()
            err = (Path(self._tmp.name) / f"{name}.log").read_bytes()
            raise RuntimeError(f"demo {name} exited: {err.decode(errors='replace')[-400:]}")
        ready: dict[str, Any] = json.loads(line)
        # Keep reading what the child prints, so a full pipe never blocks it.
        self._drains.append(asyncio.create_task(_drain(proc.stdout)))
        return ready

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.procs.clear()
        for task in self._drains:
            task.cancel()
        self._drains.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def rollout_document(self, judge: str, interval: float) -> dict[str, Any]:
        """examples/demo/rollout.yaml with the ports, admin URL and token file of the
        processes this environment started."""
        doc: dict[str, Any] = yaml.safe_load((DEMO_DIR / "rollout.yaml").read_text())
        doc["metadata"]["name"] = f"demo-{self.scenario}"
        spec = doc["spec"]
        spec["baseline"]["endpoints"] = [f"127.0.0.1:{self.version_ports['baseline']}"]
        spec["canary"]["endpoints"] = [f"127.0.0.1:{self.version_ports['canary']}"]
        spec["mesh"] = {"admin": self.admin_url, "tokenFile": self.token_file}
        spec["interval"] = spec["analysis"]["interval"] = f"{interval}s"
        spec["analysis"]["judge"] = judge
        return doc


async def _drain(stream: asyncio.StreamReader | None) -> None:
    if stream is None:
        return
    while await stream.read(65536):
        pass


def _detach_but_follow_parent() -> None:
    """Runs in each child before exec. A session of its own, so Ctrl-C on the terminal
    reaches only canaryctl, which rolls back through the still-running proxy before it
    stops them; and a SIGTERM from the kernel if canaryctl dies without cleaning up
    (SIGKILL), so no demo process outlives it."""
    os.setsid()
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
