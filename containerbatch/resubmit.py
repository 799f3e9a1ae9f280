"""Failure classification and the resubmission policy.

Every failed attempt gets one reason, from the runner's result file, the
exit code, and the words of the scheduler and runtime plugins (each declares
its own; this module keeps only the reason vocabulary and the order).  The policy is built from tenacity's
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
    scheduler: Any = None,
    runtime: Any = None,
    oom_killed: bool = False,
    memory_limited: bool = False,
    cancelled: bool = False,
    stderr_tail: str = "",
) -> Failure:
    """Give a failed attempt its reason.

    The batch system's words are the scheduler plugin's to read
    (:meth:`~containerbatch.schedulers.base.BaseScheduler.classify_failure`), exit codes that mean the
    container never started the runner are the runtime plugin's
    (:meth:`~containerbatch.runtimes.base.Runtime.classify_failure`); this function only orders them
    with what every job shows.

    Parameters
    ----------
    result:
        The runner's result.json, if it was written.
    status:
        The scheduler's last word on the job.
    exit_code:
        From the done-marker (the job script's view) or the scheduler.
    scheduler:
        The scheduler plugin instance that ran the job (None: its words are not read).
    runtime:
        The runtime plugin instance (or its registered name) that ran the container.
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
    said = _ask(scheduler, "classify_failure", status)
    if said is not None:
        return Failure(said[0], said[1], exit_code)
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
    if result is None and exit_code not in (0, None):
        said = _runtime_says(runtime, exit_code, stderr_tail)
        if said is not None:
            return Failure(said[0], said[1], exit_code)
    if exit_code is not None and exit_code in (143, 130, 129) or status.native == "cancelled":
        return Failure(Reason.CANCELLED, f"the job was terminated by a signal (exit {exit_code})", exit_code)
    if result is None and exit_code in _CRASH_SIGNALS:
        return Failure(
            Reason.TASK_ERROR,
            f"the task crashed with {_CRASH_SIGNALS[exit_code]} (exit {exit_code}) before it could write its result; "
            "see stderr (a crash in compiled code the task calls is not retried)",
            exit_code,
        )
    if status.state == JobState.FAILED and exit_code is None:
        return Failure(Reason.NODE_FAILURE, _explain(status) or "the job failed without exit code", exit_code)
    return Failure(Reason.LOST, f"the job ended (exit {exit_code}) without writing its result file", exit_code)


def _ask(plugin: Any, hook: str, *args: Any) -> tuple[Reason, str] | None:
    """A plugin's classification hook; a plugin that raises is logged and ignored (never fails the run)."""
    method = getattr(plugin, hook, None) if plugin is not None else None
    if method is None:
        return None
    try:
        said = method(*args)
    except Exception:
        log.exception("%s.%s failed; classifying without it", type(plugin).__name__, hook)
        return None
    if said is None:
        return None
    reason, detail = said
    return Reason(reason), str(detail)


def _runtime_says(runtime: Any, exit_code: int, stderr_tail: str) -> tuple[Reason, str] | None:
    if runtime is None or isinstance(runtime, str):
        from containerbatch import plugins
        from containerbatch.runtimes.base import Runtime

        cls: Any = Runtime
        if runtime:
            try:
                cls = plugins.runtimes.get(runtime)
            except Exception:  # unknown or broken plugin: the base's codes still apply
                cls = Runtime
        return _ask(cls, "classify_start_failure", exit_code, stderr_tail)
    return _ask(runtime, "classify_start_failure", exit_code, stderr_tail)


def _explain(status: JobStatus) -> str:
    return f"{status.native}{': ' + status.reason if status.reason else ''}"


#: exit 128+N of a process killed by a crash signal: the task's own fault, not the infrastructure's
_CRASH_SIGNALS = {132: "SIGILL", 133: "SIGTRAP", 134: "SIGABRT", 135: "SIGBUS", 136: "SIGFPE", 139: "SIGSEGV"}

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
