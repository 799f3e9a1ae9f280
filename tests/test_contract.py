"""The contract: one behaviour, every scheduler (local; LSF and HTCondor through the fakes; live Slurm).

Each test runs the ``containerbatch`` CLI in a subprocess and checks what a user sees (results, exit
code, messages), the journal, and from the outside (the fakes' calls.log) how the scheduler was used.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, FAKES_BIN, ROOT, run_cli

WORKFLOW = str(ROOT / "examples" / "workflow.py")
SCHEDULERS = ["local", "lsf", "htcondor", pytest.param("slurm", marks=pytest.mark.slurm)]
STATUS_TOOL = {"lsf": "bjobs", "htcondor": "condor_q"}
KILL_TOOL = {"lsf": "bkill", "htcondor": "condor_rm"}
RUNTIMES = [
    pytest.param(("host", []), id="host"),
    pytest.param(("docker", ["--image", DEMO_IMAGE]), id="docker", marks=pytest.mark.docker),
]

TASKS = """
import os
import time
import luigi


class Echo(luigi.Task):
    name = luigi.Parameter()
    fail = luigi.BoolParameter(default=False)
    sleep = luigi.IntParameter(default=0)

    def output(self):
        return luigi.LocalTarget(f"results/{self.name}.txt")

    def run(self):
        with open(f"results/{self.name}.started", "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("the task failed on purpose")
        with self.output().open("w") as handle:
            handle.write(self.name)
"""


@pytest.fixture(params=SCHEDULERS)
def scheduler(request, fake_schedulers, monkeypatch):
    monkeypatch.setenv("CONTAINERBATCH_POLL_INTERVAL", "1")
    for key in [k for k in os.environ if k.startswith("CONTAINERBATCH_") and k != "CONTAINERBATCH_POLL_INTERVAL"]:
        monkeypatch.delenv(key)
    yield request.param
    subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)


def calls(state: Path) -> list[dict]:
    log = state / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def ids_of(call: dict) -> list[str]:
    """Job ids in a status or kill call (its only all-digit arguments)."""
    return [a for a in call["argv"] if re.fullmatch(r"\d+(\.\d+)?", a)]


def attempts(work: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts ORDER BY task_id").fetchall()


def fake(*args: str) -> None:
    subprocess.run([str(FAKES_BIN / "fakesched-fault"), *args], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_workflow(scheduler, runtime, tmp_path, fake_schedulers):
    name, extra = runtime
    work = tmp_path / "work"
    work.mkdir()
    # jobs wait 2 s in the fake queue, so that the two Fit jobs are in flight together
    proc = run_cli(
        [
            "run",
            WORKFLOW,
            "Summary",
            "--samples",
            "2",
            "--batch-system",
            scheduler,
            "--runtime",
            name,
            *extra,
            "--workers",
            "3",
        ],
        cwd=work,
        env={"CB_FAKE_PEND_SECONDS": "2"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "results" / "summary_2.txt").read_text() == "2 fits, mean of means 2.25\n"
    rows = attempts(work)
    assert sorted(r["task_family"] for r in rows) == ["Fit", "Fit", "Simulate", "Simulate", "Summary"]
    assert all(r["state"] == "done" and r["job_id"] and r["attempt"] == 1 for r in rows)
    # Simulate names batch_system = "local" itself; the command line chooses for the others
    assert {r["task_family"]: r["scheduler"] for r in rows} == {
        "Simulate": "local",
        "Fit": scheduler,
        "Summary": scheduler,
    }
    if scheduler not in STATUS_TOOL:
        return
    ours = {r["job_id"] for r in rows if r["scheduler"] == scheduler}
    log = calls(fake_schedulers)
    status = [c for c in log if c["tool"] == STATUS_TOOL[scheduler]]
    assert status, "the scheduler was never asked"
    fits = {r["job_id"] for r in rows if r["task_family"] == "Fit"}
    assert any(fits <= set(ids_of(c)) for c in status), "the two Fit jobs were never asked about in one call"
    assert all(set(ids_of(c)) <= ours for c in status)
    # one call per poll round for all jobs, not one per job
    times = [c["time"] for c in status]
    assert all(b - a > 0.5 for a, b in zip(times, times[1:], strict=False)), times
    submits = [c for c in log if c["tool"] in ("bsub", "condor_submit")]
    assert len(submits) == 3


def write_tasks(tmp_path: Path) -> tuple[Path, str]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "tasks.py").write_text(TASKS)
    return work, str(work / "tasks.py")


def test_failing_task_shows_reason_and_log(scheduler, tmp_path):
    work, tasks = write_tasks(tmp_path)
    proc = run_cli(
        ["run", tasks, "Echo", "--name", "bad", "--fail", "--batch-system", scheduler, "--runtime", "host"], cwd=work
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    (row,) = attempts(work)
    assert row["state"] == "failed" and row["reason"] == "task_error"
    assert "the task failed on purpose" in output
    assert str(Path(row["job_dir"]) / "stderr") in output  # where to look
    assert not (work / "results" / "bad.txt").exists()


@pytest.mark.parametrize("sched", ["lsf", "htcondor"])
def test_status_command_failing_three_times(sched, tmp_path, fake_schedulers, monkeypatch):
    monkeypatch.setenv("CONTAINERBATCH_POLL_INTERVAL", "1")
    work, tasks = write_tasks(tmp_path)
    fake("error", STATUS_TOOL[sched], "--count", "3")
    try:
        # the job pends 5 s: the failing queries (retried after 1, 2, 4 s) all happen while it waits
        proc = run_cli(
            ["run", tasks, "Echo", "--name", "ok", "--batch-system", sched, "--runtime", "host"],
            cwd=work,
            env={"CB_FAKE_PEND_SECONDS": "5"},
        )
    finally:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "results" / "ok.txt").read_text() == "ok"
    status = [c for c in calls(fake_schedulers) if c["tool"] == STATUS_TOOL[sched]]
    assert len(status) >= 3, "the fault was not exercised"
    faults = json.loads((fake_schedulers / "faults.json").read_text())
    assert [f["count"] for f in faults] == [0]  # all three failures were served
    assert attempts(work)[0]["state"] == "done"


def test_kill(scheduler, tmp_path, fake_schedulers):
    """Ctrl-C/SIGTERM on the submitting process cancels its jobs with one call, and the job stops."""
    work, tasks = write_tasks(tmp_path)
    env = {**os.environ, "CONTAINERBATCH_POLL_INTERVAL": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "containerbatch",
            "run",
            tasks,
            "Echo",
            "--name",
            "slow",
            "--sleep",
            "120",
            "--batch-system",
            scheduler,
            "--runtime",
            "host",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = work / "results" / "slow.started"
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), proc.stdout.read() if proc.poll() is not None else "the task never started"
        task_pid = int(started.read_text())
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "cancelled 1 job(s)" in output, output
    (row,) = attempts(work)
    assert row["state"] == "cancelled"
    deadline = time.monotonic() + 15
    while _alive(task_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(task_pid), "the task kept running after the cancel"
    if scheduler in KILL_TOOL:
        kills = [c for c in calls(fake_schedulers) if c["tool"] == KILL_TOOL[scheduler]]
        assert kills and all(ids_of(c) == [row["job_id"]] for c in kills), kills


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
