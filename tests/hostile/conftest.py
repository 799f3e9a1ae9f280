"""Helpers of the hostile suite: the test plays the attacker and checks from outside.

Every test here arranges an attack (a task that forges files from inside its job, a scheduler that prints
garbage, a staged archive crafted by hand) and then looks only at what an outsider sees: files on the
submit host (hashed before and after), the journal, the exit code, and stderr (no traceback).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import run_cli


def rows(work: Path) -> list[dict]:
    """The journal's attempts, read with sqlite directly (not through containerbatch)."""
    db = sqlite3.connect(work / ".containerbatch" / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY task_id, attempt")]
    finally:
        db.close()


def tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` (mode, content hash; links as their target), except under ``skip``."""
    state: dict[str, tuple[int, str]] = {}
    skipped = tuple(str(p) for p in skip)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(skipped)]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            if path.startswith(skipped):
                continue
            info = os.lstat(path)
            if os.path.islink(path):
                state[path] = (info.st_mode, "link:" + os.readlink(path))
            else:
                state[path] = (info.st_mode, hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return state


def cb(work: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``containerbatch ARGS`` in ``work``; the test fails on a traceback in its output."""
    proc = run_cli(list(args), cwd=work, env=env, timeout=timeout)
    assert "Traceback (most recent call last)" not in proc.stderr + proc.stdout, proc.stderr[-4000:]
    return proc
