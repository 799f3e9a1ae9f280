"""toyq: an example scheduler plugin (and a runtime), written only against containerbatch's public contract.

The batch system is the fake in ``fake.py`` (commands ``toyq-sub``, ``toyq-stat``, ``toyq-del`` in
``bin/``)::

    toyq-sub --name NAME --out FILE --err FILE [--minutes M] [--priority P] SCRIPT   → "toyq: job 5 queued"
    toyq-stat ID...                                → one line per known job: "ID STATE RC" (RC "-" if none)
    toyq-del ID...                                 → "toyq: job 5 deleted"; unknown ids: "toyq: no job 9", exit 1
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import ClassVar

from containerbatch import helpers
from containerbatch.runtimes.base import Runtime
from containerbatch.schedulers.base import CommandResult, Scheduler, status_error, submit_error
from containerbatch.settings import plugin_setting
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

_QUEUED = re.compile(r"^toyq: job (\d+) queued$", re.M)


class ToyScheduler(Scheduler):
    """The toyq batch system."""

    name = "toyq"
    commands = ("toyq-sub", "toyq-stat", "toyq-del")
    DOCS_URL = "https://example.invalid/toyq/states"
    STATE_MAP = {
        "PENDING": JobState.PENDING,
        "RUNNING": JobState.RUNNING,
        "DONE": JobState.COMPLETED,  # FAILED when RC != 0
        "KILLED": JobState.CANCELLED,
        "OVERTIME": JobState.TIMEOUT,
    }
    FAILURE_WORDS = {"OVERTIME": Reason.WALLTIME, "KILLED": Reason.CANCELLED}
    SETTINGS = (plugin_setting("toyq_priority", "int", 0, "Priority of toyq jobs (toyq-sub --priority)."),)
    default_poll_interval = 1.0

    def submit_argv(self, spec: JobSpec) -> list[str]:
        argv = ["toyq-sub", "--name", helpers.job_name(spec.job_name, max_length=40)]
        argv += ["--out", spec.stdout_path, "--err", spec.stderr_path]
        argv += ["--priority", str(spec.settings.get("toyq_priority") or 0)]
        argv += helpers.map_resources(
            spec.resources,
            self.name,
            ignore=("memory_mb", "cpus", "disk_mb"),
            walltime_s=lambda s: ["--minutes", str(helpers.minutes(s))],
        )
        return [*argv, spec.script_path]

    def parse_submit(self, result: CommandResult) -> str:
        match = _QUEUED.search(result.stdout)
        if result.exit_code != 0 or not match:
            raise submit_error(result, ("toyq is busy",), "see stderr")
        return match.group(1)

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["toyq-stat", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.exit_code != 0:
            raise status_error(result, "toyq-stat")
        states = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) != 3 or parts[0] not in job_ids:
                continue
            code = int(parts[2]) if parts[2].isdigit() else None
            status = self.map_state(parts[1], code)
            if status.state is JobState.COMPLETED and code not in (0, None):
                status = JobStatus(JobState.FAILED, parts[1], code)
            states[parts[0]] = status
        return states

    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["toyq-del", *job_ids]

    def harmless_kill_error(self, result: CommandResult) -> bool:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        return bool(lines) and all(ln.startswith("toyq: no job") for ln in lines)

    def probe_argv(self) -> list[str]:
        return ["toyq-stat"]


class ToyRuntime(Runtime):
    """Runs the runner with the host's python, the image being a ``*.toyimg`` file it only names."""

    name = "toyrun"
    START_FAILURES: ClassVar = {**Runtime.START_FAILURES, 99: "the toy image could not be opened"}
    SETTINGS = (plugin_setting("toyrun_label", "str", "toy", "A label exported to the task as TOYRUN_LABEL."),)

    @classmethod
    def claim_image(cls, image: str) -> int:
        return 10 if image.endswith(".toyimg") else 0

    def preflight(self, spec: JobSpec) -> None:
        from containerbatch.errors import ConfigError

        if not os.path.isfile(os.path.join(spec.working_dir, spec.image or "")):
            raise ConfigError(f"toy image {spec.image!r} not found", setting="image", task=spec.task_id)

    def command(self, spec: JobSpec) -> list[str]:
        return ["env", f"TOYRUN_IMAGE={spec.image}", *spec.runner_argv()]

    def exports(self, spec: JobSpec) -> dict[str, str]:
        env = dict(spec.env)
        env["TOYRUN_LABEL"] = str(spec.settings.get("toyrun_label") or "")
        path = os.environ.get("PYTHONPATH")
        if path:
            env["PYTHONPATH"] = path
        return env
