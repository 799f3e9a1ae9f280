"""luigi integration: a worker whose task processes are batch jobs.

``JobProcess`` is the light, Process-like object luigi's worker holds per
running task (as b2luigi's ``BatchProcess``): it owns no process or thread.
``start``/``run`` submit the job, ``is_alive`` reads the shared poller's view,
``terminate`` cancels.  When the job has ended, the result file decides, and
the outcome goes to luigi's result queue exactly once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import luigi
import luigi.interface
import luigi.task_register
import luigi.worker
from luigi.scheduler import DONE, FAILED, PENDING
from luigi.task import flatten

from containerbatch import jobfiles, staging
from containerbatch.errors import ConfigError, ContainerBatchError, SchedulerError, SubmitError
from containerbatch.jobfiles import BadResult
from containerbatch.journal import Journal
from containerbatch.poller import TrackedJob
from containerbatch.resubmit import Failure, classify, policy_from_settings
from containerbatch.run import AttemptRecord, Run
from containerbatch.runlog import FAILURE_ATTR
from containerbatch.runtimes import base as runtime_base
from containerbatch.schedulers.base import Scheduler, new_submit_key
from containerbatch.spec import JobSpec, Resources
from containerbatch.states import ACTIVE_STATES, AttemptState, JobState, JobStatus, Reason

__all__ = ["BatchWorker", "JobProcess", "Run", "process"]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: seconds a staged job's output archive may trail its done-marker
STAGE_OUT_WAIT = 30.0
#: rounds a task may report dynamic requirements that are already complete on the submit host
STALE_DYNAMIC_ROUNDS = 3


def log_tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` of a log the job wrote; never blocks (a FIFO in its place) nor follows a link."""
    return jobfiles.tail_text(path, lines)


#: seconds for which a scheduler that did not answer "why did this job end" is not asked again
WHY_BACKOFF = 120.0


_MODULES: frozenset[str] = frozenset()
_MODULES_SIGNATURE: tuple[int, str | None] = (0, None)


def modules_now() -> frozenset[str]:
    """The names in sys.modules, as one shared frozenset while they do not change.

    Every task keeps the modules imported before its attempt; a copy each costs ~30 KB, which is 300 MB
    at 10,000 tasks.  Whether they changed is first read from their number and the last one imported
    (sys.modules keeps the order of import): comparing all names each time was ~4 % of the submitter.
    """
    global _MODULES, _MODULES_SIGNATURE
    signature = (len(sys.modules), next(reversed(sys.modules.keys()), None))
    if signature != _MODULES_SIGNATURE:
        if len(_MODULES) != len(sys.modules) or not _MODULES.issuperset(sys.modules):
            _MODULES = frozenset(sys.modules)
        _MODULES_SIGNATURE = signature
    return _MODULES


class _Recorded(Generic[T]):
    """A field of :class:`JobProcess` kept in its :class:`~containerbatch.run.AttemptRecord`, the one place
    the run (cancel, the display, ``run --json``) reads it from."""

    def __init__(self, field: str = "") -> None:
        self.field = field

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = self.field or name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Recorded[T]: ...

    @overload
    def __get__(self, obj: JobProcess, objtype: type | None = None) -> T: ...

    def __get__(self, obj: JobProcess | None, objtype: type | None = None) -> T | _Recorded[T]:
        if obj is None:
            return self
        value: T = getattr(obj.record, self.field)
        return value

    def __set__(self, obj: JobProcess, value: T) -> None:
        setattr(obj.record, self.field, value)


