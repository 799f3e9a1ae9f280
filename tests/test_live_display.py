"""The live progress display: snapshots of a Run, rendering, plain event lines, and a real run inside tmux.

``containerbatch run`` gets the display once the lead hooks ``ProgressDisplay`` into cli/run.py; until then the
tmux test drives the same code path with a small script (a real Run, real local jobs, ``process(..., run=run)``
inside ``with ProgressDisplay(run)``), exactly what the hook does.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from containerbatch.cli.display import PROGRESS_STATES, ProgressDisplay, fmt_elapsed
from containerbatch.states import JobState, JobStatus
from tests.conftest import IN_CI, ROOT

# -- a fake Run: just what the display reads ------------------------------------------


class FakeProc:
    def __init__(
        self,
        task_id: str,
        attempt: int = 1,
        job_id: str | None = "100",
        result: Path | None = None,
        scheduler: str = "slurm",
    ) -> None:
        self.spec = SimpleNamespace(
            task_id=task_id,
            task_family=task_id.split("_")[0],
            attempt=attempt,
            batch_system=scheduler,
            image="img.sif",
            result_path=str(result or "/nonexistent/result.json"),
        )
        self.job_id = job_id
        self.reported = False
        self.outcome: str | None = None

    @property
    def key(self) -> str:
        return f"{self.spec.task_id}#{self.spec.attempt}"


class FakePoller:
    def __init__(self) -> None:
        self.tracked: dict[str, Any] = {}

    def set(self, key: str, state: JobState, native: str) -> None:
        self.tracked[key] = SimpleNamespace(status=JobStatus(state, native), finished=state.is_final)

    def get(self, key: str) -> Any:
        return self.tracked.get(key)


class FakeRun:
    def __init__(self) -> None:
        self.run_id = "20990101-000000-abcdef"
        self.processes: dict[str, FakeProc] = {}
        self.poller = FakePoller()
        self.planned: list[Any] = []

    def add(self, proc: FakeProc, state: JobState | None = None, native: str = "") -> FakeProc:
        self.processes[proc.key] = proc
        if state is not None:
            self.poller.set(proc.key, state, native)
        return proc


def console(width: int = 200) -> Console:
    return Console(record=True, width=width, height=40, force_terminal=False, color_system=None)


@pytest.fixture
def fake_run(tmp_path: Path) -> FakeRun:
    run = FakeRun()
    run.add(FakeProc("A_1", job_id="11"), JobState.PENDING, "submitted")  # no answer from the scheduler yet
    run.add(FakeProc("B_1", job_id="12"), JobState.PENDING, "PD")
    run.add(FakeProc("C_1", job_id="13"), JobState.RUNNING, "R")
    run.add(FakeProc("D_1", job_id="14"), JobState.UNKNOWN, "")
    failed_first = run.add(FakeProc("E_1", job_id="15"))
    failed_first.reported, failed_first.outcome = True, "FAILED"
    run.add(FakeProc("E_1", attempt=2, job_id="16"), JobState.RUNNING, "R")  # the retry of E_1
    done = run.add(FakeProc("F_1", job_id="17"))
    done.reported, done.outcome = True, "DONE"
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"status": "failure"}))
    no_outcome = run.add(FakeProc("G_1", job_id="18", result=result))  # an older worker: no .outcome
    no_outcome.reported = True
    no_outcome.outcome = None
    run.planned = [SimpleNamespace(task_id=t) for t in ("A_1", "W_1", "W_2")]  # W_* not submitted yet
    return run


def test_counts_per_state(fake_run: FakeRun) -> None:
    snap = ProgressDisplay(fake_run, console=console()).snapshot()
    assert snap.counts == {
        "waiting": 2,
        "submitted": 1,
        "queued": 1,
        "running": 1,
        "retrying": 1,
        "done": 1,
        "failed": 1,
        "unknown": 1,
    }
    assert list(snap.counts) == list(PROGRESS_STATES)


def test_one_process_for_all_attempts_counts_once() -> None:
    run = FakeRun()
    proc = FakeProc("R_1", job_id="21")
    run.add(proc, JobState.RUNNING, "R")
    proc.resubmit_at = time.time() + 5  # attempt 1 failed; attempt 2 not yet submitted
    display = ProgressDisplay(run, console=console())
    assert display.snapshot().counts["retrying"] == 1
    proc.resubmit_at = None
    proc.spec.attempt, proc.job_id = 2, "22"  # the same object now stands for attempt 2, under a second key
    run.processes[proc.key] = proc
    run.poller.set(proc.key, JobState.PENDING, "PD")
    snap = display.snapshot()
    assert len(snap.views) == 1 and snap.views[0].detail == "queued (retry)" and snap.counts["retrying"] == 1
    assert sum(snap.counts.values()) == 1


def test_render_shows_counts_and_active_jobs(fake_run: FakeRun) -> None:
    display = ProgressDisplay(fake_run, console=console())
    cons = display.console
    cons.print(display.render(display.snapshot()))
    text = cons.export_text()
    assert "run 20990101-000000-abcdef" in text
    assert "waiting 2  submitted 1  queued 1  running 1  retrying 1  done 1  failed 1  unknown 1" in text
    assert "2/9 ended" in text.splitlines()[1]  # the progress bar's line
    for column in ("task", "attempt", "state", "scheduler", "job id", "image", "elapsed"):
        assert column in text.splitlines()[2]
    assert "reason" not in text.splitlines()[2]  # no failure carries a reason here: no empty column
    c_line = next(ln for ln in text.splitlines() if ln.startswith("C_1"))
    assert "running" in c_line and "slurm" in c_line and "13" in c_line and "img.sif" in c_line
    e_line = next(ln for ln in text.splitlines() if ln.startswith("E_1") and " 2 " in ln)
    assert "running (retry)" in e_line
    assert any(ln.startswith("F_1") and "done" in ln for ln in text.splitlines())  # recently ended


def test_failed_first_ended_jobs_leave_the_table_and_rows_are_capped(fake_run: FakeRun) -> None:
    display = ProgressDisplay(fake_run, console=console(), recent=5.0, max_rows=3)
    first = display.snapshot(now=1000.0)
    rows, hidden = display.rows(first)
    assert len(rows) == 3 and hidden == 5
    assert [v.state for v in rows] == ["failed", "failed", "retrying"]  # what needs attention comes first
    later = display.snapshot(now=1010.0)
    display.max_rows = 50
    rows, hidden = display.rows(later)
    assert hidden == 0 and {v.task_id for v in rows} == {"A_1", "B_1", "C_1", "D_1", "E_1", "G_1"}
    assert "F_1" not in {v.task_id for v in rows}  # done, and longer ago than `recent`


def test_events_mode_prints_changes_only(fake_run: FakeRun) -> None:
    display = ProgressDisplay(fake_run, console=console())
    first = display.events(display.snapshot())
    assert len(first) == len(fake_run.processes)
    assert any("submitted" in ln and "A_1 attempt 1 (slurm job 11)" in ln for ln in first)
    assert display.events(display.snapshot()) == []
    fake_run.poller.set("A_1#1", JobState.RUNNING, "R")
    again = display.events(display.snapshot())
    assert len(again) == 1 and "running" in again[0] and "A_1" in again[0]


def test_context_manager_plain_mode_prints_lines_and_summary(fake_run: FakeRun) -> None:
    cons = console()
    with ProgressDisplay(fake_run, console=cons, refresh=0.05) as display:
        assert not display.live_mode
        time.sleep(0.2)
        fake_run.poller.set("B_1#1", JobState.RUNNING, "R")
        time.sleep(0.2)
    text = cons.export_text()
    assert text.count("B_1 attempt 1") == 2  # queued, then running
    last = next(ln for ln in text.splitlines() if ln.startswith("run 20990101-000000-abcdef: "))
    # at the end, tasks nobody ran are "not run", never "waiting"
    assert "waiting" not in last and last.endswith("not run 2 in " + last.rsplit(" in ", 1)[1])
    assert "FAILED E_1 (attempt 1, slurm job 15)" in text
    assert "containerbatch status 20990101-000000-abcdef" in text


def failure(reason: str, detail: str, code: int | None) -> Any:
    from containerbatch.resubmit import Failure, Reason

    return Failure(Reason(reason), detail, code)


def test_reason_column_and_elapsed_stop_when_the_job_ended(tmp_path: Path) -> None:
    run = FakeRun()
    proc = run.add(FakeProc("Fit_1", job_id="31"))
    proc.submitted_at, proc.ended_at = 1000.0, 1012.5  # the job's own end
    proc.reported, proc.outcome = True, "FAILED"
    proc.failures = [failure("task_error", "the task raised: ValueError('bad sample')\nmore", 1)]
    display = ProgressDisplay(run, console=console())
    for now in (1020.0, 5000.0):  # however late the display looks, the job took 12.5 s
        view = display.snapshot(now=now).views[0]
        assert view.elapsed == pytest.approx(12.5)
        assert view.reason == "task_error: the task raised: ValueError('bad sample')"
    cons = display.console
    cons.print(display.render(display.snapshot(now=1030.0)))
    row = next(ln for ln in cons.export_text().splitlines() if ln.startswith("Fit_1"))
    assert "failed" in row and "12.5s" in row and "ValueError('bad sample')" in row


def test_a_thousand_tasks_fit_the_terminal(tmp_path: Path) -> None:
    run = FakeRun()
    states = [JobState.RUNNING] * 40 + [JobState.PENDING] * 200
    for i in range(1000):
        family = "Fit" if i < 700 else "Merge"
        proc = FakeProc(f"{family}_{i}", job_id=str(i))
        proc.spec.task_family = family
        if i < len(states):
            run.add(proc, states[i], "R" if states[i] == JobState.RUNNING else "PD")
        elif i < 900:
            run.add(proc)
            proc.reported, proc.outcome, proc.ended_at = True, "DONE", time.time()
        elif i < 903:
            run.add(proc)
            proc.reported, proc.outcome, proc.ended_at = True, "FAILED", time.time()
            proc.failures = [failure("out_of_memory", "TERM_MEMLIMIT: job killed", 137)]
    run.planned = [SimpleNamespace(task_id=f"Wait_{i}", task_family="Wait") for i in range(500)]
    cons = Console(record=True, width=160, height=30, force_terminal=False, color_system=None)
    display = ProgressDisplay(run, console=cons)
    snap = display.snapshot()
    assert snap.total == 1403  # 903 submitted + 500 waiting
    cons.print(display.render(snap))
    lines = cons.export_text().rstrip("\n").splitlines()
    assert len(lines) <= 30, "\n".join(lines)
    assert lines[0].startswith("containerbatch run") and "running 40" in lines[0] and "failed 3" in lines[0]
    assert "663/1403 ended" in lines[1]  # 660 done + 3 failed
    family = {ln.split()[0]: ln for ln in lines if ln.split() and ln.split()[0] in ("Fit", "Merge", "Wait")}
    assert set(family) == {"Fit", "Merge", "Wait"} and family["Wait"].split()[1] == "500"
    failed = [ln for ln in lines if " failed " in ln and "TERM_MEMLIMIT" in ln]
    assert len(failed) == 3  # what went wrong is listed before what runs
    assert "more (`containerbatch status` lists every attempt)" in lines[-1]


def test_plain_mode_of_a_large_run_prints_summary_lines_and_failures() -> None:
    run = FakeRun()
    for i in range(200):
        run.add(FakeProc(f"T_{i}", job_id=str(i)), JobState.RUNNING, "R")
    cons = console()
    display = ProgressDisplay(run, console=cons, live=False, interval=60.0, threshold=50)
    display.tick()
    first = cons.export_text(clear=False).splitlines()
    assert len(first) == 1 and "progress  0/200 ended: running 200" in first[0]
    bad = run.processes["T_7#1"]
    bad.reported, bad.outcome, bad.ended_at = True, "FAILED", time.time()
    bad.failures = [failure("task_error", "the task raised: KeyError('x')", 1)]
    display.tick()  # within the interval: only the failure
    second = cons.export_text(clear=False).splitlines()[1:]
    assert len(second) == 1 and "failed    T_7 attempt 1" in second[0] and "KeyError('x')" in second[0]
    display.tick(final=True)
    assert "progress  1/200 ended: running 199, failed 1" in cons.export_text(clear=False).splitlines()[-1]


def test_final_summary_explains_each_failure(tmp_path: Path) -> None:
    from containerbatch.cli.display import final_summary

    run = FakeRun()
    proc = run.add(FakeProc("Fit_1", job_id="41"))
    proc.reported, proc.outcome, proc.ended_at = True, "FAILED", time.time()
    (tmp_path / "stderr").write_text("".join(f"line {i}\n" for i in range(30)) + "ValueError: bad\n")
    proc.spec.stderr_path, proc.spec.stdout_path, proc.spec.job_dir = (
        str(tmp_path / "stderr"),
        str(tmp_path / "stdout"),
        str(tmp_path),
    )
    proc.failures = [failure("task_error", "the task raised: ValueError('bad')", 1)]
    words = "sbatch: error: Invalid partition name specified"
    for n in (2, 3):
        refused = run.add(FakeProc(f"Fit_{n}", job_id=None))
        refused.reported, refused.outcome = True, "FAILED"
        refused.spec.job_dir = str(tmp_path / f"r{n}")
        refused.failures = [failure("submit_error", f"sbatch did not submit the job\n  stderr: {words}", None)]
    cons = console()
    final_summary(run, cons, log_path="/x/run.log")
    text = cons.export_text()
    assert "FAILED Fit_1 (attempt 1, slurm job 41): task_error, exit code 1" in text
    assert "the task raised: ValueError('bad')" in text
    assert f"log: {tmp_path / 'stderr'}" in text
    tail = [ln for ln in text.splitlines() if ln.startswith("  | ")]
    assert tail[-1] == "  | ValueError: bad" and len(tail) == 10
    assert text.count(words) == 1 and "refused with the same words for 1 more task(s): " in text
    assert "never got a job id" in text
    assert "containerbatch logs Fit_1 --stderr" in text and "run log (luigi and containerbatch): /x/run.log" in text


def test_fmt_elapsed() -> None:
    assert [fmt_elapsed(s) for s in (None, 3.21, 75, 3725)] == ["", "3.2s", "1m15s", "1h02m"]


# -- a real run in a terminal ------------------------------------------------------------

FLOW = """
import time

