"""Helpers of the hostile suite: the test plays the attacker and checks from outside.

Every test here arranges an attack (a task that forges files from inside its job, a scheduler that prints
garbage, a staged archive crafted by hand) and then looks only at what an outsider sees: files on the
submit host (hashed before and after), the journal, the exit code, and stderr (no traceback).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAKES_BIN, run_cli


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


#: a traceback frame of the submit side (the runner's frames are the node's, shown in "last lines of the log")
SUBMIT_SIDE_FRAME = re.compile(
    r'File "[^"]*/(containerbatch/(?!runner\.py)[^"]*|luigi/(worker|interface|scheduler)\.py)"'
)


def cb(work: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``containerbatch ARGS`` in ``work``; the test fails on a traceback of the submit side in its output."""
    proc = run_cli(list(args), cwd=work, env=env, timeout=timeout)
    # (lines "  | …" quote a job's own log in the end summary: the job's traceback, not the submitter's)
    said = "\n".join(ln for ln in (proc.stderr + proc.stdout).splitlines() if not ln.startswith("  | "))
    found = SUBMIT_SIDE_FRAME.search(said)
    assert found is None, f"a traceback of the submit side ({found.group(0)}):\n{proc.stderr[-6000:]}"
    return proc


def shim(folder: Path, tool: str, body: str) -> Path:
    """An executable ``folder/tool``: a Python script (``body``) standing in for a scheduler command; the real
    fake is at ``REAL`` and every call is appended to ``folder/calls``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / tool
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys, time\n"
        f"REAL = {str(FAKES_BIN / tool)!r}\n"
        f"open({str(folder / 'calls')!r}, 'a').write('%s %.3f\\n' % ({tool!r}, time.time()))\n" + body
    )
    script.chmod(0o755)
    return script
