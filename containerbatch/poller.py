"""One shared poller per run: job states without a call or thread per task.

* Completion comes from the jobs' own files: every job script drops a marker
  into its run's ``done`` folder; one listing of that folder per
  ``marker_interval`` (whatever the number of jobs) tells which jobs ended.
* What files cannot tell (queued vs running, a job that died silently) comes
  from ONE bulk status query per scheduler per adaptive interval, backing off
  while nothing changes.  A failing query is retried with tenacity; meanwhile,
  and after the retries are used up, the jobs are UNKNOWN, never FAILED.
* Jobs gone from queue and history without a marker become LOST after
  ``lost_after`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from containerbatch.errors import SchedulerError
from containerbatch.jobfiles import read_small
from containerbatch.schedulers.base import Scheduler
from containerbatch.states import JobState, JobStatus

log = logging.getLogger(__name__)


@dataclass
class TrackedJob:
    """A job the poller watches. Mutated only under the poller's lock."""

    key: str
    scheduler: Scheduler
    job_id: str
    marker_path: str
    status: JobStatus = field(default_factory=lambda: JobStatus(JobState.PENDING, "submitted"))
    ended_code: int | None = None  # from the marker
    missing_since: float | None = None
    lost_after: float | None = None  # this job's setting; None: the poller's
    last_change: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.ended_code is not None or self.status.state.is_final


@dataclass
class _SchedulerClock:
    base: float
    maximum: float
    interval: float
    next_at: float = 0.0
    failures: int = 0


