"""The journal: a durable record of every submission (SQLite, WAL).

A row is written before the submit call returns to luigi, so a submitter that
is killed and started again finds its jobs: still queued or running ones are
re-attached, not submitted twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: states an attempt ends in; nothing moves it back to a live state
ENDED_STATES = ("done", "failed", "cancelled", "new_deps")

SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_family TEXT NOT NULL,
    params TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    scheduler TEXT NOT NULL,
    runtime TEXT NOT NULL,
    image TEXT,
    job_id TEXT,
    job_dir TEXT NOT NULL,
    marker_path TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    exit_code INTEGER,
    submitted REAL,
    started REAL,
    ended REAL,
    updated REAL NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    argv TEXT,
    pid INTEGER,
    host TEXT
);
"""


@dataclass(frozen=True)
class AttemptRow:
    run_id: str
    task_id: str
    task_family: str
    params: dict[str, str]
    attempt: int
    scheduler: str
    runtime: str
    image: str | None
    job_id: str | None
    job_dir: str
    marker_path: str
    state: str
    reason: str | None
    exit_code: int | None
    submitted: float | None
    started: float | None
    ended: float | None
    updated: float


class Journal:
    """SQLite journal at ``path``; safe to share between threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def start_run(self, run_id: str, argv: list[str], pid: int, host: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, started, argv, pid, host) VALUES (?, ?, ?, ?, ?)",
                (run_id, time.time(), json.dumps(argv), pid, host),
            )

    def end_run(self, run_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET ended = ? WHERE run_id = ?", (time.time(), run_id))

    def record_submit(
        self,
        *,
        run_id: str,
        task_id: str,
        task_family: str,
        params: dict[str, str],
        attempt: int,
        scheduler: str,
        runtime: str,
        image: str | None,
        job_id: str | None,
        job_dir: str,
        marker_path: str,
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (run_id, task_id, task_family, params, attempt, scheduler, runtime,"
                " image, job_id, job_dir, marker_path, state, submitted, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?)",
                (
                    run_id,
                    task_id,
                    task_family,
                    json.dumps(params, sort_keys=True),
                    attempt,
                    scheduler,
                    runtime,
                    image,
                    job_id,
                    job_dir,
                    marker_path,
                    now,
                    now,
                ),
            )

    def update(
        self,
        task_id: str,
        attempt: int,
        *,
        state: str,
        reason: str | None = None,
        exit_code: int | None = None,
        started: float | None = None,
        ended: float | None = None,
    ) -> None:
        # An attempt that has ended is never reopened by a late live-state write
        # (a poller update racing a Ctrl-C cancel, say).
        guard = "" if state in ENDED_STATES else f" AND state NOT IN ({', '.join('?' * len(ENDED_STATES))})"
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET state = ?, reason = COALESCE(?, reason), exit_code = COALESCE(?, exit_code),"
                " started = COALESCE(?, started), ended = COALESCE(?, ended), updated = ?"
                " WHERE task_id = ? AND attempt = ?" + guard,
                (state, reason, exit_code, started, ended, time.time(), task_id, attempt)
                + (() if state in ENDED_STATES else ENDED_STATES),
            )

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[AttemptRow]:
        with self._lock:
            cur = self._db.execute(sql, args)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        result = []
        for row in rows:
            data = dict(zip(names, row, strict=True))
            data["params"] = json.loads(data["params"])
            result.append(AttemptRow(**data))
        return result

    def attempts(self, run_id: str | None = None) -> list[AttemptRow]:
        if run_id is None:
            return self._rows("SELECT * FROM attempts ORDER BY submitted")
        return self._rows("SELECT * FROM attempts WHERE run_id = ? ORDER BY submitted", (run_id,))

    def latest(self, task_id: str) -> AttemptRow | None:
        rows = self._rows("SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt DESC LIMIT 1", (task_id,))
        return rows[0] if rows else None

    def runs(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT run_id, started, ended, argv, pid, host FROM runs ORDER BY started")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- read-only queries (cli) ---------------------------------------------
    def attempt(self, task_id: str, attempt: int) -> AttemptRow | None:
        """One attempt of one task, as it is now."""
        rows = self._rows("SELECT * FROM attempts WHERE task_id = ? AND attempt = ?", (task_id, attempt))
        return rows[0] if rows else None