import luigi


class Nap(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.n}.txt")

    def run(self):
        time.sleep(2 + self.n)
        with self.output().open("w") as handle:
            handle.write("ok")


class All(luigi.WrapperTask):
    def requires(self):
        return [Nap(n=i) for i in range(3)]
"""


def tmux_ready() -> None:
    if not shutil.which("tmux"):
        if IN_CI:
            pytest.fail("tmux is not installed", pytrace=False)
        pytest.skip("tmux is not installed")


def test_live_display_in_tmux(tmp_path: Path) -> None:
    tmux_ready()
    (tmp_path / "flow.py").write_text(FLOW)
    socket = f"cb-live-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERBATCH_", "TMUX"))}
    env["PYTHONPATH"] = str(ROOT)
    command = (
        f"cd {tmp_path} && {sys.executable} -m containerbatch run flow.py All --runtime host --workers 3;"
        " echo CB-EXIT=$?; sleep 120"
    )
    subprocess.run([*tmux, "new-session", "-d", "-s", "cb", "-x", "220", "-y", "50", command], env=env, check=True)

    def pane() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "cb", "-S", "-200"], capture_output=True, text=True, env=env
        ).stdout

    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = pane()
            if not seen or text != seen[-1]:
                seen.append(text)
            if "CB-EXIT=" in text:
                break
            time.sleep(0.2)
        final = seen[-1]
        assert "CB-EXIT=0" in final, final
        # while the jobs ran, the table showed them running, with their elapsed time counting up
        running = [s for s in seen if "running 3" in s and "containerbatch run" in s]
        assert running, seen[-1]
        nap_rows = [ln for ln in running[-1].splitlines() if ln.startswith("Nap_")]
        assert len(nap_rows) == 3 and all("running" in ln and "local" in ln for ln in nap_rows)
        elapsed = [next(ln for ln in s.splitlines() if ln.startswith("Nap_2")).split()[-1] for s in running]
        assert len(set(elapsed)) > 1  # the display updated while running
        # then the counts moved on: everything done (3 naps and the wrapper All), and the summary line printed
        assert "done 4" in final and ": done 4" in final
        assert final.count("containerbatch run ") == 1  # one live display, redrawn in place
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


TINY = """
import luigi