class Poller:
    """Tracks every job of a run from one background thread.

    Parameters
    ----------
    marker_interval:
        Seconds between listings of the marker folders.
    lost_after:
        Seconds without queue entry, history or marker before a job is LOST.
    status_retries:
        Tries of a failing status query before the jobs are reported UNKNOWN.
    """

    def __init__(
        self,
        marker_interval: float = 1.0,
        lost_after: float = 60.0,
        status_retries: int = 5,
        retry_wait: tuple[float, float] = (1.0, 30.0),
        background: bool = True,
    ) -> None:
        self.marker_interval = marker_interval
        self.lost_after = lost_after
        self.status_retries = status_retries
        self.retry_wait = retry_wait
        self.background = background  # False: rounds are driven by calling poll_once() (tests)
        self._jobs: dict[str, TrackedJob] = {}
        self._clocks: dict[int, _SchedulerClock] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listings = 0  # marker-folder listings, for benchmarks and tests
        self.queries = 0  # bulk status queries
        self.on_change: Callable[[TrackedJob], None] | None = None

    # -- registration ----------------------------------------------------
    def track(
        self,
        key: str,
        scheduler: Scheduler,
        job_id: str,
        marker_path: str,
        interval: float,
        max_interval: float,
        lost_after: float | None = None,
    ) -> None:
        with self._lock:
            self._jobs[key] = TrackedJob(key, scheduler, job_id, marker_path, lost_after=lost_after)
            clock = self._clocks.get(id(scheduler))
            if clock is None:
                clock = self._clocks[id(scheduler)] = _SchedulerClock(
                    interval, max_interval, interval, time.monotonic() + interval
                )
            else:  # a new job: come back to the base interval
                clock.interval = clock.base
        self._ensure_thread()

    def forget(self, key: str) -> None:
        with self._lock:
            self._jobs.pop(key, None)

    def get(self, key: str) -> TrackedJob | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self) -> list[TrackedJob]:
        with self._lock:
            return list(self._jobs.values())

    # -- thread ------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if not self.background:
            return
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="containerbatch-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything; report loudly
                log.exception("containerbatch poller: unexpected error; polling goes on")
            self._wake.wait(self.marker_interval)
            self._wake.clear()

    # -- one round -----------------------------------------------------------
    def poll_once(self) -> None:
        self._check_markers()
        now = time.monotonic()
        due: dict[int, tuple[Scheduler, list[TrackedJob]]] = {}
        with self._lock:
            for job in self._jobs.values():
                if job.finished:
                    continue
                clock = self._clocks[id(job.scheduler)]
                if now >= clock.next_at:
                    due.setdefault(id(job.scheduler), (job.scheduler, []))[1].append(job)
        for sched_id, (scheduler, jobs) in due.items():
            self._query(scheduler, jobs, self._clocks[sched_id])

    def _check_markers(self) -> None:
        with self._lock:
            waiting = [j for j in self._jobs.values() if j.ended_code is None]
        folders: dict[str, list[TrackedJob]] = {}
        for job in waiting:
            folders.setdefault(os.path.dirname(job.marker_path), []).append(job)
        for folder, jobs in folders.items():
            try:
                names = set(os.listdir(folder))
            except FileNotFoundError:
                continue
            self.listings += 1
            for job in jobs:
                name = os.path.basename(job.marker_path)
                if name in names:
                    self._marker_found(job)

    def _marker_found(self, job: TrackedJob) -> None:
        # a node may put anything in the marker's place: never block on a FIFO, never follow a link
        text = read_small(job.marker_path, 64)
        try:
            code = int((text or "").strip() or "-1")
        except ValueError:
            code = -1
        if not -1 <= code <= 65535:  # not an exit code
            code = -1
        with self._lock:
            job.ended_code = code
            job.last_change = time.time()
        self._changed(job)

    def _changed(self, job: TrackedJob) -> None:
        if self.on_change is not None:
            try:
                self.on_change(job)
            except Exception:
                log.exception("containerbatch poller: change callback failed")

    def _retrying(self, scheduler: Scheduler, jobs: list[TrackedJob]) -> Retrying:
        def mark_unknown(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s status query failed (try %d of %d), retrying in %.0f s: %s",
                scheduler.name,
                state.attempt_number,
                self.status_retries,
                state.next_action.sleep if state.next_action else 0,
                exc,
            )
            self._set_unknown(jobs, str(exc))

        low, high = self.retry_wait
        return Retrying(
            stop=stop_after_attempt(max(1, self.status_retries)),
            wait=wait_exponential(multiplier=low, min=low, max=high),
            retry=retry_if_exception(lambda e: isinstance(e, SchedulerError) and e.transient),
            before_sleep=mark_unknown,
            sleep=self._sleep,  # stop() interrupts a back-off
            reraise=True,
        )

    def _sleep(self, seconds: float) -> None:
        """Back off between status retries, still listing the marker folders meanwhile."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(self.marker_interval, remaining))
            self._check_markers()

    def _set_unknown(self, jobs: list[TrackedJob], why: str) -> None:
        with self._lock:
            for job in jobs:
                if not job.finished:
                    job.status = JobStatus(JobState.UNKNOWN, "query failed", None, why[:500])

    def _query(self, scheduler: Scheduler, jobs: list[TrackedJob], clock: _SchedulerClock) -> None:
        ids = list(dict.fromkeys(j.job_id for j in jobs))  # a job may run several tasks
        try:
            states = self._retrying(scheduler, jobs)(scheduler.query, ids)
            self.queries += 1
        except Exception as exc:  # noqa: BLE001 - SchedulerError, or a plugin that raised anything: back off
            log.error(
                "%s status query keeps failing; %d job(s) are UNKNOWN until it answers: %s",
                scheduler.name,
                len(jobs),
                exc,
            )
            self._set_unknown(jobs, str(exc))
            clock.failures += 1
            clock.next_at = time.monotonic() + min(clock.maximum, clock.base * 2**clock.failures)
            return
        clock.failures = 0
        changed = False
        now = time.time()
        for job in jobs:
            status = states.get(job.job_id)
            ended = False
            with self._lock:
                if status is None:
                    if job.missing_since is None:
                        job.missing_since = now
                    lost_after = self.lost_after if job.lost_after is None else job.lost_after
                    if now - job.missing_since >= lost_after and job.ended_code is None:
                        status = JobStatus(
                            JobState.LOST,
                            "gone",
                            None,
                            "the job left the scheduler's queue and history without a result",
                        )
                else:
                    job.missing_since = None
                if status is not None and status != job.status:
                    job.status = status
                    job.last_change = now
                    changed = True
                    ended = status.state.is_final
            if ended:
                self._changed(job)
        if changed:
            clock.interval = clock.base
        else:
            clock.interval = min(clock.maximum, clock.interval * 1.5)
        clock.next_at = time.monotonic() + clock.interval
