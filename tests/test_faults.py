"""Failures from the outside: what must hold is checked in files, the journal and process tables.

* a job killed for memory succeeds on a later attempt with doubled memory;
* the submitter killed with SIGKILL and started again: nothing is submitted twice, everything completes;
* Ctrl-C / SIGTERM cancels what the submitter started;
* a task's dynamic dependencies run as batch jobs;
* a failed attempt leaves no output that luigi would take as complete, and nothing is deleted.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, run_cli


def journal_rows(work: Path) -> list[dict]:
    db = sqlite3.connect(work / ".containerbatch" / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY task_id, attempt")]
    finally:
        db.close()


def wait_for(predicate, timeout=60.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def start_cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "containerbatch", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


OOM_WORKFLOW = """
import luigi

class Hungry(luigi.Task):
    image = "cb-demo:latest"
    resources = {"memory": "48MiB"}
    retry_wait = 0

    def output(self):
        return luigi.LocalTarget("results/fed.txt")

    def run(self):
        block = bytearray(120 * 1024 * 1024)   # needs ~130 MiB: 48 -> 96 -> 192 MiB
        for i in range(0, len(block), 4096):
            block[i] = 1
        with self.output().open("w") as handle:
            handle.write("fed")
"""


@pytest.mark.docker
def test_out_of_memory_is_resubmitted_with_doubled_memory(tmp_path):
    (tmp_path / "wf.py").write_text(OOM_WORKFLOW)
    proc = run_cli(["run", "wf.py", "Hungry"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "results" / "fed.txt").read_text() == "fed"
    rows = journal_rows(tmp_path)
    assert [(r["attempt"], r["state"], r["reason"]) for r in rows] == [
        (1, "failed", "out_of_memory"),
        (2, "failed", "out_of_memory"),
        (3, "done", None),
    ]
    # every attempt has its own folder; the engine itself said OOM; memory doubled each time
    dirs = [Path(r["job_dir"]) for r in rows]
    assert len(set(dirs)) == 3
    assert [(d / "oom_killed").read_text().strip() for d in dirs[:2]] == ["true", "true"]
    assert [
        "--memory 48m" in (dirs[0] / "job.sh").read_text(),
        "--memory 96m" in (dirs[1] / "job.sh").read_text(),
        "--memory 192m" in (dirs[2] / "job.sh").read_text(),
    ] == [True, True, True]
    assert "resubmitting" in proc.stderr and "memory 48 MiB -> 96 MiB" in proc.stderr


SLOW_WORKFLOW = """
import os
import time
import luigi

class Slow(luigi.Task):
    i = luigi.IntParameter()
    runtime = "host"

    def output(self):
        return luigi.LocalTarget(f"results/slow_{self.i}")

    def run(self):
        with open("runs.log", "a") as log:           # one line per execution of the task
            log.write(f"{self.i} {os.getpid()}\\n")
        time.sleep(6 if self.i else 1)
        with self.output().open("w") as handle:
            handle.write("done")


class All(luigi.Task):
    runtime = "host"

    def requires(self):
        return [Slow(i=i) for i in range(3)]

    def output(self):
        return luigi.LocalTarget("results/all")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")
"""


def test_submitter_killed_and_restarted_submits_nothing_twice(tmp_path):
    (tmp_path / "wf.py").write_text(SLOW_WORKFLOW)
    first = start_cli(["run", "wf.py", "All", "--workers", "3"], cwd=tmp_path)
    db = tmp_path / ".containerbatch" / "journal.sqlite"
    wait_for(lambda: db.exists() and len(journal_rows(tmp_path)) == 3, what="three submissions")
    os.killpg(first.pid, signal.SIGKILL)  # the submitter dies; its jobs live in their own sessions
    first.wait()
    wait_for(lambda: (tmp_path / "results" / "slow_0").exists(), what="the short job to finish while away")
    second = run_cli(["run", "wf.py", "All", "--workers", "3"], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "re-attached" in run_log_text(tmp_path)  # containerbatch's INFO lines are in the run's log file
    rows = journal_rows(tmp_path)
    slow = [r for r in rows if r["task_family"] == "Slow"]
    # one attempt per task, the same job ids, all done; the final task once
    assert sorted((r["task_id"].split("_")[1], r["attempt"], r["state"]) for r in slow) == [
        ("0", 1, "done"),
        ("1", 1, "done"),
        ("2", 1, "done"),
    ]
    assert [r["task_family"] for r in rows].count("All") == 1
    # the tasks' own record: each Slow ran exactly once
    runs = (tmp_path / "runs.log").read_text().split("\n")
    assert sorted(line.split()[0] for line in runs if line) == ["0", "1", "2"]
    assert (tmp_path / "results" / "all").read_text() == "ok"


def test_two_submitters_do_not_submit_the_same_task_twice(tmp_path):
    (tmp_path / "wf.py").write_text(SLOW_WORKFLOW)
    a = start_cli(["run", "wf.py", "All", "--workers", "3"], cwd=tmp_path)
    b = start_cli(["run", "wf.py", "All", "--workers", "3"], cwd=tmp_path)
    assert a.wait(timeout=120) == 0, a.stderr.read()
    assert b.wait(timeout=120) == 0, b.stderr.read()
    runs = (tmp_path / "runs.log").read_text().split("\n")
    assert sorted(line.split()[0] for line in runs if line) == ["0", "1", "2"]
    slow = [r for r in journal_rows(tmp_path) if r["task_family"] == "Slow"]
    assert len(slow) == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_submitted_jobs(tmp_path, sig):
    (tmp_path / "wf.py").write_text(SLOW_WORKFLOW.replace("time.sleep(6 if self.i else 1)", "time.sleep(120)"))
    proc = start_cli(["run", "wf.py", "Slow", "--i", "1"], cwd=tmp_path)
    wait_for(lambda: (tmp_path / "runs.log").exists(), what="the job to start")
    row = journal_rows(tmp_path)[0]
    job_pid = int(row["job_id"])
    os.kill(proc.pid, sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 1), err
    assert "cancelled 1 job" in err
    # the job itself is gone (its process group), and the journal says so
    wait_for(
        lambda: not Path(f"/proc/{job_pid}").exists() or Path(f"/proc/{job_pid}/stat").read_text().split()[2] == "Z",
        30,
        "the job to end",
    )
    assert journal_rows(tmp_path)[0]["state"] == "cancelled"
    assert not (tmp_path / "results" / "slow_1").exists()


DYNAMIC_WORKFLOW = """
import luigi

