"""The one SQLite database (WAL) holding rollouts, their measurements, events and the
commands other processes send them. The controller writes here before it acts."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    name TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL,
    step_index INTEGER NOT NULL DEFAULT 0,
    weights_json TEXT NOT NULL DEFAULT '{}',
    judge_state_json TEXT NOT NULL DEFAULT '{}',
    counters_json TEXT NOT NULL DEFAULT '{}',
    window_start REAL,
    analysis_start REAL,
    verdict TEXT,
    message TEXT NOT NULL DEFAULT '',
    report_dir TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL REFERENCES rollouts(name) ON DELETE CASCADE,
    step_index INTEGER NOT NULL,
    weight INTEGER NOT NULL,
    phase TEXT NOT NULL,
    decision TEXT NOT NULL,
    score REAL,
    verdict TEXT,
    message TEXT NOT NULL DEFAULT '',
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    result_json TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_rollout ON measurements(rollout, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_rollout ON events(rollout, id);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL,
    ts REAL NOT NULL,
    command TEXT NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0
);
"""

# Phases a rollout can be in; the last three are terminal.
ACTIVE_PHASES = ("Initializing", "Progressing", "Paused", "Promoting", "RollingBack")
TERMINAL_PHASES = ("Promoted", "RolledBack", "Aborted")


@dataclass
class RolloutRecord:
    name: str
    spec: dict[str, Any]
    spec_hash: str
    source: str
    phase: str
    step_index: int
    weights: dict[str, int]
    judge_state: dict[str, Any]
    counters: dict[str, int]
    window_start: float | None
    analysis_start: float | None
    verdict: str | None
    message: str
    report_dir: str | None
    created_at: float
    updated_at: float

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class MeasurementRecord:
    id: int
    rollout: str
    step_index: int
    weight: int
    phase: str
    decision: str
    score: float | None
    verdict: str | None
    message: str
    window_start: float
    window_end: float
    result: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    rollout: str
    ts: float
    kind: str
    message: str
    data: dict[str, Any]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "canaryctl"


class Store:
    """Thread-confined: open one Store per thread or task group that uses it."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / "canaryctl.db"
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL so a decision written before acting survives power loss, not just SIGKILL.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- rollouts ---------------------------------------------------------------------

    def create_rollout(self, name: str, spec: dict[str, Any], spec_hash: str, source: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM rollouts WHERE name = ?", (name,))
            db.execute("DELETE FROM events WHERE rollout = ?", (name,))
            db.execute("DELETE FROM commands WHERE rollout = ?", (name,))
            db.execute(
                "INSERT INTO rollouts (name, spec_json, spec_hash, source, phase, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 'Initializing', ?, ?)",
                (name, json.dumps(spec), spec_hash, source, now, now),
            )

    def get_rollout(self, name: str) -> RolloutRecord | None:
        row = self._db.execute("SELECT * FROM rollouts WHERE name = ?", (name,)).fetchone()
        return None if row is None else _rollout(row)

    def list_rollouts(self) -> list[RolloutRecord]:
        rows = self._db.execute("SELECT * FROM rollouts ORDER BY updated_at DESC").fetchall()
        return [_rollout(r) for r in rows]

    def update_rollout(self, name: str, **fields: Any) -> None:
        columns = {
            "phase": None, "step_index": None, "verdict": None, "message": None,
            "report_dir": None, "window_start": None, "analysis_start": None,
            "weights": "weights_json", "judge_state": "judge_state_json",
            "counters": "counters_json",
        }
        sets, values = [], []
        for key, value in fields.items():
            if key not in columns:
                raise KeyError(key)
            column = columns[key] or key
            sets.append(f"{column} = ?")
            values.append(json.dumps(value) if column.endswith("_json") else value)
        sets.append("updated_at = ?")
        values.append(time.time())
        with self.transaction() as db:
            db.execute(f"UPDATE rollouts SET {', '.join(sets)} WHERE name = ?", (*values, name))

    # -- measurements and events ------------------------------------------------------

    def add_measurement(
        self, rollout: str, *, step_index: int, weight: int, phase: str, decision: str,
        score: float | None, verdict: str | None, message: str, window_start: float,
        window_end: float, result: dict[str, Any],
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO measurements (rollout, step_index, weight, phase, decision, score,"
                " verdict, message, window_start, window_end, result_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rollout, step_index, weight, phase, decision, score, verdict, message,
                 window_start, window_end, json.dumps(result), time.time()),
            )
            return int(cur.lastrowid or 0)

    def measurements(self, rollout: str) -> list[MeasurementRecord]:
        rows = self._db.execute(
            "SELECT * FROM measurements WHERE rollout = ? ORDER BY id", (rollout,)
        ).fetchall()
        return [
            MeasurementRecord(
                id=r["id"], rollout=r["rollout"], step_index=r["step_index"], weight=r["weight"],
                phase=r["phase"], decision=r["decision"], score=r["score"], verdict=r["verdict"],
                message=r["message"], window_start=r["window_start"],
                window_end=r["window_end"], result=json.loads(r["result_json"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def add_event(self, rollout: str, kind: str, message: str, **data: Any) -> EventRecord:
        ts = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO events (rollout, ts, kind, message, data_json) VALUES (?, ?, ?, ?, ?)",
                (rollout, ts, kind, message, json.dumps(data)),
            )
        return EventRecord(int(cur.lastrowid or 0), rollout, ts, kind, message, data)

    def events(self, rollout: str, after_id: int = 0) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT * FROM events WHERE rollout = ? AND id > ? ORDER BY id", (rollout, after_id)
        ).fetchall()
        return [
            EventRecord(r["id"], r["rollout"], r["ts"], r["kind"], r["message"],
                        json.loads(r["data_json"]))
            for r in rows
        ]

    # -- commands from other processes (pause, resume, promote, abort) ------------------

    def send_command(self, rollout: str, command: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO commands (rollout, ts, command) VALUES (?, ?, ?)",
                (rollout, time.time(), command),
            )

    def take_commands(self, rollout: str) -> list[str]:
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, command FROM commands WHERE rollout = ? AND consumed = 0 ORDER BY id",
                (rollout,),
            ).fetchall()
            if rows:
                db.execute(
                    f"UPDATE commands SET consumed = 1 WHERE id IN ({','.join('?' * len(rows))})",
                    [r["id"] for r in rows],
                )
        return [r["command"] for r in rows]


def _rollout(row: sqlite3.Row) -> RolloutRecord:
    return RolloutRecord(
        name=row["name"],
        spec=json.loads(row["spec_json"]),
        spec_hash=row["spec_hash"],
        source=row["source"],
        phase=row["phase"],
        step_index=row["step_index"],
        weights={k: int(v) for k, v in json.loads(row["weights_json"]).items()},
        judge_state=json.loads(row["judge_state_json"]),
        counters={k: int(v) for k, v in json.loads(row["counters_json"]).items()},
        window_start=row["window_start"],
        analysis_start=row["analysis_start"],
        verdict=row["verdict"],
        message=row["message"],
        report_dir=row["report_dir"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