class JobProcess:
    """The Process-like stand-in luigi's worker holds for one task's batch job(s).

    What the run reads of it lives in :attr:`record` (an :class:`~containerbatch.run.AttemptRecord` the run
    holds in ``run.processes``); the attributes below read and write that record.
    """

    use_multiprocessing = False
    timeout_time = None
    worker_timeout = 0

    spec = _Recorded[JobSpec]()
    scheduler = _Recorded[Scheduler]()
    journal = _Recorded[Journal]()
    job_id = _Recorded[str | None]()
    reported = _Recorded[bool]()
    outcome = _Recorded[str | None]()  # luigi's DONE/FAILED/PENDING once reported
    explanation = _Recorded[str]()  # what was reported to luigi (a failure's full message)
    cancelled = _Recorded[bool]()
    failures = _Recorded[list[Failure]]()
    submitted_at = _Recorded[float | None]()
    ended_at = _Recorded[float | None]()  # when the job itself ended (its result, else its marker)
    _resubmit_at = _Recorded[float | None]("resubmit_at")

    def __init__(self, task: luigi.Task, run: Run, result_queue: Any) -> None:
        self.task = task
        self.run_ctx = run
        self.result_queue = result_queue
        spec = run.spec_for(task)
        values = dict(spec.settings)
        self.record = AttemptRecord(spec, run.scheduler(values), run.journal(spec.state_dir))
        self.policy = policy_from_settings(values, task)
        self.pid = None
        self._next_spec: JobSpec | None = None
        self._journal_state = ""
        self._held_since: float | None = None
        self._stage_wait_since: float | None = None
        self.deferred = False  # waiting in the batcher for its submission
        # the submit side's own record of the attempt, never read back from the job folder
        self.absent_outputs: tuple[str, ...] = ()
        self.imported_modules: frozenset[str] = modules_now()
        self._outputs_wait_since: float | None = None

    @property
    def key(self) -> str:
        return f"{self.spec.task_id}#{self.spec.attempt}"

    @property
    def exitcode(self) -> int | None:
        # outcomes go through the result queue; a non-zero code here would make
        # luigi report a second, generic failure
        return 0 if self.reported else None

    # luigi calls run() in-process when use_multiprocessing is False
    def start(self) -> None:
        self.run()

    def run(self) -> None:
        try:
            with task_lock(self.spec):
                if not self._reattach():
                    self.submit()
        except ContainerBatchError as exc:
            self._failed_to_submit(exc)
        except (OSError, sqlite3.Error) as exc:  # a full disk, a folder that cannot be written, a locked journal
            self._failed_to_submit(SubmitError(f"cannot prepare the job of {self.spec.task_id}: {exc}"))

    def _reattach(self) -> bool:
        """Follow this task's job of an earlier submitter instead of submitting it again.

        Returns False when there is nothing to follow; then the next attempt
        number continues after the journal's last one (nothing is overwritten).
        """
        row = self.journal.latest(self.spec.task_id)
        if row is None:
            return False
        if row.state == AttemptState.SUBMITTING and row.scheduler == self.spec.batch_system and not row.job_id:
            # an earlier submitter died between journaling its intent and learning the job id
            job_id = self._adopt(row)
            if job_id is not None:
                row = replace(row, job_id=job_id)
            else:  # taken as not submitted: it ends here, the next attempt follows
                self.journal.update(
                    row.task_id, row.attempt, state=AttemptState.FAILED.value, reason=Reason.SUBMIT_ERROR.value
                )
        if row.state not in ACTIVE_STATES or row.scheduler != self.spec.batch_system or not row.job_id:
            self.spec = self.spec.with_attempt(row.attempt + 1)
            return False
        self.absent_outputs = row.absent_outputs
        self.spec = replace(
            self.spec.with_attempt(row.attempt), run_id=row.run_id, job_dir=row.job_dir, marker_path=row.marker_path
        )
        self.job_id = row.job_id
        self.submitted_at = row.submitted
        self.scheduler.attach(row.job_id, self.spec.script_path)
        self._track()
        log.info(
            "%s: re-attached to %s job %s (attempt %d, submitted by run %s); not submitting it again",
            self.spec.task_id,
            row.scheduler,
            row.job_id,
            row.attempt,
            row.run_id,
        )
        return True

    def _adopt(self, row: Any) -> str | None:
        """The job of an attempt journaled as ``submitting`` (the earlier submitter died between its intent and
        the journal write of the job id): looked up by the attempt's submission key, for all such attempts of
        the journal at once (:meth:`Scheduler.find_jobs`); None when none was found (then it is submitted again).
        A job that carries the key but is not the user's or runs another script is not adopted."""
        ids: list[str] | None
        if not row.submit_key:  # journaled by an older containerbatch: by its job script, where that works
            script = str(Path(row.job_dir) / "job.sh")
            found = self._look_up(row, lambda: {"": self.scheduler.find_job(script)})
            ids = None if found is None else found.get("")
        else:
            cache = self.run_ctx.found_jobs
            where = (str(self.journal.path), self.spec.batch_system)
            if where not in cache:
                pending = {
                    r.submit_key: r.submit_script or str(Path(r.job_dir) / "job.sh")
                    for r in self.journal.submitting(self.spec.batch_system)
                    if r.submit_key
                }
                pending.setdefault(row.submit_key, row.submit_script or str(Path(row.job_dir) / "job.sh"))
                cache[where] = self._look_up(row, lambda: self.scheduler.find_jobs(pending))
            found = cache[where]
            ids = None if found is None else found.get(row.submit_key, [])
        if ids is None:
            log.warning(
                "%s: an earlier submitter stopped while submitting attempt %d (job folder %s); %s cannot look the "
                "job up, so the attempt is submitted again: check the queue for a duplicate",
                row.task_id,
                row.attempt,
                row.job_dir,
                row.scheduler,
            )
            return None
        if not ids:
            log.info("%s: attempt %d was not submitted before its submitter stopped", row.task_id, row.attempt)
            return None
        if len(ids) > 1:
            log.warning(
                "%s: %d jobs carry the key of attempt %d (%s); following %s",
                row.task_id,
                len(ids),
                row.attempt,
                ", ".join(ids[:5]),
                ids[0],
            )
        job_id = ids[0]
        if row.submit_index is not None:  # an element of an array submission
            job_id = self.scheduler.array_element_id(job_id, int(row.submit_index))  # type: ignore[attr-defined]
        self.journal.set_job_id(row.task_id, row.attempt, job_id)
        log.info(
            "%s: adopted job %s of attempt %d (its submitter stopped while submitting)",
            row.task_id,
            job_id,
            row.attempt,
        )
        return job_id

    def _look_up(self, row: Any, ask: Any) -> dict[str, list[str]] | None:
        try:
            return ask()  # type: ignore[no-any-return]
        except SchedulerError as exc:
            log.warning("%s: could not look up the jobs of interrupted submissions: %s", row.task_id, exc)
            return None

    def _task_info(self, spec: JobSpec, umask: int | None = None) -> dict[str, Any]:
        """What the runner reads (task.json). A copy for the node: the submit side never reads it back."""
        return {
            "task_id": spec.task_id,
            # the id the node computes from the string parameters (FloatParameter 0 → 0.0)
            "node_task_id": node_task_id(type(self.task), dict(spec.params), str(self.task.task_id)),
            "family": spec.task_family,
            "module": spec.task_module,
            "module_file": spec.module_file,
            "params": dict(spec.params),
            "working_dir": spec.working_dir,
            "sys_path": [str(Path(spec.module_file).parent), spec.working_dir],
            "attempt": spec.attempt,
            "run_id": spec.run_id,
            # files the task makes in its container follow the submitting user's umask
            "umask": jobfiles.current_umask() if umask is None else umask,
            # what the node applies before importing the workflow: the submitter's command line, b2luigi settings
            **self.run_ctx.node_context,
        }

    def submit(self) -> None:
        spec = self.spec
        for folder in (spec.result_dir, Path(spec.marker_path).parent):
            Path(folder).mkdir(parents=True, exist_ok=True)
        # the job folder lies where earlier attempts' nodes could write: never through a link they left
        jobfiles.safe_folder(spec.job_dir, spec.log_dir)
        # what the submit side believes of this attempt, from itself only
        self.imported_modules = modules_now()
        self.absent_outputs = tuple(p for p in output_paths(self.task) if not os.path.lexists(p))
        # the key the batch system keeps with the job, journaled before the submit call (see _adopt)
        spec = self.spec = replace(spec, submit_key=new_submit_key())
        umask = jobfiles.current_umask()  # read from /proc: once per submission
        info = self._task_info(spec, umask)
        # one line: json's C encoder (indent= would take its pure-Python one, ~5 % of the submitter at 10,000 tasks)
        jobfiles.write_file(str(Path(spec.job_dir) / jobfiles.TASK), json.dumps(info, sort_keys=True))
        runtime = self.run_ctx.runtime(spec.runtime, dict(spec.settings))
        runtime.prepare_image(spec)  # dynamic dependencies never went through preflight
        script, _command, submit_file = self.run_ctx.render(spec)
        for name, text in self.run_ctx.private_files(spec).items():
            jobfiles.write_private(str(Path(spec.job_dir) / name), text)
        jobfiles.write_file(spec.script_path, script, 0o777)  # executable, as far as the umask says
        os.chmod(spec.script_path, (0o777 & ~umask) | 0o700)
        if submit_file is not None and self.scheduler.submit_file_name:
            jobfiles.write_file(str(Path(spec.job_dir) / self.scheduler.submit_file_name), submit_file)
        if spec.staged:  # no shared filesystem: the job's inputs travel in one archive
            staging.pack_inputs(spec, self.task)
        # the intent first: a submitter killed between the scheduler's answer and the journal write leaves the
        # attempt as `submitting`; the next one looks for its job (_adopt) instead of blindly submitting again
        self._journal_intent(spec, self.absent_outputs)
        if self.run_ctx.batcher.defer(self):
            return  # goes out with others (arrays, tasks_per_job) or within submit_rate: containerbatch.batching
        try:
            try:
                self.job_id = self.scheduler.submit(spec)
            except SubmitError as exc:
                self.job_id = found_after_silent_submit(self.scheduler, spec, exc)
                if self.job_id is None:
                    raise
        except BaseException:
            self.journal.update(spec.task_id, spec.attempt, state=AttemptState.FAILED.value, reason="submit_error")
            raise
        self.submitted_done()

    def submitted_done(self) -> None:
        """Record and follow the job that now runs this task (``job_id`` set)."""
        spec = self.spec
        assert self.job_id is not None
        self.submitted_at = time.time()
        self.journal.set_job_id(spec.task_id, spec.attempt, self.job_id)
        self._journal_state = AttemptState.SUBMITTED.value
        self._track()
        log.info(
            "submitted %s as %s job %s (attempt %d, %s, image %s); logs in %s",
            spec.task_id,
            spec.batch_system,
            self.job_id,
            spec.attempt,
            spec.runtime,
            spec.image,
            spec.job_dir,
        )

    def _track(self) -> None:
        assert self.job_id is not None
        self.run_ctx.processes[self.key] = self.record
        values = self.spec.settings
        poller = self.run_ctx.poller
        if not self.run_ctx.processes_configured:
            # run-wide polling settings come from the first task submitted
            poller.marker_interval = float(values["marker_interval"])
            poller.status_retries = int(values["status_retries"])
            self.run_ctx.processes_configured = True
        interval = values.get("poll_interval") or self.scheduler.default_poll_interval
        poller.track(
            self.key,
            self.scheduler,
            self.job_id,
            self.spec.marker_path,
            float(interval),
            float(values["poll_max_interval"]),
            lost_after=float(values["lost_after"]),
        )

    def is_alive(self) -> bool:
        if self.reported:
            return False
        if self._resubmit_at is not None:
            if time.time() >= self._resubmit_at:
                self._resubmit()
            return not self.reported
        if self.run_ctx.batcher.waiting(self):
            return True
        tracked = self.run_ctx.poller.get(self.key)
        if tracked is None:
            return True
        if not tracked.finished:
            self._note_state(tracked.status.state)
            if tracked.status.state == JobState.HELD:
                return self._held(tracked)
            self._held_since = None
            return True
        if self.spec.staged and tracked.ended_code is not None and not staging.returned(self.spec):
            # the done-marker landed before the output archive: give HTCondor a moment, without blocking
            self._stage_wait_since = self._stage_wait_since or time.time()
            if time.time() - self._stage_wait_since < STAGE_OUT_WAIT:
                return True
        if self._outputs_pending():
            return True
        self._finish(tracked)
        return not self.reported

    def _outputs_pending(self) -> bool:
        """A job that reported success but whose outputs are not (yet) visible here: wait a little, without
        blocking luigi's loop, before calling it outputs_missing."""
        if self.spec.staged:
            return False  # the archive is unpacked in _finish, and STAGE_OUT_WAIT already waited for it
        try:
            result = jobfiles.read_result(self.spec.result_path, task_id=self.spec.task_id, attempt=self.spec.attempt)
        except BadResult:
            return False  # _finish refuses it
        if result is None or result.status != "success" or not missing_outputs(self.task)[0]:
            return False
        self._outputs_wait_since = self._outputs_wait_since or time.time()
        return time.time() - self._outputs_wait_since < float(self.spec.settings.get("outputs_wait", 10.0))

    def _held(self, tracked: TrackedJob) -> bool:
        """A held job is neither running nor failed; after held_timeout, held_action decides."""
        now = time.time()
        if self._held_since is None:
            self._held_since = now
            log.warning(
                "%s: %s job %s is held: %s",
                self.spec.task_id,
                self.spec.batch_system,
                self.job_id,
                tracked.status.reason or tracked.status.native,
            )
        timeout = self.spec.settings.get("held_timeout")
        if timeout is None or now - self._held_since < float(timeout):
            return True
        action = self.spec.settings.get("held_action") or "fail"
        assert self.job_id is not None
        self._held_since = None
        try:
            if action == "release":
                log.warning("%s: releasing held job %s", self.spec.task_id, self.job_id)
                self.scheduler.release([self.job_id])
                return True
            self.scheduler.kill([self.job_id])
        except SchedulerError as exc:
            log.error("%s: could not %s held job %s: %s", self.spec.task_id, action, self.job_id, exc)
            return True
        self.run_ctx.poller.forget(self.key)
        failure = classify(None, tracked.status, None, scheduler=self.scheduler, runtime=self.spec.runtime)
        self._failed(failure)
        return not self.reported

    def _note_state(self, state: JobState) -> None:
        """Keep the journal's view (for `containerbatch status`) in step: one write per change."""
        name = AttemptState.of_job(state).value
        if name != self._journal_state and self._journal_state and not self.cancelled:
            self._journal_state = name
            started = time.time() if state == JobState.RUNNING else None
            self.journal.update(self.spec.task_id, self.spec.attempt, state=name, started=started)

    def terminate(self) -> None:
        """luigi stops its running tasks one by one (Ctrl-C): cancel all of the run's jobs in one call each."""
        if self.job_id and not self.reported and not self.cancelled:
            self.run_ctx.cancel_all()

    # -- outcome -------------------------------------------------------------
    def _finish(self, tracked: TrackedJob) -> None:
        spec = self.spec
        if spec.staged:  # the job's outputs came back in one archive
            staging.unpack_outputs(spec, outputs=output_paths(self.task))
        exit_code = tracked.ended_code if tracked.ended_code is not None else tracked.status.exit_code
        self.run_ctx.poller.forget(self.key)
        try:
            result = jobfiles.read_result(spec.result_path, task_id=spec.task_id, attempt=spec.attempt)
            if result is not None and result.status == "new_deps":
                deps = jobfiles.accept_new_deps(result.new_deps, self.imported_modules)
        except BadResult as exc:
            log.error("%s: the node's result is refused: %s", spec.task_id, exc)
            self.ended_at = _job_end_time(None, spec.marker_path)
            self._failed(Failure(Reason.BAD_RESULT, str(exc), exit_code))
            return
        self.ended_at = _job_end_time(result.finished if result is not None else None, spec.marker_path)
        if result is not None and result.status == "success":
            missing, error = missing_outputs(self.task)
            if missing or error:
                self._failed(self._outputs_missing(missing, error, exit_code), started=result.started)
                return
            self.journal.update(
                spec.task_id,
                spec.attempt,
                state=AttemptState.DONE.value,
                exit_code=exit_code,
                started=result.started,
                ended=result.finished,
            )
            self._report(DONE, "")
            return
        if result is not None and result.status == "new_deps":
            state = AttemptState.NEW_DEPS.value
            self.journal.update(spec.task_id, spec.attempt, state=state, exit_code=exit_code, ended=result.finished)
            stuck = self._dynamic_rounds_exceeded(deps)
            if stuck is not None:
                self._failed(stuck, started=result.started)
                return
            self._report(PENDING, "", new_deps=deps)  # type: ignore[arg-type]
            return
        status = self._why_ended(tracked)
        if status is not tracked.status and status.state in _NOT_OVER:
            self._run_continues(tracked, status)
            return
        oom = (jobfiles.read_small(str(Path(spec.job_dir) / jobfiles.OOM_KILLED)) or "").strip() == "true"
        failure = classify(
            result.as_dict() if result is not None else None,
            status,
            exit_code,
            scheduler=self.scheduler,
            oom_killed=oom,
            memory_limited=spec.resources.memory_mb is not None,
            cancelled=os.path.lexists(Path(spec.job_dir) / jobfiles.CANCELLED),
            runtime=spec.runtime,
            stderr_tail=log_tail(spec.stderr_path, 5),
        )
        self._failed(failure, started=result.started if result is not None else None)

    def _why_ended(self, tracked: TrackedJob) -> Any:
        """The scheduler's last word on an ended job: asked once (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL...) unless
        it failed to answer such a question lately (then each failed job would block luigi for a timeout)."""
        status = tracked.status
        spec = self.spec
        if tracked.ended_code is None or not self.job_id or spec.batch_system == "local":
            return status
        silent = self.run_ctx.why_silent_until
        if silent.get(id(self.scheduler), 0.0) > time.monotonic() or status.state == JobState.UNKNOWN:
            return status
        try:
            return self.scheduler.query([self.job_id]).get(self.job_id, status)
        except Exception as exc:  # noqa: BLE001 - a scheduler's garbage never stops the run
            silent[id(self.scheduler)] = time.monotonic() + WHY_BACKOFF
            log.info("%s: could not ask %s why job %s ended: %s", spec.task_id, spec.batch_system, self.job_id, exc)
            return status

    def _outputs_missing(self, missing: list[str], error: str, exit_code: int | None) -> Failure:
        """The job said success, but luigi's own check says the task is not complete here: say what and why."""
        detail = (
            f"the job reported success, but {self.spec.task_id} is not complete on the submit host: "
            + (f"complete() raised {error}" if error else "missing " + ", ".join(missing[:10]))
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            + ". "
            + outputs_hint(self.spec, missing)
        )
        return Failure(Reason.OUTPUTS_MISSING, detail, exit_code)

    def _dynamic_rounds_exceeded(self, deps: list[tuple[Any, ...]]) -> Failure | None:
        """Stop a task whose dynamic requirements never become complete for it (bounded rounds)."""
        rounds = self.run_ctx.dynamic_rounds
        total, stale = rounds.get(self.spec.task_id, (0, 0))
        total += 1
        requirements = []
        for _module, family, params in (d[:3] for d in deps if len(d) >= 3):
            try:
                requirements.append(luigi.task_register.Register.get_task_cls(family).from_str_params(params))
            except Exception:  # the worker reports an unloadable requirement itself
                requirements = []
                break
        complete_here = bool(requirements) and all(_complete(r) for r in requirements)
        stale = stale + 1 if complete_here else 0
        rounds[self.spec.task_id] = (total, stale)
        limit = int(self.spec.settings.get("max_dynamic_rounds") or 0)
        if stale >= STALE_DYNAMIC_ROUNDS:
            paths = sorted({p for r in requirements for p in output_paths(r)})
            detail = (
                f"{self.spec.task_id} asked {stale} times in a row for requirements that are complete on the submit "
                f"host ({', '.join(r.task_id for r in requirements[:5])}): the job does not see their outputs"
                + (f" ({', '.join(paths[:5])})" if paths else "")
                + ". "
                + outputs_hint(self.spec, paths)
            )
            return Failure(Reason.OUTPUTS_MISSING, detail, None)
        if limit and total > limit:
            detail = (
                f"{self.spec.task_id} yielded new requirements {total} times (max_dynamic_rounds={limit}); "
                "raise the setting max_dynamic_rounds if the task really needs more rounds"
            )
            return Failure(Reason.OUTPUTS_MISSING, detail, None)
        return None

    def _run_continues(self, tracked: TrackedJob, status: JobStatus) -> None:
        """The job script ended (a marker landed) but the scheduler still has the job: it was evicted and will
        run again (HTCondor's condor_hold stops a running job; condor_release starts it anew). Keep waiting."""
        spec = self.spec
        log.warning(
            "%s: %s job %s stopped (exit %s) but is %s, not over (evicted, e.g. by a hold); waiting for it",
            spec.task_id,
            spec.batch_system,
            self.job_id,
            tracked.ended_code,
            status.state.value,
        )
        for path in (Path(spec.marker_path), Path(spec.job_dir) / "exit_code", Path(spec.job_dir) / "cancelled"):
            path.unlink(missing_ok=True)
        self._track()

    def _failed(self, failure: Failure, started: float | None = None) -> None:
        spec = self.spec
        self.failures.append(failure)
        self.ended_at = self.ended_at or time.time()
        moved = set_aside_partial_outputs(spec, self.absent_outputs, output_paths(self.task))
        self.journal.update(
            spec.task_id,
            spec.attempt,
            state=(AttemptState.CANCELLED if failure.reason == Reason.CANCELLED else AttemptState.FAILED).value,
            reason=failure.reason.value,
            exit_code=failure.exit_code,
            started=started,
            ended=self.ended_at,  # the job's own end, not when the submitter noticed
        )
        if self.policy.should_retry(failure, spec.attempt):
            delay = self.policy.delay(spec.attempt)
            resources = self.policy.next_resources(spec, failure)
            self._next_spec = spec.with_attempt(spec.attempt + 1, resources=resources)
            self._resubmit_at = time.time() + delay
            changed = "" if resources == spec.resources else f" with {describe_change(spec.resources, resources)}"
            log.warning(
                "%s attempt %d failed (%s: %s); resubmitting in %.0f s as attempt %d%s. Logs: %s",
                spec.task_id,
                spec.attempt,
                failure.reason,
                failure.detail,
                delay,
                spec.attempt + 1,
                changed,
                spec.job_dir,
            )
            return
        tail = log_tail(spec.stderr_path) or log_tail(spec.stdout_path)
        history = "".join(f"\n  attempt {i + 1}: {f.reason} (exit {f.exit_code})" for i, f in enumerate(self.failures))
        message = (
            f"{spec.task_id} failed on {spec.batch_system} (job {self.job_id}, attempt {spec.attempt}): "
            f"{failure.reason}, exit code {failure.exit_code}\n{failure.detail}"
            f"{history if len(self.failures) > 1 else ''}\n"
            f"logs: {spec.stdout_path}, {spec.stderr_path}\n"
            + (f"partial outputs moved to {moved}\n" if moved else "")
            + f"last lines of the log:\n{tail}"
        )
        log.error("%s", message, extra={FAILURE_ATTR: True})
        self._report(FAILED, message)

    def _failed_to_submit(self, exc: ContainerBatchError) -> None:
        """A refused submission is an attempt too: journal row (no job id), submit.log, a message with its words."""
        spec = self.spec
        transient = bool(getattr(exc, "transient", False))
        failure = Failure(Reason.SUBMIT_ERROR, str(exc), None)
        self.failures.append(failure)
        self.ended_at = time.time()
        submit_log = record_submit_error(spec, exc)
        try:
            if self.journal.attempt(spec.task_id, spec.attempt) is None:  # refused before the intent was recorded
                self._journal_refusal(spec)
            state = AttemptState.FAILED.value
            self.journal.update(spec.task_id, spec.attempt, state=state, reason="submit_error", ended=self.ended_at)
        except Exception:  # the journal's trouble must not hide the scheduler's words
            log.debug("could not journal the refused submission of %s", spec.task_id, exc_info=True)
        self.run_ctx.processes[self.key] = self.record  # the display and the summary see the refused attempt
        if transient and self.policy.should_retry(failure, spec.attempt):
            delay = self.policy.delay(spec.attempt)
            self._next_spec = spec.with_attempt(spec.attempt + 1)
            self._resubmit_at = time.time() + delay
            said = str(getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or exc).strip()
            log.warning(
                "%s: %s refused the submission (attempt %d): %s; transient, trying again in %.3g s as attempt %d "
                "(details: %s)",
                spec.task_id,
                spec.batch_system,
                spec.attempt,
                said.splitlines()[0][:300] if said else "no message",
                delay,
                spec.attempt + 1,
                submit_log or spec.job_dir,
            )
            return
        why = f"after {spec.attempt} tries" if transient else "not retried: asking again would not help"
        message = (
            f"{spec.task_id} could not be submitted to {spec.batch_system} (attempt {spec.attempt}, {why}): "
            f"submit_error\n{exc}\nsubmit log: {submit_log or spec.job_dir}"
        )
        log.error("%s", message, extra={FAILURE_ATTR: True})
        self._report(FAILED, message)

    def _journal_refusal(self, spec: JobSpec) -> None:
        self._journal_intent(spec, ())

    def _journal_intent(self, spec: JobSpec, absent_outputs: tuple[str, ...]) -> None:
        """The attempt in the journal as ``submitting`` (no job id yet)."""
        self.journal.record_submit(
            run_id=spec.run_id,
            task_id=spec.task_id,
            task_family=spec.task_family,
            params=dict(spec.params),
            attempt=spec.attempt,
            scheduler=spec.batch_system,
            runtime=spec.runtime,
            image=spec.image,
            job_id=None,
            job_dir=spec.job_dir,
            marker_path=spec.marker_path,
            state=AttemptState.SUBMITTING.value,
            absent_outputs=absent_outputs,
            submit_key=spec.submit_key or None,
            submit_script=spec.script_path,
        )

    def canary_failed(self, message: str) -> None:
        """The canary of this task's image failed: the task was never submitted."""
        spec = self.spec
        self.journal.update(spec.task_id, spec.attempt, state=AttemptState.FAILED.value, reason="image_error")
        self._report(FAILED, f"containerbatch did not submit {spec.task_id}: {message}")

    def _resubmit(self) -> None:
        assert self._next_spec is not None
        self.spec, self._next_spec, self._resubmit_at = self._next_spec, None, None
        self.job_id = None
        try:
            with task_lock(self.spec):
                self.submit()
        except ContainerBatchError as exc:
            self._failed_to_submit(exc)
        except (OSError, sqlite3.Error) as exc:
            self._failed_to_submit(SubmitError(f"cannot prepare the job of {self.spec.task_id}: {exc}"))

    def _report(self, status: str, explanation: str, new_deps: list[tuple[Any, ...]] | None = None) -> None:
        if self.reported:
            return
        self.reported = True
        self.outcome = status
        self.explanation = explanation
        self.result_queue.put((self.task.task_id, status, explanation, [], list(new_deps or [])))