class Leaf(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/leaf_{self.n}")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(str(self.n * 10))


class Root(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/root")

    def run(self):
        with open("root_runs.log", "a") as log:
            log.write("run\\n")
        leaves = yield [Leaf(n=1), Leaf(n=2)]          # dynamic dependencies
        total = sum(int(t.open().read()) for t in leaves)
        with self.output().open("w") as handle:
            handle.write(str(total))
"""


@pytest.mark.parametrize("runtime", ["host", pytest.param("docker", marks=pytest.mark.docker)])
def test_dynamic_dependencies_run_as_batch_jobs(tmp_path, runtime):
    (tmp_path / "wf.py").write_text(DYNAMIC_WORKFLOW)
    args = ["run", "wf.py", "Root", "--runtime", runtime] + (["--image", DEMO_IMAGE] if runtime == "docker" else [])
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "results" / "root").read_text() == "30"
    rows = journal_rows(tmp_path)
    assert sorted(r["task_family"] for r in rows) == ["Leaf", "Leaf", "Root", "Root"]
    root = [r for r in rows if r["task_family"] == "Root"]
    assert [(r["attempt"], r["state"]) for r in root] == [(1, "new_deps"), (2, "done")]
    assert (tmp_path / "root_runs.log").read_text().count("run") == 2


PARTIAL_WORKFLOW = """
import luigi

class Partial(luigi.Task):
    runtime = "host"

    def output(self):
        return {"a": luigi.LocalTarget("results/a.txt"), "b": luigi.LocalTarget("results/b.txt")}

    def run(self):
        with open(self.output()["a"].path, "w") as handle:   # not atomic, on purpose
            handle.write("half")
        raise RuntimeError("crashed after writing a")
"""


def test_failed_attempt_leaves_no_output_luigi_takes_as_complete(tmp_path):
    (tmp_path / "wf.py").write_text(PARTIAL_WORKFLOW)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "b.txt").write_text("the user's own file")
    proc = run_cli(["run", "wf.py", "Partial"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "task_error" in proc.stdout and "crashed after writing a" in proc.stdout  # the end summary
    assert not (tmp_path / "results" / "a.txt").exists()
    # set aside, not deleted; the user's file untouched
    moved = list((tmp_path / "logs").rglob("partial-outputs/**/a.txt"))
    assert len(moved) == 1 and moved[0].read_text() == "half"
    assert (tmp_path / "results" / "b.txt").read_text() == "the user's own file"
    # running again starts attempt 2 in a new folder; attempt 1 is kept
    again = run_cli(["run", "wf.py", "Partial"], cwd=tmp_path)
    assert again.returncode == 1
    rows = journal_rows(tmp_path)
    assert [r["attempt"] for r in rows] == [1, 2]
    assert all(Path(r["job_dir"], "result.json").exists() for r in rows)
    result = json.loads(Path(rows[0]["job_dir"], "result.json").read_text())
    assert result["status"] == "failure"


def run_log_text(folder):
    """Every run log under ``folder`` (``.containerbatch/runs/*/run.log``), joined."""
    return "".join(p.read_text() for p in sorted(Path(folder).glob(".containerbatch/runs/*/run.log")))
