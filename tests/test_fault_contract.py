"""Fault injection, one body per scheduler: LSF and HTCondor (fakes), live Slurm (through a shim).

Every test states what must hold and checks it from the outside only: the result files the tasks
write, the journal (``.containerbatch/journal.sqlite``, table ``attempts``), the scheduler's own
records (the fakes' ``state.json`` and ``calls.log``; for Slurm ``scontrol show job`` and a call
log kept by shims), and the processes of the jobs.

The Slurm shims (a folder first on PATH with squeue, sacct, scontrol, sbatch, scancel) log each
call and exec ``/usr/bin/<tool>``; two files in the folder make them lie: ``fail_until`` (an epoch
time: the status tools fail with Slurm's own timeout message until then) and ``hidden`` (job ids
that squeue/sacct/scontrol no longer show, as if the controller had forgotten them).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKES_BIN, run_cli

#: how long the status commands fail in test 1 (the brief's "about a minute", halved for CI time)
STATUS_OUTAGE_S = 30.0
#: at most this many status calls per second of outage (5 tries backing off 1, 2, 4, 8 s per round)
MAX_STATUS_CALLS_PER_S = 40 / 60
MEMORY = "1GB"  # 954 MiB
MEMORY_MIB = 954

TASKS = """
import os
import time

import luigi


class Step(luigi.Task):
    name = luigi.Parameter()
    sleep = luigi.FloatParameter(default=1)

    def output(self):
        return luigi.LocalTarget(f"results/{self.name}.txt")

    def run(self):
        with open("runs.log", "a") as log:  # one line per execution of the task body
            log.write(f"{self.name} {os.getpid()}\\n")
        time.sleep(self.sleep)
        with self.output().open("w") as handle:
            handle.write(self.name)


class Hungry(Step):
    resources = {"memory": "MEMORY"}