def _job_end_time(finished: float | None, marker_path: str) -> float:
    """When the job ended by its own account: the runner's ``finished``, else the done-marker's time."""
    if isinstance(finished, (int, float)) and not isinstance(finished, bool) and 0 < finished <= time.time() + 60:
        return float(finished)
    try:
        return os.lstat(marker_path).st_mtime
    except OSError:
        return time.time()


def found_after_silent_submit(scheduler: Any, spec: JobSpec, exc: SubmitError, script: str | None = None) -> str | None:
    """The job of a submit command that exited 0 but printed no id containerbatch understands: looked up by the
    submission key (``find_jobs``), so that it is followed instead of running on as an untracked orphan.
    None when the command failed, or no job carries the key (then it is the submit_error it looks like)."""
    if exc.exit_code != 0 or not spec.submit_key:
        return None
    try:
        found = scheduler.find_jobs({spec.submit_key: script or spec.script_path}) or {}
    except SchedulerError as lookup:
        log.warning("%s: could not look up the job of a submission without id: %s", spec.task_id, lookup)
        return None
    ids = found.get(spec.submit_key) or []
    if not ids:
        return None
    log.warning(
        "%s: %s exited 0 but printed no job id (%s); found the job by its submission key: %s",
        spec.task_id,
        spec.batch_system,
        (exc.stdout or exc.stderr or "no output").strip()[:200],
        ids[0],
    )
    return str(ids[0])


