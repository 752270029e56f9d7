"""`canaryctl mesh proxy | set-weight | status` as a user (or the demo) runs them: real
processes, the ready line, ports learned from it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.mesh_upstream import TOKEN, MeshUpstream, RawHttp
from tests.test_mesh_proxy import run

CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CANARYCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _split(address: str, n: int) -> dict[str, int]:
    c = await RawHttp.connect(address)
    counts: dict[str, int] = {}
    for _ in range(n):
        reply = await c.request("GET", "/")
        assert reply.status == 200
        v = reply.header("x-canaryctl-version") or "?"
        counts[v] = counts.get(v, 0) + 1
    await c.close()
    return counts


def test_proxy_process_ready_line_and_weight_commands(tmp_path: Path) -> None:
    async def body() -> None:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        base = await MeshUpstream("baseline").start()
        canary = await MeshUpstream("canary").start()
        proc = await asyncio.create_subprocess_exec(
            CANARYCTL, "mesh", "proxy", "--listen", "127.0.0.1:0", "--service", "web",
            "--version", f"baseline={base.address}", "--version", f"canary={canary.address}",
            "--weight", "canary=10", "--admin", "127.0.0.1:0",
            "--admin-token-file", str(token_file),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert ready["event"] == "ready"
            address = ready["listeners"][0]
            admin = ready["admin_url"]
            counts = await _split(address, 200)
            assert counts == {"baseline": 180, "canary": 20}

            code, out, err = await _cli("mesh", "set-weight", "--admin", admin,
                                        "--token-file", str(token_file), "web", "canary=50")
            assert code == 0, err
            assert out.strip() == "web: baseline=50 canary=50"
            assert await _split(address, 100) == {"baseline": 50, "canary": 50}

            # Token from the environment; unknown version is bad input (exit 2).
            code, _, err = await _cli("mesh", "set-weight", "--admin", admin, "web", "blue=5",
                                      env={"CANARYCTL_MESH_TOKEN": TOKEN})
            assert code == 2
            assert len(err.strip().splitlines()) == 1 and "blue" in err
            assert TOKEN not in err

            code, out, err = await _cli("mesh", "status", "--admin", admin,
                                        "--token-file", str(token_file), "--format", "json")
            assert code == 0, err
            status = json.loads(out)
            versions = status["traffic"]["web"]["versions"]
            assert versions["baseline"]["requests"] == 230
            assert versions["canary"]["requests"] == 70
            code, out, _ = await _cli("mesh", "status", "--admin", admin,
                                      "--token-file", str(token_file))
            assert code == 0 and "canary" in out and "weight" in out
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert proc.stderr is not None
            logged = (await proc.stderr.read()).decode()
            assert TOKEN not in logged
            await base.close()
            await canary.close()
        # The proxy is gone: operational failure, exit 3.
        code, _, err = await _cli("mesh", "set-weight", "--admin", admin,
                                  "--token-file", str(token_file), "web", "canary=0")
        assert code == 3
        assert "mesh admin" in err

    run(body)


def test_yaml_config_and_invalid_config(tmp_path: Path) -> None:
    async def body() -> None:
        up = await MeshUpstream("v1").start()
        config = tmp_path / "mesh.yaml"
        config.write_text(
            "listeners:\n"
            "  - address: 127.0.0.1:0\n"
            "    services:\n"
            "      - name: shop\n"
            "        versions:\n"
            f"          - {{name: baseline, endpoints: ['{up.address}'], weight: 1}}\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert ready["admin"] is None
            assert await _split(ready["listeners"][0], 5) == {"baseline": 5}
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
            await up.close()

        bad = tmp_path / "bad.yaml"
        bad.write_text(config.read_text().replace("weight: 1", "weight: -3"))
        code, _, err = await _cli("mesh", "proxy", "--config", str(bad))
        assert code == 2
        line = err.strip()
        assert len(line.splitlines()) == 1
        assert str(bad) in line and "listeners.0.services.0.versions.0.weight" in line

        code, _, err = await _cli("mesh", "proxy", "--version", "baseline=127.0.0.1:1",
                                  "--admin", "127.0.0.1:0", env={"CANARYCTL_MESH_TOKEN": ""})
        assert code == 2 and "token" in err

    run(body)
