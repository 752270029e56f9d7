"""The store keeps what the controller decided, across processes and restarts."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from canary.store import Store


def _send(state_dir: str) -> None:
    Store(state_dir).send_command("r1", "pause")


def test_state_survives_reopen_and_commands_cross_processes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_rollout("r1", {"spec": {"service": "s"}}, "h1", "r1.yaml")
    store.update_rollout("r1", phase="Progressing", step_index=3,
                         weights={"baseline": 75, "canary": 25},
                         judge_state={"e": [1.5, 2.0]}, counters={"failed": 1})
    store.add_measurement("r1", step_index=3, weight=25, phase="Failed", decision="rollback",
                          score=40.0, verdict="Fail", message="latency high",
                          window_start=1.0, window_end=2.0, result={"x": 1})
    store.add_event("r1", "weight", "canary 25%", canary=25)
    proc = multiprocessing.get_context("spawn").Process(target=_send, args=(str(tmp_path),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    store.close()

    again = Store(tmp_path)
    rec = again.get_rollout("r1")
    assert rec is not None
    assert (rec.phase, rec.step_index, rec.weights) == ("Progressing", 3,
                                                        {"baseline": 75, "canary": 25})
    assert rec.judge_state == {"e": [1.5, 2.0]} and rec.counters == {"failed": 1}
    assert [m.phase for m in again.measurements("r1")] == ["Failed"]
    assert again.events("r1")[0].data == {"canary": 25}
    assert again.take_commands("r1") == ["pause"]
    assert again.take_commands("r1") == []  # consumed once
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_replaces_a_finished_rollout_of_the_same_name(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_rollout("r1", {}, "h1", "")
    store.add_event("r1", "started", "first")
    store.update_rollout("r1", phase="Promoted")
    store.create_rollout("r1", {}, "h2", "")
    rec = store.get_rollout("r1")
    assert rec is not None and rec.phase == "Initializing" and rec.spec_hash == "h2"
    assert store.events("r1") == []