class Many(luigi.Task):
    n = luigi.IntParameter(default=2)
    sleep = luigi.FloatParameter(default=1)

    def requires(self):
        return [Step(name=f"s{i}", sleep=self.sleep) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget(f"results/many_{self.n}.txt")

    def run(self):
        with open("runs.log", "a") as log:
            log.write(f"many {os.getpid()}\\n")
        with self.output().open("w") as handle:
            handle.write("all")
""".replace("MEMORY", MEMORY)

SLURM_SHIM = r'''#!/usr/bin/env python3
"""Test shim: log the call; fail status calls until fail_until; hide the job ids listed in hidden."""
import json
import os
import re
import subprocess
import sys
import time

tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
here = os.path.dirname(os.path.abspath(__file__))
real = "/usr/bin/" + tool
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps({"tool": tool, "argv": args, "time": time.time()}) + "\n")


def words(name):
    try:
        with open(os.path.join(here, name)) as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


status = tool in ("squeue", "sacct") or (tool == "scontrol" and args[:2] == ["show", "job"])
until = words("fail_until")
if status and until and time.time() < float(until[0]):
    sys.stderr.write("slurm_load_jobs error: Socket timed out on send/recv operation\n")
    sys.exit(1)
hidden = set(words("hidden"))
if not status or not hidden:
    os.execv(real, [real, *args])
if tool == "scontrol":
    if hidden & set(args):
        sys.stderr.write("slurm_load_jobs error: Invalid job id specified\n")
        sys.exit(1)
    os.execv(real, [real, *args])
proc = subprocess.run([real, *args], capture_output=True, text=True)
kept = [l for l in proc.stdout.splitlines(True) if re.split(r"[\s|_.;]", l.strip() + " ", 1)[0] not in hidden]
sys.stdout.write("".join(kept))
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
'''
SLURM_TOOLS = ("squeue", "sacct", "scontrol", "sbatch", "scancel")
SUBMIT = {"lsf": "bsub", "htcondor": "condor_submit", "slurm": "sbatch"}
STATUS = {
    "lsf": ("bjobs", "bhist"),
    "htcondor": ("condor_q", "condor_history"),
    "slurm": ("squeue", "sacct", "scontrol"),
}
KILL = {"lsf": "bkill", "htcondor": "condor_rm", "slurm": "scancel"}
FAKES = ["lsf", "htcondor"]
ALL = ["lsf", "htcondor", pytest.param("slurm", marks=pytest.mark.slurm)]


# --------------------------------------------------------------------------- the outside view


@dataclass
class Sched:
    """One scheduler as the tests see it: its call log, its records, its faults."""

    name: str
    folder: Path  # the fakes' CB_FAKE_STATE, or the Slurm shim folder
    work: Path

    def calls(self, *tools: str) -> list[dict[str, Any]]:
        log = self.folder / "calls.log"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if self.name == "slurm":  # `scontrol show job` is a status call; scontrol release/… are not
            rows = [r for r in rows if r["tool"] != "scontrol" or r["argv"][:2] == ["show", "job"]]
        return [r for r in rows if r["tool"] in tools]

    def submits(self) -> list[dict[str, Any]]:
        return self.calls(SUBMIT[self.name])

    def fault(self, *args: str) -> None:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), *args], check=True, capture_output=True, timeout=60)

    def fail_status_until(self, until: float) -> None:
        """Every status command fails with the scheduler's own transient error until ``until``."""
        if self.name == "slurm":
            (self.folder / "fail_until").write_text(repr(until))
        else:
            self.fault("error", ",".join(STATUS[self.name]), "--until", repr(until))

    def record(self, job_id: str) -> dict[str, Any]:
        """The scheduler's own record of a job."""
        if self.name == "slurm":
            out = subprocess.run(
                ["/usr/bin/scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
            ).stdout
            return dict(re.findall(r"(\w+)=(\S*)", out))
        state = json.loads((self.folder / "state.json").read_text())
        if self.name == "lsf":
            return state["lsf"]["jobs"][job_id]
        return state["condor"]["jobs"][job_id if "." in job_id else job_id + ".0"]

    def completed(self, job_id: str) -> bool:
        rec = self.record(job_id)
        if self.name == "lsf":
            return rec.get("final") == "DONE" and rec.get("exit_code") == 0
        if self.name == "htcondor":
            return rec.get("JobStatus") == 4 and rec.get("ExitCode") == 0 and not rec.get("ExitBySignal")
        return rec.get("JobState") == "COMPLETED"

    def cancelled(self, job_id: str) -> bool:
        rec = self.record(job_id)
        if self.name == "lsf":
            return rec.get("final") == "EXIT" and str(rec.get("exit_reason", "")).startswith("TERM_OWNER")
        if self.name == "htcondor":
            return rec.get("JobStatus") == 3
        return rec.get("JobState") == "CANCELLED"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "CONTAINERBATCH_POLL_INTERVAL": "1",
            "CONTAINERBATCH_RETRY_WAIT": "0",
            "CONTAINERBATCH_LOST_AFTER": "3",
            **extra,
        }
        if self.name == "slurm":
            env["PATH"] = f"{self.folder}:{os.environ['PATH']}"
        return env


@pytest.fixture(params=ALL)
def sched(request, tmp_path, fake_schedulers, monkeypatch) -> Iterator[Sched]:
    for key in [k for k in os.environ if k.startswith("CONTAINERBATCH_")]:
        monkeypatch.delenv(key)
    work = tmp_path / "work"
    work.mkdir()
    (work / "tasks.py").write_text(TASKS)
    folder = fake_schedulers
    if request.param == "slurm":
        folder = tmp_path / "shims"
        folder.mkdir()
        for tool in SLURM_TOOLS:
            (folder / tool).write_text(SLURM_SHIM)
            (folder / tool).chmod(0o755)
    yield Sched(request.param, folder, work)
    if request.param == "slurm":
        ids = [r["job_id"] for r in _rows(work) if r["job_id"]]
        if ids:
            subprocess.run(["/usr/bin/scancel", *ids], capture_output=True, timeout=60)
    else:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)


def _rows(work: Path) -> list[dict[str, Any]]:
    db_path = work / ".containerbatch" / "journal.sqlite"
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY task_id, attempt")]
    except sqlite3.Error:
        return []
    finally:
        db.close()


def attempts(work: Path, family: str | None = None) -> list[tuple[int, str, str | None]]:
    """(attempt, state, reason) of every journal row, of one task family if given."""
    return [(r["attempt"], r["state"], r["reason"]) for r in _rows(work) if family in (None, r["task_family"])]


