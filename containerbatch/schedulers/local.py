"""Scheduler ``local``: job scripts run as background processes on this host.

The job id is the process id of ``bash job.sh``.  The process runs in its own
session so that Ctrl-C in the terminal reaches containerbatch, which then
cancels its jobs itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from containerbatch.errors import SchedulerError, SubmitError
from containerbatch.schedulers.base import BaseScheduler
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus


class LocalScheduler(BaseScheduler):
    """Runs each job on the submitting machine; status from the processes themselves."""

    name = "local"
    DOCS_URL = "https://docs.python.org/3/library/subprocess.html"
    default_poll_interval = 1.0
    STATE_MAP = {"running": JobState.RUNNING, "exited": JobState.COMPLETED, "failed": JobState.FAILED}

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        super().__init__(settings)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._scripts: dict[str, str] = {}

    def submit_argv(self, spec: JobSpec) -> list[str]:
        """The process started for ``spec``."""
        return ["/bin/bash", spec.script_path]

    def submit(self, spec: JobSpec) -> str:
        try:
            with open(spec.stdout_path, "ab") as out, open(spec.stderr_path, "ab") as err:
                proc = subprocess.Popen(
                    self.submit_argv(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=spec.working_dir,
                    start_new_session=True,
                )
        except OSError as exc:
            raise SubmitError(f"cannot start {spec.script_path}: {exc}", argv=self.submit_argv(spec)) from None
        job_id = str(proc.pid)
        self._procs[job_id] = proc
        self._scripts[job_id] = spec.script_path
        return job_id

    def find_job(self, script_path: str) -> list[str]:
        """Live processes of this user running ``script_path`` (a submitter killed before it journaled the job
        id finds its job again instead of starting a second one)."""
        wanted = [b"/bin/bash", script_path.encode()]
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != os.getuid():
                    continue
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == wanted:
                    found.append(entry.name)
            except OSError:
                continue
        return sorted(found, key=int)

    def attach(self, job_id: str, script_path: str) -> None:
        """Remember a job started by an earlier submitter (after a restart)."""
        self._scripts[job_id] = script_path

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        states: dict[str, JobStatus] = {}
        for job_id in job_ids:
            proc = self._procs.get(job_id)
            if proc is not None:
                code = proc.poll()
                if code is not None and code < 0:
                    code = 128 - code  # killed by a signal: the shell's view (SIGTERM: 143), as job.sh reports it
                if code is None:
                    states[job_id] = JobStatus(JobState.RUNNING, "running")
                else:
                    states[job_id] = JobStatus(
                        JobState.COMPLETED if code == 0 else JobState.FAILED, "exited" if code == 0 else "failed", code
                    )
            elif self._alive(job_id):
                states[job_id] = JobStatus(JobState.RUNNING, "running")
            # else: gone without our knowing its end; the done-marker decides
        return states

    def _alive(self, job_id: str) -> bool:
        """A process of an earlier submitter: alive and still running our script."""
        try:
            cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return False
        script = self._scripts.get(job_id)
        return script is None or script.encode() in cmdline

    def kill(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            if job_id in self._procs and self._procs[job_id].poll() is not None:
                continue
            if job_id not in self._procs and not self._alive(job_id):
                continue
            try:
                # TERM the script only: it stops the container and writes its marker
                os.kill(int(job_id), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
            except PermissionError:
                raise SchedulerError(
                    f"job {job_id} (a process on this machine) belongs to another user: only they or root can cancel it"
                ) from None

    def available(self) -> tuple[bool, str]:
        return True, "this machine"
