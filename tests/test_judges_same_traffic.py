"""The demo's bad canary, judged by both judges on the very same traffic: the sequential
judge rolls it back at an earlier step than Kayenta's Mann-Whitney manages.

Traffic moves through the real proxy in the demo's steps; every look of both judges
reads the same windows of the proxy's own counters (the proxy keeps their history)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from analysis.judge import Decision, Judge
from canary.demo_env import DemoEnvironment
from canary.look import take_look
from canary.rollout_setup import make_judge
from canary.spec_loader import validate_rollout
from mesh.client import MeshClient
from providers.mesh import MeshProvider
from providers.provider import Window

pytestmark = pytest.mark.slow
STEP_SECONDS = 3.0


async def _first_rollback(judge: Judge, env: DemoEnvironment,
                          windows: list[tuple[float, float]], judge_name: str) -> int | None:
    doc = env.rollout_document(judge_name, STEP_SECONDS)
    rollout = validate_rollout(doc, "demo")
    provider = MeshProvider(env.admin_url, env.token)
    state = None
    start = windows[0][0]
    try:
        for i, (lo, hi) in enumerate(windows):
            frm = start if judge.cumulative else lo
            look = await take_look(rollout.spec.analysis, {"mesh": provider}, judge, "demo",
                                   Window(frm, hi, step=0.5), state,
                                   final=i == len(windows) - 1)
            assert look.outcome is not None, look.message
            if look.decision == Decision.ROLLBACK:
                return i
            state = look.outcome.state
    finally:
        await provider.aclose()
    return None


def test_sequential_rolls_back_the_demo_canary_before_mann_whitney(tmp_path: Path) -> None:
    async def go() -> tuple[int | None, int | None]:
        async with DemoEnvironment(scenario="bad", rate=300, duration=60) as env:
            windows = []
            async with MeshClient(env.admin_url, env.token) as client:
                for weight in (5, 10, 25, 50, 75):
                    await client.set_weights("demo", {"baseline": 100 - weight,
                                                      "canary": weight})
                    lo = time.time()
                    await asyncio.sleep(STEP_SECONDS)  # the step serves traffic
                    windows.append((lo, time.time()))
                await client.set_weights("demo", {"baseline": 100, "canary": 0})
            doc = validate_rollout(env.rollout_document("sequential", STEP_SECONDS), "demo")
            sequential = make_judge(doc.spec.analysis)
            kayenta = make_judge(
                validate_rollout(env.rollout_document("mann-whitney", STEP_SECONDS),
                                 "demo").spec.analysis)
            return (await _first_rollback(sequential, env, windows, "sequential"),
                    await _first_rollback(kayenta, env, windows, "mann-whitney"))

    seq, mw = asyncio.run(go())
    assert seq is not None, "the sequential judge never rolled back the bad canary"
    assert mw is None or seq < mw, (seq, mw)
