"""Analyses and Kayenta executions started through the API, kept in the same SQLite
database as the rollouts, so a restarted server answers for every run started before it.

A run is RUNNING until it is judged; whoever serves the API next picks up the RUNNING
ones again from their stored request (the request holds everything needed to judge)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RunStatus = Literal["RUNNING", "SUCCEEDED", "FAILED", "CANCELED"]
RunKind = Literal["analysis", "kayenta", "standalone"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '',
    verdict TEXT,
    score REAL,
    request_json TEXT NOT NULL,
    result_json TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_runs_status ON api_runs(status);
CREATE TABLE IF NOT EXISTS api_canary_configs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    applications_json TEXT NOT NULL DEFAULT '[]',
    config_json TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_gates (
    key TEXT PRIMARY KEY,
    open INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_flagger_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    hook TEXT NOT NULL,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    phase TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    answer INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class RunRecord:
    id: str
    kind: RunKind
    status: RunStatus
    progress: str
    verdict: str | None
    score: float | None
    request: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None

    @property
    def complete(self) -> bool:
        return self.status != "RUNNING"


@dataclass(frozen=True)
class CanaryConfigRecord:
    id: str
    name: str
    applications: list[str]
    config: dict[str, Any]
    updated_at: float


class RunStore:
    """Thread-confined, like canary.store.Store: the server uses it from its event loop."""

    def __init__(self, state_dir: str | Path) -> None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path / "canaryctl.db", timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- runs -------------------------------------------------------------------------

    def create_run(self, kind: RunKind, request: dict[str, Any], progress: str) -> RunRecord:
        run_id = uuid.uuid4().hex
        now = time.time()
        self._db.execute(
            "INSERT INTO api_runs (id, kind, status, progress, request_json, created_at,"
            " started_at, updated_at) VALUES (?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
            (run_id, kind, progress, json.dumps(request), now, now, now),
        )
        rec = self.get_run(run_id)
        assert rec is not None
        return rec

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM api_runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _run(row)

    def running(self) -> list[RunRecord]:
        rows = self._db.execute(
            "SELECT * FROM api_runs WHERE status = 'RUNNING' ORDER BY created_at").fetchall()
        return [_run(r) for r in rows]

    def set_progress(self, run_id: str, progress: str) -> None:
        self._db.execute(
            "UPDATE api_runs SET progress = ?, updated_at = ? WHERE id = ? AND status = 'RUNNING'",
            (progress, time.time(), run_id))

    def finish(
        self, run_id: str, status: RunStatus, progress: str, *, verdict: str | None = None,
        score: float | None = None, result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Records the end of a run; False when it had already ended (e.g. canceled)."""
        now = time.time()
        cur = self._db.execute(
            "UPDATE api_runs SET status = ?, progress = ?, verdict = ?, score = ?,"
            " result_json = ?, error = ?, ended_at = ?, updated_at = ?"
            " WHERE id = ? AND status = 'RUNNING'",
            (status, progress, verdict, score, json.dumps(result or {}), error, now, now, run_id),
        )
        return cur.rowcount == 1

    # -- Kayenta canary configs -------------------------------------------------------

    def save_config(self, name: str, applications: list[str], config: dict[str, Any],
                    config_id: str | None = None) -> str:
        config_id = config_id or uuid.uuid4().hex
        self._db.execute(
            "INSERT OR REPLACE INTO api_canary_configs (id, name, applications_json,"
            " config_json, updated_at) VALUES (?, ?, ?, ?, ?)",
            (config_id, name, json.dumps(applications), json.dumps(config), time.time()))
        return config_id

    def get_config(self, config_id: str) -> CanaryConfigRecord | None:
        row = self._db.execute(
            "SELECT * FROM api_canary_configs WHERE id = ?", (config_id,)).fetchone()
        return None if row is None else _config(row)

    def list_configs(self) -> list[CanaryConfigRecord]:
        rows = self._db.execute(
            "SELECT * FROM api_canary_configs ORDER BY updated_at DESC").fetchall()
        return [_config(r) for r in rows]

    def delete_config(self, config_id: str) -> bool:
        cur = self._db.execute("DELETE FROM api_canary_configs WHERE id = ?", (config_id,))
        return cur.rowcount == 1

    # -- Flagger gates and hook calls -------------------------------------------------

    def gate(self, key: str) -> bool | None:
        row = self._db.execute("SELECT open FROM api_gates WHERE key = ?", (key,)).fetchone()
        return None if row is None else bool(row["open"])

    def set_gate(self, key: str, is_open: bool) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO api_gates (key, open, updated_at) VALUES (?, ?, ?)",
            (key, int(is_open), time.time()))

    def add_flagger_event(self, hook: str, name: str, namespace: str, phase: str,
                          payload: dict[str, Any], answer: int) -> None:
        self._db.execute(
            "INSERT INTO api_flagger_events (ts, hook, name, namespace, phase, payload_json,"
            " answer) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), hook, name, namespace, phase, json.dumps(payload), answer))

    def flagger_events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM api_flagger_events WHERE namespace = ? AND name = ? ORDER BY id",
            (namespace, name)).fetchall()
        return [{"ts": r["ts"], "hook": r["hook"], "phase": r["phase"], "answer": r["answer"],
                 "metadata": json.loads(r["payload_json"]).get("metadata") or {}} for r in rows]


def _run(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], kind=row["kind"], status=row["status"], progress=row["progress"],
        verdict=row["verdict"], score=row["score"], request=json.loads(row["request_json"]),
        result=json.loads(row["result_json"]), error=row["error"],
        created_at=row["created_at"], started_at=row["started_at"], ended_at=row["ended_at"],
    )


def _config(row: sqlite3.Row) -> CanaryConfigRecord:
    return CanaryConfigRecord(
        id=row["id"], name=row["name"], applications=json.loads(row["applications_json"]),
        config=json.loads(row["config_json"]), updated_at=row["updated_at"])