class Tiny(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/tiny_{self.n}.txt")

    def run(self):
        if self.n % 100 == 3:
            raise RuntimeError(f"tiny {self.n} broke")
        with self.output().open("w") as handle:
            handle.write("ok")


class Many(luigi.WrapperTask):
    def requires(self):
        return [Tiny(n=i) for i in range(1000)]
"""


def test_a_thousand_tasks_stay_readable_in_tmux(tmp_path: Path) -> None:
    """1,000 trivial local tasks: the screen holds one bounded display (a row per family, failures first).

    Watched until the first failure and some tasks done ("done 2…": 20 or more), then stopped with Ctrl-C.
    """
    tmux_ready()
    (tmp_path / "tiny.py").write_text(TINY)
    socket = f"cb-many-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERBATCH_", "TMUX"))}
    env["PYTHONPATH"] = str(ROOT)
    command = (
        f"cd {tmp_path} && {sys.executable} -m containerbatch run tiny.py Many --runtime host --workers 12;"
        " echo CB-EXIT=$?; sleep 120"
    )
    subprocess.run([*tmux, "new-session", "-d", "-s", "cb", "-x", "150", "-y", "40", command], env=env, check=True)

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "cb"], capture_output=True, text=True, env=env).stdout

    try:
        deadline = time.monotonic() + 150
        screen = ""
        while time.monotonic() < deadline:
            text = pane()
            time.sleep(0.15)
            if text != pane():  # caught while Live redrew the screen: look again
                continue
            if text.startswith("containerbatch run") and re.search(r"failed [1-9]", text) and "done 2" in text:
                screen = text
                break
            time.sleep(0.5)
        assert screen, pane()
        lines = screen.rstrip("\n").splitlines()
        assert len(lines) <= 40 and screen.count("containerbatch run") == 1
        counts = dict(re.findall(r"(waiting|submitted|queued|running|retrying|done|failed|unknown) (\d+)", lines[0]))
        assert sum(int(v) for v in counts.values()) == 1001, lines[0]  # 1000 tiny tasks and the wrapper
        assert re.search(r"\d+/1001 ended\s+elapsed \S+\s+ETA \S+", lines[1]), lines[1]
        tiny = next(ln for ln in lines if ln.startswith("Tiny "))
        assert tiny.split()[1] == "1000"  # one row for the family, not a thousand
        failed = next(ln for ln in lines if ln.startswith("Tiny_") and " failed " in ln)
        assert re.search(r"task_error: the task raised: RuntimeError\('tiny \d*3 broke'\)", failed), failed
        # what went wrong is listed above what runs (and above what ended), whatever runs at that moment
        others = [i for i, ln in enumerate(lines) if ln.startswith("Tiny_") and re.search(r" (running|done) ", ln)]
        assert others and lines.index(failed) < min(others), screen
        assert "more (`containerbatch status` lists every attempt)" in lines[-1]
        subprocess.run([*tmux, "send-keys", "-t", "cb", "C-c"], env=env, check=True)
        deadline = time.monotonic() + 60
        while "CB-EXIT=" not in (text := pane()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "CB-EXIT=130" in text, text
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_long_image_operations_show_progress() -> None:
    """An image conversion (runlog.activity) is a line when it starts and ends, and a spinner row while it runs."""
    from containerbatch.runlog import ACTIVITY_LISTENERS, activity

    run = FakeRun()
    cons = console()
    log = logging.getLogger("containerbatch.images")
    with ProgressDisplay(run, console=cons, refresh=60, live=False):
        with activity(log, "converting docker://alpine to a SIF"):
            time.sleep(0.05)
    text = cons.export_text()
    assert re.search(r"\d\d:\d\d:\d\d converting docker://alpine to a SIF \.\.\.", text)
    assert re.search(r"converting docker://alpine to a SIF: done in [\d.]+s", text)
    assert not ACTIVITY_LISTENERS  # the display took its listener away
    display = ProgressDisplay(run, console=console())
    display.on_activity("start", "k", "converting docker://big to a SIF", time.time() - 65)
    cons = display.console
    cons.print(display.render(display.snapshot()))
    assert "converting docker://big to a SIF (1m05s so far)" in cons.export_text()
    display.on_activity("end", "k", "converting docker://big to a SIF", time.time() - 66)
    assert display.activities == {}
