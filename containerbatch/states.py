"""Job states shared by every scheduler."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.Enum):
    """What containerbatch knows of a job.

    UNKNOWN means the scheduler could not be asked; it is never a failure.
    LOST means the job left queue and history without writing anything.
    """

    PENDING = "pending"
    RUNNING = "running"
    HELD = "held"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    LOST = "lost"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.LOST})


@dataclass(frozen=True)
class JobStatus:
    """One observation of one job.

    Parameters
    ----------
    state:
        The common state.
    native:
        The scheduler's own word for it (``OUT_OF_MEMORY``, ``EXIT``, ``5``...).
    exit_code:
        The job's exit code when the scheduler reports one.
    reason:
        A scheduler-given reason (hold reason, LSF exit reason, Slurm state detail).
    """

    state: JobState
    native: str = ""
    exit_code: int | None = None
    reason: str = ""