def runs(work: Path) -> list[str]:
    """Names of the task bodies executed, one per execution (from runs.log)."""
    log = work / "runs.log"
    return sorted(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else []


def run_pids(work: Path) -> list[int]:
    log = work / "runs.log"
    return [int(line.split()[1]) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start(sched: Sched, args: list[str], **env: str) -> subprocess.Popen[str]:
    """The submitter in the background, in its own session (so that SIGKILL can take it and its children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "containerbatch", "run", "tasks.py", *args, "--batch-system", sched.name]
        + ["--runtime", "host"],
        cwd=sched.work,
        env={**os.environ, **sched.env(**env)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the run did not end within {timeout} s:\n{err[-4000:]}") from None


def run(sched: Sched, args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        return run_cli(
            ["run", "tasks.py", *args, "--batch-system", sched.name, "--runtime", "host"],
            cwd=sched.work,
            env=sched.env(**env),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        raise AssertionError(f"the run did not end within {timeout} s:\n{err[-4000:]}") from None


def job_of(work: Path, attempt: int = 1, family: str | None = None) -> str:
    """The job id of an attempt, once the journal has it."""

    def found() -> str | None:
        rows = [r for r in _rows(work) if r["attempt"] == attempt and family in (None, r["task_family"])]
        return rows[0]["job_id"] if rows and rows[0]["job_id"] else None

    return wait_for(found, 30, f"attempt {attempt} to be submitted")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def memory_requests(sched: Sched, work: Path) -> list[int]:
    """The memory each attempt asked for, in the scheduler's own terms (bsub -M / rusage, request_memory)."""
    if sched.name == "lsf":
        values = []
        for call in sched.submits():
            argv = call["argv"]
            mem = int(argv[argv.index("-M") + 1])
            rusage = next(a for a in argv[argv.index("-R") :] if "rusage[mem=" in a)
            assert f"rusage[mem={mem}]" in rusage, argv  # -M and the reservation agree
            values.append(mem)
        return values
    values = []
    for call in sched.submits():
        text = Path(call["argv"][-1]).read_text()
        values.append(int(re.search(r"(?m)^request_memory = (\d+)MB$", text).group(1)))
    return values


# --------------------------------------------------------------------------- 1. status outage


def test_status_outage_fails_nothing_and_does_not_hammer(sched):
    """The status commands fail for the whole run (STATUS_OUTAGE_S; every status tool, the real error text).

    Must hold: the run succeeds; every task has exactly one attempt, done (nothing failed or was
    resubmitted because the scheduler could not be asked); the scheduler's own records show every
    job completed; the status tools were called at least three times (the outage was exercised)
    but at most MAX_STATUS_CALLS_PER_S per second of outage (retries back off, no hammering).
    """
    until = time.time() + STATUS_OUTAGE_S
    sched.fail_status_until(until)
    began = time.time()
    # the run lasts about as long as the outage: the Steps sleep through most of it
    proc = run(sched, ["Many", "--n", "2", "--sleep", str(STATUS_OUTAGE_S - 6), "--workers", "2"], timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert (sched.work / "results" / "many_2.txt").read_text() == "all"
    assert attempts(sched.work) == [(1, "done", None)] * 3
    assert runs(sched.work) == ["many", "s0", "s1"]
    for row in _rows(sched.work):
        assert sched.completed(row["job_id"]), sched.record(row["job_id"])
    status = [c for c in sched.calls(*STATUS[sched.name]) if began <= c["time"] < until]
    assert len(status) >= 3, "the outage was never exercised"
    outage = min(until, time.time()) - began
    assert len(status) <= outage * MAX_STATUS_CALLS_PER_S, (len(status), outage, [c["time"] for c in status])


# --------------------------------------------------------------------------- 2. vanished job


def vanish(sched: Sched, job_id: str) -> None:
    """The job disappears from queue and history, and its processes die without a result."""
    if sched.name == "slurm":
        (sched.folder / "hidden").write_text(job_id + "\n")  # first hide it, then kill it: nobody sees it end
        # SIGKILL every process of the job (batch shell included: no trap runs, no done-marker is written);
        # `scancel --signal=KILL` would be a regular cancel, which the job script notices
        listing = subprocess.run(
            ["/usr/bin/scontrol", "listpids", job_id], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        pids = [int(line.split()[0]) for line in listing.splitlines()[1:] if line.split()]
        assert pids, listing
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    else:
        sched.fault("vanish", "lsf" if sched.name == "lsf" else "condor", job_id)


@pytest.mark.parametrize("sched", ALL, indirect=True)
def test_vanished_job_is_lost_and_resubmitted(sched):
    """A running job vanishes from queue and history without writing a result.

    LSF/HTCondor: the fakes' ``vanish`` fault (the process group is killed, bjobs/bhist and
    condor_q/condor_history no longer know the id). Slurm: the shims hide the id from
    squeue/sacct/scontrol (as a controller that lost the job would) and every process of the job
    (``scontrol listpids``, batch shell included) gets SIGKILL, so no done-marker is written.

    Must hold (lost_after = 3 s): attempt 1 is failed with reason ``lost`` well before the default
    lost_after of 60 s, the task is resubmitted once, attempt 2 is done in a new job that the
    scheduler records as completed, and the task body ran twice (once per attempt).
    """
    proc = start(sched, ["Step", "--name", "v", "--sleep", "5"])
    try:
        first = job_of(sched.work)
        wait_for(lambda: runs(sched.work), 30, "the task to start")
        vanish(sched, first)
        out, err = finish(proc, timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    assert attempts(sched.work) == [(1, "failed", "lost"), (2, "done", None)]
    second = job_of(sched.work, 2)
    assert second != first and sched.completed(second)
    assert len(sched.submits()) == 2
    assert runs(sched.work) == ["v", "v"]
    assert (sched.work / "results" / "v.txt").read_text() == "v"


# --------------------------------------------------------------------------- 3. memory limit


@pytest.mark.parametrize("sched", FAKES, indirect=True)
def test_memory_kill_is_resubmitted_with_doubled_memory(sched):
    """The first job is killed for memory by the batch system.

    LSF: EXIT with ``TERM_MEMLIMIT`` (exit 137). HTCondor: held with HoldReasonCode 34 (cgroup
    memory limit); held_timeout = 2 s with held_action fail removes it. (Slurm is left out: its
    OUT_OF_MEMORY needs a real cgroup kill, which the test cannot cause without eating memory.)

    Must hold: attempt 1 is failed with reason ``out_of_memory``; attempt 2 asks the scheduler for
    twice the memory (bsub -M and rusage[mem], or request_memory in job.sub: 954 -> 1908 MiB for
    "1GB") and is done; the scheduler has the first job ended (EXIT / removed) and the second completed.
    """
    sched.fault("memlimit", "lsf" if sched.name == "lsf" else "condor", "1")  # the first job of this fresh state
    proc = run(sched, ["Hungry", "--name", "h", "--sleep", "1"], timeout=60, CONTAINERBATCH_HELD_TIMEOUT="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert attempts(sched.work) == [(1, "failed", "out_of_memory"), (2, "done", None)]
    assert memory_requests(sched, sched.work) == [MEMORY_MIB, 2 * MEMORY_MIB]
    first, second = job_of(sched.work, 1), job_of(sched.work, 2)
    assert sched.completed(second) and not sched.completed(first)
    if sched.name == "htcondor":
        assert sched.record(first)["HoldReasonCode"] == 34 or sched.record(first)["JobStatus"] == 3
        assert [c["argv"][-1] for c in sched.calls("condor_rm")] == [first]  # removed after held_timeout
    assert (sched.work / "results" / "h.txt").read_text() == "h"


# --------------------------------------------------------------------------- 4. node failure


@pytest.mark.parametrize("sched", FAKES, indirect=True)
def test_node_failure_mid_run(sched):
    """The node of a running job dies (the fakes' ``nodefail``: SIGKILL of the job's processes).

    LSF: the job is UNKWN for a second, then EXIT with ``TERM_REMOVE_HUNG_JOB`` (LSF removes a job
    whose host stays unreachable). Must hold: attempt 1 is failed with reason ``node_failure``,
    attempt 2 is done, the task body ran twice, two bsub calls.

    HTCondor: a vanilla job whose execute node dies goes back to idle and is run again from scratch
    by HTCondor itself (NumJobStarts 2, NumShadowExceptions 1); the job never fails. Must hold: one
    condor_submit, one attempt in the journal, done; the task body ran twice (it was interrupted
    once) but completed once: its result file is written, and the job's record is completed.
    """
    proc = start(sched, ["Step", "--name", "n", "--sleep", "4"])
    try:
        first = job_of(sched.work)
        wait_for(lambda: runs(sched.work), 30, "the task to start")
        sched.fault("nodefail", "lsf" if sched.name == "lsf" else "condor", first)
        out, err = finish(proc, timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    assert runs(sched.work) == ["n", "n"]
    assert (sched.work / "results" / "n.txt").read_text() == "n"
    if sched.name == "lsf":
        assert sched.record(first)["exit_reason"].startswith("TERM_REMOVE_HUNG_JOB")
        assert attempts(sched.work) == [(1, "failed", "node_failure"), (2, "done", None)]
        assert len(sched.submits()) == 2 and sched.completed(job_of(sched.work, 2))
    else:
        rec = sched.record(first)
        assert (rec["NumJobStarts"], rec.get("NumShadowExceptions")) == (2, 1)
        assert attempts(sched.work) == [(1, "done", None)]
        assert len(sched.submits()) == 1 and sched.completed(first)


# --------------------------------------------------------------------------- 5. submitter killed


def test_submitter_killed_and_restarted_submits_nothing_twice(sched):
    """The submitter gets SIGKILL while its three jobs run, and is started again with the same command.

    Must hold: every job was submitted once (3 Steps + the final Many = 4 submit calls in the
    scheduler's call log); the journal has one attempt per task, all done; every task body ran
    exactly once; the scheduler's own records show all four jobs completed; the restarted
    submitter says it re-attached.
    """
    args = ["Many", "--n", "3", "--sleep", "4", "--workers", "3"]
    first = start(sched, args)
    try:
        wait_for(lambda: len([r for r in _rows(sched.work) if r["job_id"]]) == 3, 30, "three submissions")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    assert len(sched.submits()) == 3
    second = run(sched, args, timeout=90)
    assert second.returncode == 0, second.stdout + second.stderr[-4000:]
    logs = sorted(Path(sched.work).glob(".containerbatch/runs/*/run.log"))
    assert "re-attached" in "".join(p.read_text() for p in logs)  # INFO: in the run's log file
    rows = _rows(sched.work)
    assert (
        sorted((r["task_family"], r["attempt"], r["state"]) for r in rows)
        == [("Many", 1, "done")] + [("Step", 1, "done")] * 3
    )
    assert len(sched.submits()) == 4
    assert runs(sched.work) == ["many", "s0", "s1", "s2"]
    for row in rows:
        assert sched.completed(row["job_id"]), (row["task_id"], sched.record(row["job_id"]))
    assert (sched.work / "results" / "many_3.txt").read_text() == "all"


# --------------------------------------------------------------------------- 6. Ctrl-C


def test_ctrl_c_cancels_every_job_with_one_call(sched):
    """SIGINT (Ctrl-C) to the submitter while three jobs run.

    Must hold: the kill tool (bkill / condor_rm / scancel) is called exactly once, with exactly the
    three job ids of the run; the submitter exits with 130 and says "cancelled 3 job(s)"; the
    journal has the three attempts cancelled; the scheduler records the jobs as cancelled
    (LSF TERM_OWNER, HTCondor JobStatus 3, Slurm CANCELLED) and their task processes end.
    """
    proc = start(sched, ["Many", "--n", "3", "--sleep", "60", "--workers", "3"])
    try:
        wait_for(lambda: len(runs(sched.work)) == 3, 60, "three running tasks")
        ids = sorted(r["job_id"] for r in _rows(sched.work))
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-4000:]
    assert "cancelled 3 job(s)" in err, err[-4000:]
    kills = sched.calls(KILL[sched.name])
    assert [sorted(a for a in c["argv"] if not a.startswith("-")) for c in kills] == [ids], kills
    assert attempts(sched.work) == [(1, "cancelled", "cancelled")] * 3
    for job_id in ids:
        wait_for(lambda j=job_id: sched.cancelled(j), 30, f"job {job_id} to be recorded as cancelled")
    for pid in run_pids(sched.work):
        wait_for(lambda p=pid: not alive(p), 30, f"task process {pid} to end")
    assert not list(sched.work.glob("results/*.txt"))  # no task reached its end
