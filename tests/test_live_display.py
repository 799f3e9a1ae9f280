"""The live progress display: snapshots of a Run, rendering, plain event lines, and a real run inside tmux.

``containerbatch run`` gets the display once the lead hooks ``ProgressDisplay`` into cli/run.py; until then the
tmux test drives the same code path with a small script (a real Run, real local jobs, ``process(..., run=run)``
inside ``with ProgressDisplay(run)``), exactly what the hook does.
"""

from __future__ import annotations

import json
import os
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
    proc._resubmit_at = time.time() + 5  # attempt 1 failed; attempt 2 not yet submitted
    display = ProgressDisplay(run, console=console())
    assert display.snapshot().counts["retrying"] == 1
    proc._resubmit_at = None
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
    for column in ("task", "attempt", "state", "scheduler", "job id", "image", "elapsed"):
        assert column in text.splitlines()[1]
    c_line = next(ln for ln in text.splitlines() if ln.startswith("C_1"))
    assert "running" in c_line and "slurm" in c_line and "13" in c_line and "img.sif" in c_line
    e_line = next(ln for ln in text.splitlines() if ln.startswith("E_1") and " 2 " in ln)
    assert "running (retry)" in e_line
    assert any(ln.startswith("F_1") and "done" in ln for ln in text.splitlines())  # recently ended


def test_ended_jobs_leave_the_table_and_rows_are_capped(fake_run: FakeRun) -> None:
    display = ProgressDisplay(fake_run, console=console(), recent=5.0, max_rows=3)
    first = display.snapshot(now=1000.0)
    rows, hidden = display.rows(first)
    assert len(rows) == 3 and hidden == 5 and all(v.ended_at is None for v in rows)
    later = display.snapshot(now=1010.0)
    display.max_rows = 50
    rows, hidden = display.rows(later)
    assert hidden == 0 and {v.task_id for v in rows} == {"A_1", "B_1", "C_1", "D_1", "E_1"}
    assert all(v.ended_at is None for v in rows)


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
    assert text.strip().splitlines()[-1].startswith("run 20990101-000000-abcdef: waiting 2")


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
