"""The shared poller: one listing and one bulk query per round, whatever the number of jobs."""

import threading
from pathlib import Path

from containerbatch.errors import StatusQueryError
from containerbatch.poller import Poller
from containerbatch.schedulers.base import BaseScheduler
from containerbatch.states import JobState, JobStatus


class CountingScheduler(BaseScheduler):
    name = "counting"

    def __init__(self, states=None, fail=0):
        super().__init__({})
        self.calls: list[list[str]] = []
        self.states = states or {}
        self.fail = fail

    def query(self, job_ids):
        self.calls.append(list(job_ids))
        if self.fail > 0:
            self.fail -= 1
            raise StatusQueryError("slurm_load_jobs error: Socket timed out", transient=True)
        return {j: self.states.get(j, JobStatus(JobState.RUNNING, "RUNNING")) for j in job_ids}

    def submit(self, spec):
        raise AssertionError("the poller never submits")

    def kill(self, job_ids):
        raise AssertionError("the poller never cancels")


def _poller(**kw):
    kw.setdefault("retry_wait", (0.0, 0.0))
    kw.setdefault("background", False)
    return Poller(**kw)


def test_one_query_for_many_jobs(tmp_path: Path):
    sched = CountingScheduler()
    poller = _poller()
    for i in range(200):
        poller.track(f"t{i}", sched, str(i), str(tmp_path / "done" / f"t{i}"), interval=0.0, max_interval=0.0)
    poller.poll_once()
    assert len(sched.calls) == 1 and len(sched.calls[0]) == 200
    assert all(j.status.state == JobState.RUNNING for j in poller.jobs())


def test_markers_end_jobs_with_one_listing(tmp_path: Path):
    done = tmp_path / "done"
    done.mkdir()
    sched = CountingScheduler()
    poller = _poller()
    poller.stop()
    for i in range(50):
        poller.track(f"t{i}", sched, str(i), str(done / f"t{i}"), interval=1000.0, max_interval=1000.0)
    (done / "t7").write_text("0\n")
    (done / "t9").write_text("3\n")
    poller.poll_once()
    assert poller.listings == 1
    ended = {j.key: j.ended_code for j in poller.jobs() if j.finished}
    assert ended == {"t7": 0, "t9": 3}
    assert sched.calls == []  # nothing asked of the scheduler


def test_failing_status_is_unknown_not_failed(tmp_path: Path):
    sched = CountingScheduler(fail=10)
    poller = _poller(status_retries=3)
    poller.stop()
    poller.track("a", sched, "1", str(tmp_path / "a"), interval=0.0, max_interval=0.0)
    poller.poll_once()
    job = poller.get("a")
    assert job is not None and job.status.state == JobState.UNKNOWN and not job.finished
    assert len(sched.calls) == 3
    # the scheduler answers again: the job is back to RUNNING
    sched.fail = 0
    poller._clocks[id(sched)].next_at = 0
    poller.poll_once()
    assert poller.get("a").status.state == JobState.RUNNING


def test_retry_succeeds_within_one_round(tmp_path: Path):
    sched = CountingScheduler(fail=2)
    poller = _poller(status_retries=5)
    poller.stop()
    poller.track("a", sched, "1", str(tmp_path / "a"), interval=0.0, max_interval=0.0)
    poller.poll_once()
    assert poller.get("a").status.state == JobState.RUNNING and len(sched.calls) == 3


def test_gone_without_marker_becomes_lost(tmp_path: Path):
    class Empty(CountingScheduler):
        def query(self, job_ids):
            self.calls.append(list(job_ids))
            return {}

    sched = Empty()
    poller = _poller(lost_after=0.0)
    poller.stop()
    seen = []
    poller.on_change = lambda job: seen.append(job.key)
    poller.track("a", sched, "1", str(tmp_path / "a"), interval=0.0, max_interval=0.0)
    poller.poll_once()
    assert poller.get("a").status.state == JobState.LOST and seen == ["a"]


def test_interval_backs_off_while_nothing_changes(tmp_path: Path):
    sched = CountingScheduler()
    poller = _poller()
    poller.stop()
    poller.track("a", sched, "1", str(tmp_path / "a"), interval=2.0, max_interval=10.0)
    clock = poller._clocks[id(sched)]
    intervals = []
    for _ in range(6):
        clock.next_at = 0
        poller.poll_once()
        intervals.append(clock.interval)
    assert intervals[0] == 2.0  # first answer is a change (PENDING → RUNNING)
    assert intervals[1:] == sorted(intervals[1:]) and intervals[-1] == 10.0


def test_background_thread_is_one(tmp_path: Path):
    sched = CountingScheduler()
    poller = _poller(marker_interval=0.05, background=True)
    before = threading.active_count()
    for i in range(100):
        poller.track(f"t{i}", sched, str(i), str(tmp_path / f"t{i}"), interval=0.05, max_interval=0.05)
    assert threading.active_count() == before + 1
    poller.stop()
