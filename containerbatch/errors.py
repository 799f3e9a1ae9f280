"""The error tree of containerbatch.

Every message tells the user what to do next and names the file to look at.
"""

from __future__ import annotations

from collections.abc import Sequence


class ContainerBatchError(Exception):
    """Base class of every error raised by containerbatch."""


class ConfigError(ContainerBatchError):
    """A setting, image or scheduler choice is wrong; raised before anything is submitted."""

    def __init__(self, message: str, *, setting: str | None = None, task: str | None = None) -> None:
        where = []
        if setting:
            where.append(f"setting {setting!r}")
        if task:
            where.append(f"task {task}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)
        self.setting = setting
        self.task = task


class SchedulerError(ContainerBatchError):
    """A scheduler command failed.

    ``transient`` tells whether asking again later may help (timeouts, a
    controller that is down for a moment); tenacity retries only those.
    """

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        transient: bool = False,
    ) -> None:
        detail = message
        if argv:
            detail += f"\n  command: {' '.join(argv)}"
        if exit_code is not None:
            detail += f"\n  exit code: {exit_code}"
        if stderr.strip():
            detail += f"\n  stderr: {stderr.strip()[-2000:]}"
        super().__init__(detail)
        self.argv = tuple(argv)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.transient = transient


class SubmitError(SchedulerError):
    """Submitting a job failed."""


class StatusQueryError(SchedulerError):
    """Asking the scheduler for job states failed."""


class JobFailedError(ContainerBatchError):
    """A job ended without success; carries the reason and where to look."""

    def __init__(
        self,
        task_id: str,
        *,
        reason: str,
        exit_code: int | None,
        log_paths: Sequence[str],
        log_tail: str = "",
        detail: str = "",
    ) -> None:
        lines = [f"{task_id} failed: {reason} (exit code {exit_code})"]
        if detail:
            lines.append(detail.rstrip())
        if log_paths:
            lines.append("logs: " + ", ".join(log_paths))
        if log_tail:
            lines.append("last lines of the log:\n" + log_tail.rstrip())
        super().__init__("\n".join(lines))
        self.task_id = task_id
        self.reason = reason
        self.exit_code = exit_code
        self.log_paths = tuple(log_paths)
        self.log_tail = log_tail
