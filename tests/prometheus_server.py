"""Starts Debian's real `prometheus` binary for tests and benchmarks.

`start_prometheus()` runs it on a free loopback port with its own temporary storage,
optionally backfilled with deterministic OpenMetrics data (`promtool tsdb
create-blocks-from openmetrics`) and/or scraping the targets given. Reusable for any test
that needs a real Prometheus, e.g. one scraping the mesh proxy during a rollout:

    prom = start_prometheus(scrape_targets=["127.0.0.1:8123"], scrape_interval="0.5s")
    try:
        prom.wait_for("up == 1")
        ...  # query prom.url
    finally:
        prom.stop()
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "the real Prometheus is needed by these tests: run `make test` (it installs it) or "
    "`sudo apt-get install --no-install-recommends prometheus`"
)


class PrometheusUnavailable(RuntimeError):
    pass


def require_binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise PrometheusUnavailable(f"prometheus/promtool not found on PATH; {INSTALL_HINT}")
    return prometheus, promtool


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusHandle:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _owns_workdir: bool = field(default=True)

    def query(self, promql: str, at: float | None = None) -> Any:
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 20.0, at: float | None = None) -> Any:
        """Polls until `promql` returns a non-empty result (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.query(promql, at)
                if last:
                    return last
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r} still empty after {timeout}s; log: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def backfill(openmetrics: str, storage: Path) -> None:
    """Writes OpenMetrics text (must end with `# EOF`) into TSDB blocks under `storage`."""
    _, promtool = require_binaries()
    storage.mkdir(parents=True, exist_ok=True)
    source = storage.parent / "backfill.om"
    text = openmetrics if openmetrics.rstrip().endswith("# EOF") else openmetrics + "# EOF\n"
    source.write_text(text if text.endswith("\n") else text + "\n")
    run = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(storage)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {run.stderr.strip() or run.stdout.strip()}")


def prometheus_duration(text: str) -> str:
    """`0.5s` as Prometheus 2.x wants it (`500ms`): its durations take no fractions."""
    text = text.strip()
    if text.endswith("s") and not text.endswith("ms"):
        seconds = float(text[:-1])
        if not seconds.is_integer():
            return f"{round(seconds * 1000)}ms"
    return text


def _config(scrape_targets: Sequence[str], scrape_interval: str) -> str:
    scrape_interval = prometheus_duration(scrape_interval)
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  scrape_timeout: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
        "scrape_configs:",
    ]
    if scrape_targets:
        lines += [
            "  - job_name: test",
            "    static_configs:",
            "      - targets: [" + ", ".join(json.dumps(t) for t in scrape_targets) + "]",
        ]
    else:
        lines[-1] = "scrape_configs: []"
    return "\n".join(lines) + "\n"


def start_prometheus(
    scrape_targets: Sequence[str] = (),
    scrape_interval: str = "1s",
    openmetrics: str | None = None,
    ready_timeout: float = 30.0,
) -> PrometheusHandle:
    """A running Prometheus on 127.0.0.1 with its own storage; call `.stop()`."""
    prometheus, _ = require_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="canaryctl-prom-"))
    storage = workdir / "data"
    if openmetrics is not None:
        backfill(openmetrics, storage)
    config = workdir / "prometheus.yml"
    config.write_text(_config(scrape_targets, scrape_interval))
    log_path = workdir / "prometheus.log"
    last_error = ""
    # Picking a free port and handing it over races with other processes; a few
    # attempts make a lost race harmless.
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=30d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        handle = PrometheusHandle(url, process, workdir, log_path)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return handle
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        last_error = handle.log_tail()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    shutil.rmtree(workdir, ignore_errors=True)
    raise PrometheusUnavailable(f"prometheus did not become ready: {last_error}")
