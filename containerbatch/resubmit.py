"""Failure classification and the resubmission policy.

Every failed attempt gets one reason, from the runner's result file, the
exit code, and the scheduler's own words.  The policy is built from tenacity's
strategy objects (``stop``, ``wait``) evaluated per attempt; hooks change the
next attempt's resources (built-in: memory x2 after out_of_memory, walltime x2
after walltime, both capped).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tenacity import RetryCallState, stop_after_attempt, wait_exponential

from containerbatch.spec import JobSpec, Resources, parse_duration, parse_memory
from containerbatch.states import JobState, JobStatus, Reason

__all__ = ["INFRASTRUCTURE", "Failure", "Reason", "ResubmitPolicy", "classify", "policy_from_settings"]

log = logging.getLogger(__name__)


#: reasons that are the infrastructure's, retried by default
INFRASTRUCTURE = frozenset(
    {Reason.OUT_OF_MEMORY, Reason.WALLTIME, Reason.NODE_FAILURE, Reason.PREEMPTED, Reason.LOST, Reason.SUBMIT_ERROR}
)

# the scheduler's own words → reason. Slurm: job state codes
# (https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES); LSF: exit
# reasons in bjobs/bhist (https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=bjobs-job-exit-reasons);
# HTCondor: HoldReasonCode (https://htcondor.readthedocs.io/en/latest/codes-other-values/hold-reason-codes.html)
_NATIVE = {
    "OUT_OF_MEMORY": Reason.OUT_OF_MEMORY,
    "OOM": Reason.OUT_OF_MEMORY,
    "TIMEOUT": Reason.WALLTIME,
    "DEADLINE": Reason.WALLTIME,
    "NODE_FAIL": Reason.NODE_FAILURE,
    "BOOT_FAIL": Reason.NODE_FAILURE,
    "PREEMPTED": Reason.PREEMPTED,
    "CANCELLED": Reason.CANCELLED,
    "TERM_MEMLIMIT": Reason.OUT_OF_MEMORY,
    "TERM_RUNLIMIT": Reason.WALLTIME,
    "TERM_CPULIMIT": Reason.WALLTIME,
    "TERM_PREEMPT": Reason.PREEMPTED,
    "TERM_OWNER": Reason.CANCELLED,
    "TERM_ADMIN": Reason.CANCELLED,
    "TERM_FORCE_OWNER": Reason.CANCELLED,
    "TERM_FORCE_ADMIN": Reason.CANCELLED,
    "TERM_HOST": Reason.NODE_FAILURE,
    "TERM_LOAD": Reason.NODE_FAILURE,
    "TERM_ZOMBIE": Reason.NODE_FAILURE,
    "TERM_REMOVE_HUNG_JOB": Reason.NODE_FAILURE,  # the host stopped answering; LSF removed the job
    "TERM_REQUEUE_ADMIN": Reason.PREEMPTED,
    "TERM_REQUEUE_OWNER": Reason.PREEMPTED,
}
# HTCondor hold reason codes
_HOLD_CODES = {
    "1": Reason.CANCELLED,  # held by user
    "6": Reason.IMAGE_ERROR,  # failed to create process
    "21": Reason.OUT_OF_MEMORY,  # job exceeded memory limit (cgroup)
    "34": Reason.OUT_OF_MEMORY,  # memory usage exceeded request_memory
    "35": Reason.IMAGE_ERROR,  # invalid docker image
    "45": Reason.IMAGE_ERROR,  # singularity test failed
    "46": Reason.WALLTIME,  # job duration exceeded
    "47": Reason.WALLTIME,  # job execute duration exceeded
}


@dataclass(frozen=True)
class Failure:
    """A classified failed attempt."""

    reason: Reason
    detail: str
    exit_code: int | None


def classify(
    result: Mapping[str, Any] | None,
    status: JobStatus,
    exit_code: int | None,
    *,
    oom_killed: bool = False,
    memory_limited: bool = False,
    cancelled: bool = False,
    runtime: str = "",
    stderr_tail: str = "",
) -> Failure:
    """Give a failed attempt its reason.

    Parameters
    ----------
    result:
        The runner's result.json, if it was written.
    status:
        The scheduler's last word on the job.
    exit_code:
        From the done-marker (the job script's view) or the scheduler.
    oom_killed:
        The container engine said so (Docker's ``State.OOMKilled``).
    memory_limited:
        A memory limit was set; with exit 137 (SIGKILL) and no other cause it
        is taken as out of memory (Podman does not set ``OOMKilled``).
    cancelled:
        The job script was told to stop (TERM/INT) and the scheduler gives no
        more specific reason (such as TIMEOUT).
    stderr_tail:
        The end of the job's stderr, for errors the image causes before the
        runner can write anything (no luigi or containerbatch in the image).
    """
    if result is not None and result.get("status") in ("failure", "error"):
        what = "the task raised" if result.get("status") == "failure" else "the task could not be rebuilt"
        return Failure(Reason.TASK_ERROR, f"{what}: {result.get('exception', '')}", exit_code)
    words = [status.native.upper(), *status.reason.upper().replace(":", " ").split()]
    for word in words:
        if word in _NATIVE:
            return Failure(_NATIVE[word], _explain(status), exit_code)
    if status.state == JobState.HELD:
        found = re.search(r"HoldReasonCode (\d+)", status.reason)
        code = found.group(1) if found else status.native
        if code in _HOLD_CODES:
            return Failure(_HOLD_CODES[code], _explain(status), exit_code)
    if oom_killed:
        return Failure(Reason.OUT_OF_MEMORY, "the container engine killed the job for exceeding its memory", exit_code)
    if status.state == JobState.TIMEOUT:
        return Failure(Reason.WALLTIME, _explain(status), exit_code)
    if status.state == JobState.CANCELLED or cancelled:
        return Failure(Reason.CANCELLED, _explain(status) or "the job was stopped before it ended", exit_code)
    if status.state == JobState.LOST:
        return Failure(Reason.LOST, status.reason or "the job left the scheduler without a result", exit_code)
    if exit_code == 137 and memory_limited:
        return Failure(Reason.OUT_OF_MEMORY, "killed with SIGKILL (exit 137) while under a memory limit", exit_code)
    missing = _MISSING_MODULE.search(stderr_tail) if result is None else None
    if missing and exit_code not in (0, None):
        return Failure(
            Reason.IMAGE_ERROR,
            f"the image has no {missing.group(1)!r} module: keep the setting bundle at auto (containerbatch binds "
            "luigi and its runner into the container), or install them in the image",
            exit_code,
        )
    if exit_code in (125, 126, 127):
        return Failure(
            Reason.IMAGE_ERROR,
            f"the container could not start the runner (exit {exit_code}: 125 the engine failed, e.g. no such "
            "image; 126 python not executable; 127 python not found in the image)",
            exit_code,
        )
    if exit_code == 255 and runtime in ("apptainer", "singularity"):
        return Failure(
            Reason.IMAGE_ERROR,
            f"{runtime} failed before the runner started (exit 255: image not usable, python3 not found in it, "
            "or a bind failed); see stderr",
            exit_code,
        )
    if exit_code is not None and exit_code in (143, 130, 129) or status.native == "cancelled":
        return Failure(Reason.CANCELLED, f"the job was terminated by a signal (exit {exit_code})", exit_code)
    if status.state == JobState.FAILED and exit_code is None:
        return Failure(Reason.NODE_FAILURE, _explain(status) or "the job failed without exit code", exit_code)
    return Failure(Reason.LOST, f"the job ended (exit {exit_code}) without writing its result file", exit_code)


def _explain(status: JobStatus) -> str:
    return f"{status.native}{': ' + status.reason if status.reason else ''}"


_MISSING_MODULE = re.compile(r"No module named '?(containerbatch|luigi)[.'\s]")

Hook = Callable[[JobSpec, Failure], Mapping[str, Any] | None]


@dataclass(frozen=True)
class ResubmitPolicy:
    """Which failures are retried, how often, how long to wait, and what changes.

    ``stop`` and ``wait`` are tenacity strategies, evaluated per attempt.
    """

    max_attempts: int | None = None  # None: 3 for infrastructure reasons, 1 for task errors
    retry_on: frozenset[Reason] = INFRASTRUCTURE
    wait: Callable[[RetryCallState], float] = wait_exponential(multiplier=5, max=300)
    hooks: tuple[Hook, ...] = ()
    memory_cap_mb: int | None = None
    walltime_cap_s: int | None = None

    def should_retry(self, failure: Failure, attempt: int) -> bool:
        if failure.reason not in self.retry_on:
            return False
        limit = self.max_attempts if self.max_attempts is not None else 3
        return not stop_after_attempt(limit)(_state(attempt))

    def delay(self, attempt: int) -> float:
        return float(self.wait(_state(attempt)))

    def next_resources(self, spec: JobSpec, failure: Failure) -> Resources:
        """The built-in hook (memory/walltime x2, capped), then the user's hooks."""
        res = spec.resources
        if failure.reason == Reason.OUT_OF_MEMORY and res.memory_mb:
            doubled = res.memory_mb * 2
            res = replace(res, memory_mb=min(doubled, self.memory_cap_mb) if self.memory_cap_mb else doubled)
        if failure.reason == Reason.WALLTIME and res.walltime_s:
            doubled = res.walltime_s * 2
            res = replace(res, walltime_s=min(doubled, self.walltime_cap_s) if self.walltime_cap_s else doubled)
        for hook in self.hooks:
            changes = hook(replace(spec, resources=res), failure) or {}
            res = Resources.parse({**_as_raw(res), **changes}, spec.task_id)
        return res


def _as_raw(res: Resources) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "memory": res.memory_mb,
        "cpus": res.cpus,
        "walltime": res.walltime_s,
        "gpus": res.gpus,
        "disk": res.disk_mb,
        "queue": res.queue,
        "account": res.account,
    }
    return {k: v for k, v in raw.items() if v is not None}


def _state(attempt: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return state


def policy_from_settings(values: Mapping[str, Any], task: Any = None) -> ResubmitPolicy:
    """Build the policy of one task from its resolved settings (and its ``resubmit_hook`` method, if any)."""
    retry_on = frozenset(Reason(r) for r in values["retry_on"])
    hooks: list[Hook] = []
    hook = getattr(task, "resubmit_hook", None)
    if callable(hook):
        hooks.append(hook)
    caps = values["resubmit_caps"]
    return ResubmitPolicy(
        max_attempts=values["max_attempts"],
        retry_on=retry_on,
        wait=wait_exponential(multiplier=values["retry_wait"], max=values["retry_wait_max"]),
        hooks=tuple(hooks),
        memory_cap_mb=parse_memory(caps["memory"]) if caps.get("memory") else None,
        walltime_cap_s=parse_duration(caps["walltime"]) if caps.get("walltime") else None,
    )
