"""Machinery for a small fake of a batch system's commands, so a plugin's tests need no real cluster.

A fake is one executable script per command (``mysub``, ``mystat``, ``mydel``) that calls into a
:class:`FakeBatch`: it keeps the jobs in ``state.json`` under a file lock in a state folder (the
environment variable the fake names, e.g. ``CB_FAKE_STATE``), appends every call to ``calls.log``
(one JSON line: time, tool, argv; the kit's ``status_calls`` hook reads it), and runs each submitted
job for real: a detached supervisor process (own session) starts the job script in its own process
group, waits for it and records its exit code, so jobs outlive the command that submitted them, as
on a batch system.  What the commands print is the fake's business (the real tool's formats).

::

    #!/usr/bin/env python3
    import sys
    from containerbatch.testing.fakes import FakeBatch

    batch = FakeBatch.from_env("CB_TOYQ_STATE", tool="toyq-sub", argv=sys.argv[1:])
    job = batch.submit(sys.argv[-1], cwd=".", stdout="out", stderr="err")
    print(f"job {job} queued")

Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class FakeBatch:
    """The shared state of one fake batch system (a folder); every method takes the lock itself."""

    def __init__(self, state_dir: str | os.PathLike[str], tool: str = "", argv: list[str] | None = None) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if tool:
            self.log_call(tool, argv or [])

    @classmethod
    def from_env(cls, variable: str, tool: str = "", argv: list[str] | None = None) -> FakeBatch:
        """The fake whose state folder the environment variable ``variable`` names (required)."""
        folder = os.environ.get(variable)
        if not folder:
            sys.stderr.write(f"{tool or 'fake'}: set {variable} to the fake's state folder\n")
            raise SystemExit(2)
        return cls(folder, tool, argv)

    # -- state ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state (``{"next_id": int, "jobs": {id: job}}``) under the lock; written back on exit."""
        with open(self.dir / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.dir / "state.json"
            try:
                state = json.loads(path.read_text()) if path.exists() else {}
            except ValueError:
                state = {}
            state.setdefault("next_id", 1)
            state.setdefault("jobs", {})
            yield state
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every job: ``state`` (pending, running, exited, killed), ``rc``, ``pid``, fields."""
        with self.locked() as state:
            return {k: dict(v) for k, v in state["jobs"].items()}

    def log_call(self, tool: str, argv: list[str]) -> None:
        line = json.dumps({"time": time.time(), "tool": tool, "argv": list(argv)})
        with open(self.dir / "calls.log", "a") as handle:
            handle.write(line + "\n")

    # -- jobs -------------------------------------------------------------------------------------------
    def submit(self, script: str, cwd: str, stdout: str, stderr: str, **fields: Any) -> str:
        """Queue ``script`` (run with bash) and start its supervisor; returns the new job id."""
        with self.locked() as state:
            job_id = str(state["next_id"])
            state["next_id"] += 1
            state["jobs"][job_id] = {
                "script": os.path.abspath(script),
                "cwd": os.path.abspath(cwd),
                "stdout": stdout,
                "stderr": stderr,
                "state": "pending",
                "rc": None,
                "pid": None,
                "submitted": time.time(),
                **fields,
            }
        subprocess.Popen(
            [sys.executable, "-m", "containerbatch.testing.fakes", "_supervise", str(self.dir), job_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return job_id

    def kill(self, job_id: str, sig: int = signal.SIGTERM) -> bool:
        """Signal the job's process group; a pending job is marked killed.  False: unknown or ended."""
        with self.locked() as state:
            job = state["jobs"].get(job_id)
            if job is None or job["state"] in ("exited", "killed"):
                return False
            if job["state"] == "pending":
                job["state"], job["rc"] = "killed", None
                return True
            pid = job["pid"]
            job["killed"] = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        return True

    def supervise(self, job_id: str) -> None:
        """Run one job (the supervisor process): wait ``pend_seconds`` of the job, start, wait, record."""
        job = self.jobs()[job_id]
        time.sleep(float(job.get("pend_seconds") or 0))
        with self.locked() as state:
            if state["jobs"][job_id]["state"] != "pending":
                return  # killed while pending
            with open(job["stdout"], "ab") as out, open(job["stderr"], "ab") as err:
                proc = subprocess.Popen(
                    ["/bin/bash", job["script"]],
                    cwd=job["cwd"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            state["jobs"][job_id].update(state="running", pid=proc.pid, started=time.time())
        rc = proc.wait()
        with self.locked() as state:
            record = state["jobs"][job_id]
            killed = record.get("killed") or rc < 0
            record.update(state="killed" if killed else "exited", rc=128 - rc if rc < 0 else rc, ended=time.time())

    def cleanup(self) -> None:
        """Kill every job still running (test teardown)."""
        for job_id, job in self.jobs().items():
            if job["state"] in ("pending", "running"):
                self.kill(job_id, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "_supervise":
        FakeBatch(argv[1]).supervise(argv[2])
        return 0
    sys.stderr.write("usage: python -m containerbatch.testing.fakes _supervise STATE_DIR JOB_ID\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