def record_submit_error(spec: JobSpec, exc: BaseException) -> str | None:
    """Write what the submit command said (command, exit code, stdout, stderr) to ``<job_dir>/submit.log``."""
    lines = [f"submission of {spec.task_id} attempt {spec.attempt} failed at {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    argv = getattr(exc, "argv", ())
    if argv:
        lines.append("command: " + " ".join(str(a) for a in argv))
    code = getattr(exc, "exit_code", None)
    if code is not None:
        lines.append(f"exit code: {code}")
    lines.append(f"transient: {bool(getattr(exc, 'transient', False))}")
    lines.append(f"message: {exc}")
    for name in ("stdout", "stderr"):
        text = str(getattr(exc, name, "") or "")
        lines.append(f"--- {name} ---" + ("\n" + text.rstrip() if text.strip() else " (empty)"))
    path = Path(spec.job_dir) / "submit.log"
    try:  # the job folder may hold links an earlier attempt's node left: never written through
        jobfiles.safe_folder(spec.job_dir, spec.log_dir)
        jobfiles.write_file(str(path), "\n".join(lines) + "\n")
    except OSError:
        return None
    return str(path)


#: a job the scheduler lists in these states after its script ended was evicted and runs again (HTCondor:
#: condor_hold stops a running job, held 5; a vacated job goes back to idle 1)
_NOT_OVER = (JobState.HELD, JobState.PENDING)


def describe_change(old: Resources, new: Resources) -> str:
    parts = []
    if old.memory_mb != new.memory_mb:
        parts.append(f"memory {old.memory_mb} MiB -> {new.memory_mb} MiB")
    if old.walltime_s != new.walltime_s:
        parts.append(f"walltime {old.walltime_s} s -> {new.walltime_s} s")
    return ", ".join(parts) or "changed resources"


#: lock files per state folder: tasks share one by the first byte of their id's hash (not a file per task)
_LOCK_BUCKETS = 256
_lock_guard = threading.Lock()
_local_locks: dict[str, threading.RLock] = {}
_lock_depth: dict[str, int] = {}


@contextmanager
def task_lock(spec: JobSpec) -> Iterator[None]:
    """One submitter at a time per task and state folder (two submitters never submit a task twice).

    The tasks of a state folder share 256 lock files (a file per task was 10,000 files made at 10,000 tasks);
    within this process the lock is reentrant (flock on a second descriptor of the same file would wait for
    the first forever)."""
    folder = Path(spec.state_dir) / "locks"
    path = str(folder / f"{hashlib.sha1(spec.task_id.encode()).digest()[0] % _LOCK_BUCKETS:02x}")
    with _lock_guard:
        local = _local_locks.setdefault(path, threading.RLock())
    with local:
        if _lock_depth.get(path):
            _lock_depth[path] += 1
            try:
                yield
            finally:
                _lock_depth[path] -= 1
            return
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _lock_depth[path] = 1
            try:
                yield
            finally:
                _lock_depth[path] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


output_paths = jobfiles.output_paths


_PARAMS: dict[type, dict[str, Any]] = {}


def _class_params(cls: type[luigi.Task]) -> dict[str, Any]:
    """``cls.get_params()`` as a dict, once per class (luigi walks ``dir(cls)`` on every call)."""
    params = _PARAMS.get(cls)
    if params is None:
        params = _PARAMS[cls] = dict(cls.get_params())
    return params


def node_task_id(cls: type[luigi.Task], str_params: dict[str, str], task_id: str | None = None) -> str:
    """The id the node computes from the string parameters (``FloatParameter(default=0)`` → ``0.0``).

    luigi's instance cache would hand back the submit side's own object (0 == 0.0), so the task is built
    past it, as the node builds it: parsed from strings, in a fresh interpreter.  With ``task_id`` (the
    submit side's), the build is skipped when every parameter's string survives the node's round trip
    (parse, normalize, serialize) unchanged: then the node's id is that one.
    """
    params = _class_params(cls)
    if task_id is not None and str_params.keys() <= params.keys():
        try:
            same = all(
                params[name].serialize(params[name].normalize(params[name].parse(value))) == value
                for name, value in str_params.items()
            )
        except Exception:  # noqa: BLE001 - a parameter class of the workflow's: build the task as the node does
            same = False
        if same:
            return task_id
    kwargs = {name: params[name].parse(value) for name, value in str_params.items() if name in params}
    return str(type.__call__(cls, **kwargs).task_id)


def missing_outputs(task: luigi.Task) -> tuple[list[str], str]:
    """luigi's own check of ``task``: ([], "") when complete, else (what does not exist, or complete()'s error).

    A task without outputs is done once it ran, as in luigi (its complete() says False forever).
    """
    try:
        if not flatten(task.output()) or task.complete():
            return [], ""
    except Exception as exc:
        return [], f"{type(exc).__name__}: {exc}"
    missing = []
    for target in flatten(task.output()):
        try:
            exists = target.exists()
        except Exception:
            exists = False
        if not exists:
            path = getattr(target, "path", None)
            local = isinstance(target, luigi.LocalTarget) and isinstance(path, str)
            missing.append(os.path.abspath(str(path)) if local else str(path or target))
    return missing or [f"(complete() of {task.task_family} returned False)"], ""


bound_folders = runtime_base.bound_folders  # (kept here for earlier callers)
outside_binds = runtime_base.outside_binds


def _stages_files(batch_system: str) -> bool:
    """Whether the scheduler can carry files to nodes without a shared filesystem (``transfer_files``)."""
    from containerbatch import plugins

    try:
        return bool(getattr(plugins.schedulers.get(batch_system), "STAGES_FILES", False))
    except ConfigError:
        return False


def outputs_hint(spec: JobSpec, missing: list[str]) -> str:
    """Why outputs may be missing on the submit host, most likely cause first."""
    outside = outside_binds(spec, missing)
    hints = []
    if outside:
        hints.append(
            f"{', '.join(outside[:3])} lie outside the folders bound into the container ({spec.runtime}), so what the "
            "task wrote there stayed in the container: write under the working directory or result_dir, or add the "
            "folder to the setting binds"
        )
    hints.append(
        'settings or paths that the submitting script sets only inside `if __name__ == "__main__":`, or derives '
        "from its command line or current folder, differ on the node (set them at module level or in settings.json)"
    )
    if not spec.staged and _stages_files(spec.batch_system):
        hints.append("without a shared filesystem on the nodes, set transfer_files")
    hints.append(f"see the job's stderr in {spec.job_dir}")
    return "Possible causes: " + "; ".join(hints) + "."


def set_aside_partial_outputs(spec: JobSpec, absent: Iterable[str], outputs: Iterable[str]) -> str | None:
    """Move outputs a failed attempt left behind into its job folder, so luigi does not take them as complete.

    Only the task's own outputs (``outputs``, computed on the submit side) that did not exist when the attempt
    was submitted (``absent``, the submit side's record) are moved: nothing the user made is deleted or
    overwritten, and nothing the node names is touched.
    """
    declared = set(outputs)
    target = Path(spec.job_dir) / "partial-outputs"
    moved = False
    for path in absent:
        if path in declared and os.path.lexists(path):
            dest = target / path.lstrip("/")
            try:
                # the job folder is the node's to write: never move anything through a link it left there
                folder = jobfiles.safe_folder(str(dest.parent), spec.log_dir)
                final = os.path.join(folder, dest.name)
                if os.path.lexists(final):
                    raise OSError(f"{final} exists already")
                shutil.move(path, final)
                moved = True
            except OSError as exc:
                log.error("%s: cannot set the partial output %s aside: %s", spec.task_id, path, exc)
    return str(target) if moved else None


def luigi_resources(resources: dict[str, Any]) -> dict[str, int]:
    """The entries of a task's ``resources`` that are luigi scheduler counters, not job requests."""
    return {
        k: v for k, v in resources.items() if k not in Resources.KEYS and isinstance(v, int) and not isinstance(v, bool)
    }


class BatchWorker(luigi.worker.Worker):
    """A luigi worker whose tasks run as batch jobs in containers."""

    def __init__(self, *args: Any, run: Run, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_ctx = run
        # notice finished jobs quickly: the poller lists markers every second
        self._config.wait_interval = min(self._config.wait_interval, 0.2)

    def _add_task(self, *args: Any, **kwargs: Any) -> Any:
        # `resources` is shared with luigi's own scheduler resources: hand luigi
        # only its integer counters, never memory/cpus/walltime/... of the job
        if isinstance(kwargs.get("resources"), dict):
            kwargs["resources"] = luigi_resources(kwargs["resources"])
        return super()._add_task(*args, **kwargs)

    def _create_task_process(self, task: luigi.Task) -> Any:
        return JobProcess(task, self.run_ctx, self._task_result_queue)


def _truthful(result: Any, tasks: list[luigi.Task]) -> bool:
    """Whether the run really did what was asked: luigi's True also covers "nothing could run" (a missing
    external input, a scheduling failure); then the reason is logged and the answer is False."""
    from luigi.execution_summary import LuigiStatusCode

    status = getattr(result, "status", None)
    if status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        return True
    if status is None:
        return bool(result)
    incomplete = [t.task_id for t in tasks if not _complete(t)]
    why = {
        LuigiStatusCode.MISSING_EXT: "an external input is missing (a task without run() whose output does not exist)",
        LuigiStatusCode.SCHEDULING_FAILED: "luigi could not schedule the tasks (see the messages above)",
        LuigiStatusCode.NOT_RUN: "some tasks were not run (their requirements could not be met)",
    }.get(status, "some tasks failed")
    log.error(
        "containerbatch: the run did not complete: %s; not complete: %s",
        why,
        ", ".join(incomplete) or "-",
        extra={FAILURE_ATTR: why == "some tasks failed"},  # the CLI's end summary explains failed tasks
    )
    return False


def _complete(task: luigi.Task) -> bool:
    try:
        return bool(task.complete())
    except Exception:  # noqa: BLE001 - only for the message
        return False


class _Factory(luigi.interface._WorkerSchedulerFactory):
    def __init__(self, run: Run) -> None:
        self.run = run

    def create_local_scheduler(self) -> Any:
        from containerbatch.luigisched import FastScheduler

        return FastScheduler(prune_on_get_work=True, record_task_history=False)

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> BatchWorker:
        return BatchWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant, run=self.run)


#: b2luigi's process() arguments that containerbatch.process takes too (they never reach luigi.build)
B2LUIGI_ACCEPTED = ("batch", "ignore_additional_command_line_args")
#: b2luigi's process() arguments that only containerbatch.b2luigi.process implements
B2LUIGI_ONLY = ("show_output", "test", "remove", "remove_only", "auto_confirm", "keep_tasks", "batch_runner")


def b2luigi_arguments(build_kwargs: dict[str, Any], tasks: list[luigi.Task]) -> bool:
    """Take b2luigi's process() arguments out of ``build_kwargs``; True when ``dry_run`` asked for a dry run
    (done here: the tasks that would run are printed, nothing is submitted)."""
    for name in B2LUIGI_ACCEPTED:
        build_kwargs.pop(name, None)
    refused = [n for n in B2LUIGI_ONLY if build_kwargs.pop(n, None)]
    if refused:
        raise ConfigError(
            f"process() argument(s) {', '.join(refused)} are b2luigi's: use `import containerbatch.b2luigi as "
            "b2luigi` and b2luigi.process(...), which does what b2luigi does with them"
        )
    if not build_kwargs.pop("dry_run", False):
        return False
    from containerbatch.run import walk

    pending = []
    for task in walk(tasks):
        try:
            complete = task.complete()
        except Exception as exc:
            print(f"{task.task_id}: complete() raised {exc!r}")
            continue
        if not complete:
            pending.append(task)
    for task in sorted(pending, key=lambda t: t.task_id):
        print(f"Would run {task}")
    print(f"In total {len(pending)}" if pending else "All tasks are finished!")
    return True


def check_grouping(tasks: Iterable[luigi.Task]) -> None:
    """b2luigi's parameter grouping (``Parameter(grouping=True)`` with ``max_grouping_size > 1``) is refused
    before anything is submitted, naming what to use instead."""
    from containerbatch.run import walk

    for task in walk(tasks):
        grouped = getattr(task, "has_grouped_params", None)
        size = getattr(task, "max_grouping_size", 1)
        if callable(grouped) and grouped() and isinstance(size, int) and size > 1:
            raise ConfigError(
                f"b2luigi's parameter grouping (max_grouping_size={size}) is not available with containerbatch: "
                "each task is its own job. Remove max_grouping_size (or set it to 1); to put several tasks into "
                f"one job set tasks_per_job = {size} instead, or max_array_size for one array submission.",
                setting="max_grouping_size",
                task=str(task.task_id),
            )


def prepare_b2luigi(run: Run, tasks: list[luigi.Task]) -> None:
    """What a run of b2luigi tasks needs, however it was started (``containerbatch run``, plain
    ``containerbatch.process`` or ``containerbatch.b2luigi.process``): grouping refused, the settings
    snapshot for the node."""
    from containerbatch.settings import b2luigi_snapshot

    check_grouping(tasks)
    run.node_context.setdefault("b2luigi_settings", b2luigi_snapshot())


def uses_b2luigi(tasks: list[luigi.Task]) -> bool:
    """Whether any task of the graph is a b2luigi task (b2luigi is never imported here for it)."""
    b2luigi = sys.modules.get("b2luigi")
    base = getattr(b2luigi, "Task", None)
    if not isinstance(base, type):
        return False
    from containerbatch.run import walk

    return any(isinstance(task, base) for task in walk(tasks))


def process(
    tasks: luigi.Task | Iterable[luigi.Task], workers: int = 1, *, run: Run | None = None, **build_kwargs: Any
) -> bool:
    """Run ``tasks`` and everything they need, each task as a batch job in its container.

    Parameters
    ----------
    tasks:
        A task or tasks, as for ``luigi.build``.
    workers:
        How many jobs may be in flight at once; costs no process per job.
    build_kwargs:
        b2luigi's ``batch`` and ``ignore_additional_command_line_args`` are accepted (every task is a batch
        job here); ``dry_run=True`` prints the tasks that would run and submits nothing; b2luigi's other
        arguments are refused with a pointer to ``containerbatch.b2luigi``.  The rest is passed on to
        ``luigi.build``. ``local_scheduler`` defaults to True unless a central scheduler is named
        (``scheduler_host``, ``scheduler_port`` or ``scheduler_url``): then several submitters can share one
        ``luigid``.

    Returns
    -------
    bool
        True if every task ended complete.

    Raises
    ------
    ConfigError
        Before anything is submitted, when a setting, image or scheduler is wrong.
    """
    task_list = [tasks] if isinstance(tasks, luigi.Task) else list(tasks)
    if b2luigi_arguments(build_kwargs, task_list):
        return True  # dry_run: nothing submitted
    run = run or Run()
    from containerbatch.runlog import log_path_of, run_logging, without_luigi_console_logging

    if uses_b2luigi(task_list):  # the node applies the b2luigi settings in force here
        prepare_b2luigi(run, task_list)
    with run_logging(log_path_of(run)):  # image conversions and reconciling are part of the run's log
        run.preflight(task_list)
    if not {"scheduler_host", "scheduler_port", "scheduler_url"} & build_kwargs.keys():
        build_kwargs.setdefault("local_scheduler", True)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    detailed = bool(build_kwargs.pop("detailed_summary", False))
    try:
        # luigi's log (and ours) into the run's log file, not on the console twice
        with run_logging(log_path_of(run)), without_luigi_console_logging(build_kwargs):
            result = luigi.build(
                task_list,
                worker_scheduler_factory=_Factory(run),
                workers=workers,
                detailed_summary=True,
                **build_kwargs,
            )
        ok = _truthful(result, task_list)
        return result if detailed else ok  # type: ignore[no-any-return]
    except KeyboardInterrupt:
        run.cancel_all()  # luigi may have stopped some already, through JobProcess.terminate
        print(
            f"containerbatch: interrupted; cancelled {run.cancelled_total} job(s) of run {run.run_id}",
            file=sys.stderr,
        )
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        run.close()
