"""The one vocabulary of states and reasons: scheduler job states, journal attempt states, failure reasons.

* :class:`JobState` is what a scheduler says of a job (every scheduler maps its native codes onto it).
* :class:`AttemptState` is what the journal records of one attempt of one task; ``ACTIVE`` attempts are
  re-attached after a restart, ``ENDED`` ones are never reopened.
* :class:`Reason` is why an attempt failed.

journal, run, worker, resubmit and the command line all take their words from here.
"""

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


class AttemptState(str, enum.Enum):
    """The journal's word for one attempt of one task."""

    SUBMITTING = "submitting"  # written before the submit command runs: the job may or may not exist
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    SUSPENDED = "suspended"
    UNKNOWN = "unknown"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NEW_DEPS = "new_deps"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of_job(cls, state: JobState) -> AttemptState:
        """The attempt state that a live scheduler state is journaled as."""
        return _OF_JOB.get(state, cls.UNKNOWN)


_OF_JOB = {
    JobState.PENDING: AttemptState.QUEUED,
    JobState.RUNNING: AttemptState.RUNNING,
    JobState.HELD: AttemptState.HELD,
    JobState.SUSPENDED: AttemptState.SUSPENDED,
    JobState.UNKNOWN: AttemptState.UNKNOWN,
}

#: attempts whose job may still be queued or running: a restarted submitter follows them, never resubmits
ACTIVE_STATES: tuple[str, ...] = tuple(
    s.value
    for s in (
        AttemptState.SUBMITTING,
        AttemptState.SUBMITTED,
        AttemptState.QUEUED,
        AttemptState.RUNNING,
        AttemptState.HELD,
        AttemptState.SUSPENDED,
        AttemptState.UNKNOWN,
    )
)
#: states an attempt ends in; nothing moves it back to a live state
ENDED_STATES: tuple[str, ...] = tuple(
    s.value for s in (AttemptState.DONE, AttemptState.FAILED, AttemptState.CANCELLED, AttemptState.NEW_DEPS)
)


class Reason(str, enum.Enum):
    """Why an attempt failed."""

    TASK_ERROR = "task_error"  # the task's own code raised
    OUT_OF_MEMORY = "out_of_memory"
    WALLTIME = "walltime"
    NODE_FAILURE = "node_failure"
    PREEMPTED = "preempted"
    LOST = "lost"  # gone from queue and history without a result
    IMAGE_ERROR = "image_error"  # the container could not start the runner
    SUBMIT_ERROR = "submit_error"
    CANCELLED = "cancelled"
    BAD_RESULT = "bad_result"  # the node wrote a result file that is not valid (or names what it may not)
    OUTPUTS_MISSING = "outputs_missing"  # the job said success but the task is not complete on the submit host

    def __str__(self) -> str:
        return self.value
