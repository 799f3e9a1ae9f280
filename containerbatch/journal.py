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

from containerbatch.errors import ConfigError
from containerbatch.states import ACTIVE_STATES, ENDED_STATES, AttemptState

__all__ = ["ACTIVE_STATES", "ENDED_STATES", "AttemptRow", "Journal"]

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
    absent_outputs TEXT,
    submit_key TEXT,
    submit_script TEXT,
    submit_index INTEGER,
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
    #: the task's outputs that did not exist when the attempt was submitted (the submit side's own record)
    absent_outputs: tuple[str, ...] = ()
    #: the key the batch system keeps with the job (journaled before the submit call), the script the job
    #: runs, and its element index when the job is an element of an array submission
    submit_key: str | None = None
    submit_script: str | None = None
    submit_index: int | None = None


#: seconds a write waits for another process's transaction (a second submitter) before it is an error
BUSY_TIMEOUT = 30.0
#: the schema version this code writes (``PRAGMA user_version``); older journals are upgraded in place
SCHEMA_VERSION = 3
#: columns added after version 1, with their SQL type
_ADDED_COLUMNS = {
    "absent_outputs": "TEXT",
    "submit_key": "TEXT",
    "submit_script": "TEXT",
    "submit_index": "INTEGER",
}


class Journal:
    """SQLite journal at ``path``; safe to share between threads of one process.

    Raises
    ------
    ConfigError
        When the file is not a journal (corrupt), stays locked, or was written by a newer containerbatch.
    """

    def __init__(self, path: str | Path, timeout: float | None = None) -> None:
        self.path = Path(path)
        timeout = BUSY_TIMEOUT if timeout is None else timeout
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=timeout, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the journal {self.path}: {exc}; check the state_dir setting") from None
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise ConfigError(self._explain(exc)) from None
        except ConfigError:
            self._db.close()
            raise

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return (
                f"the journal {self.path} is locked by another process ({text}); wait for it to finish, or stop it "
                "(`containerbatch status` shows the runs)"
            )
        return (
            f"the journal {self.path} cannot be read ({text}): it is damaged or not a containerbatch journal. "
            f"Move it aside (`mv {self.path} {self.path}.broken`); containerbatch then starts a new one, and "
            "tasks whose outputs exist are not run again"
        )

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the journal {self.path} was written by a newer containerbatch (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade containerbatch, or use another state_dir"
            )
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(attempts)")}
        required = {"run_id", "task_id", "attempt", "state", "job_dir", "marker_path"}
        if not required <= columns:
            raise ConfigError(
                f"the journal {self.path} has a table 'attempts' without the columns {sorted(required - columns)}: "
                f"it is not a containerbatch journal. Move it aside (`mv {self.path} {self.path}.old`)"
            )
        for name, kind in _ADDED_COLUMNS.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")
        if version < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db.in_transaction:  # one an interruption (Ctrl-C between BEGIN and COMMIT) left open
                self._db.execute("ROLLBACK")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # another process holds the journal past the timeout
                raise ConfigError(self._explain(exc)) from None
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
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
        state: str = AttemptState.SUBMITTED.value,
        absent_outputs: tuple[str, ...] | list[str] = (),
        submit_key: str | None = None,
        submit_script: str | None = None,
    ) -> None:
        """Record an attempt: ``submitting`` (no job id yet) before the submit command, else ``submitted``.

        ``submit_key`` is the key the batch system will keep with the job and ``submit_script`` the script it
        runs: a rerun finds the job by them when the submitter died before :meth:`set_job_id`.
        """
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (run_id, task_id, task_family, params, attempt, scheduler, runtime,"
                " image, job_id, job_dir, marker_path, state, submitted, updated, absent_outputs, submit_key,"
                " submit_script) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    state,
                    now,
                    now,
                    json.dumps(list(absent_outputs)),
                    submit_key,
                    submit_script,
                ),
            )

    def set_submit_key(self, task_id: str, attempt: int, key: str, script: str, index: int | None = None) -> None:
        """The attempt (still ``submitting``) goes out in a job of several tasks: under that job's ``key``,
        running ``script``, as array element ``index`` (None: not an array). Written before the submit call."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET submit_key = ?, submit_script = ?, submit_index = ?, updated = ?"
                " WHERE task_id = ? AND attempt = ? AND state = ?",
                (key, script, index, time.time(), task_id, attempt, AttemptState.SUBMITTING.value),
            )

    def submitting(self, scheduler: str) -> list[AttemptRow]:
        """Attempts of ``scheduler`` journaled as ``submitting`` under a key (their job id never written)."""
        return self._rows(
            "SELECT * FROM attempts WHERE state = ? AND scheduler = ? AND job_id IS NULL AND submit_key IS NOT NULL",
            (AttemptState.SUBMITTING.value, scheduler),
        )

    def set_job_id(self, task_id: str, attempt: int, job_id: str) -> None:
        """The scheduler accepted the attempt recorded as ``submitting``: it is ``submitted`` as ``job_id``."""
        with self._tx() as db:
            db.execute(
                "UPDATE attempts SET job_id = ?, state = ?, submitted = ?, updated = ?"
                " WHERE task_id = ? AND attempt = ? AND state = ?",
                (
                    job_id,
                    AttemptState.SUBMITTED.value,
                    time.time(),
                    time.time(),
                    task_id,
                    attempt,
                    AttemptState.SUBMITTING.value,
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
            data["absent_outputs"] = _paths(data.get("absent_outputs"))
            result.append(AttemptRow(**{k: v for k, v in data.items() if k in _ROW_FIELDS}))
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


_ROW_FIELDS = frozenset(AttemptRow.__dataclass_fields__)


def _paths(text: Any) -> tuple[str, ...]:
    try:
        value = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return ()
    return tuple(p for p in value if isinstance(p, str)) if isinstance(value, list) else ()
