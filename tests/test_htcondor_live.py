"""Live HTCondor: the same behaviour as the fakes show, against a real pool.

These run in ``ci/htcondor/run.sh test`` inside the ``htcondor/mini`` container as ``submituser`` (see
ci/htcondor/README.md; the pipeline needs a registry that serves the image, so it cannot run on the
development VM).  They are deselected unless ``CB_HTCONDOR_LIVE=1``; with it set, a pool that does not
answer fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.htcondor_live

WORKFLOW = str(ROOT / "examples" / "workflow.py")

TASKS = """
import json
import os
import time
import luigi


class Nap(luigi.Task):
    seconds = luigi.IntParameter(default=60)

    def output(self):
        return luigi.LocalTarget("results/nap.txt")

    def run(self):
        time.sleep(self.seconds)
        with self.output().open("w") as handle:
            handle.write("slept")


class Boom(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/boom.txt")

    def run(self):
        raise RuntimeError("live failure 7")


class Held(luigi.Task):
    # a site policy that holds every running job (HoldReasonCode 3: periodic_hold)
    htcondor_settings = {"periodic_hold": "JobStatus == 2"}
    held_timeout = 5
    held_action = "fail"
    max_attempts = 1

    def output(self):
        return luigi.LocalTarget("results/held.txt")

    def run(self):
        time.sleep(30)


class Staged(luigi.Task):
    transfer_files = ["data/calib.txt"]

    def output(self):
        return luigi.LocalTarget("results/staged.json")

    def run(self):
        with self.output().open("w") as handle:
            json.dump({"calib": open("data/calib.txt").read(), "scratch": os.getcwd()}, handle)
"""


@pytest.fixture(scope="module", autouse=True)
def pool() -> None:
    try:
        out = subprocess.run(["condor_q", "-totals"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"CB_HTCONDOR_LIVE is set but condor_q cannot run: {exc}")
    if out.returncode != 0:
        pytest.fail(f"CB_HTCONDOR_LIVE is set but condor_q fails: {out.stderr.strip()[-500:]}")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    (folder / "data").mkdir()
    (folder / "data" / "calib.txt").write_text("calibration 2.5\n")
    return folder


def rows(work: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts ORDER BY task_id, attempt").fetchall()


def history(job_id: str) -> dict:
    for _ in range(60):  # the schedd writes the history a moment after the job leaves the queue
        out = subprocess.run(
            ["condor_history", "-json", "-match", "1", job_id], capture_output=True, text=True, timeout=60
        )
        if out.returncode == 0 and out.stdout.strip():
            return json.loads(out.stdout)[0]
        time.sleep(1)
    raise AssertionError(f"job {job_id} is not in condor_history")


def cli(args: list[str], work: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_cli(
        [*args, "--batch-system", "htcondor"], cwd=work, env={"CONTAINERBATCH_POLL_INTERVAL": "2"}, timeout=timeout
    )


def test_example_workflow_completes(work: Path) -> None:
    proc = cli(["run", WORKFLOW, "Summary", "--samples", "2", "--runtime", "host", "--workers", "3"], work)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert (work / "results" / "summary_2.txt").read_text() == "2 fits, mean of means 2.25\n"
    for row in rows(work):
        assert row["state"] == "done"
        if row["scheduler"] == "htcondor":
            ad = history(row["job_id"])
            assert (ad["JobStatus"], ad.get("ExitCode")) == (4, 0)


def test_failing_task_is_a_task_error_with_its_log(work: Path) -> None:
    proc = cli(["run", "tasks.py", "Boom", "--runtime", "host"], work)
    assert proc.returncode == 1
    assert "live failure 7" in proc.stdout + proc.stderr and "task_error" in proc.stdout + proc.stderr
    (row,) = rows(work)
    assert (row["state"], row["reason"]) == ("failed", "task_error")
    assert history(row["job_id"])["ExitCode"] == 1


def test_held_job_is_reported_and_failed_after_held_timeout(work: Path) -> None:
    proc = cli(["run", "tasks.py", "Held", "--runtime", "host"], work)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert "held" in output and "HoldReasonCode 3" in output
    (row,) = rows(work)
    assert row["state"] == "failed"
    assert history(row["job_id"])["JobStatus"] == 3  # removed by held_action = fail


def test_ctrl_c_removes_the_jobs(work: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "containerbatch",
            "run",
            "tasks.py",
            "Nap",
            "--runtime",
            "host",
            "--batch-system",
            "htcondor",
        ],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((work / ".containerbatch" / "journal.sqlite").exists() and rows(work)):
            time.sleep(1)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "cancelled 1 job(s)" in err
    (row,) = rows(work)
    assert row["state"] == "cancelled"
    assert history(row["job_id"])["JobStatus"] == 3


@pytest.mark.skipif(not shutil.which("apptainer"), reason="no apptainer on this HTCondor node image")
def test_transfer_files_without_shared_filesystem(work: Path) -> None:
    image = os.environ.get("CB_HTCONDOR_LIVE_IMAGE", "docker://python:3.11-slim")
    proc = cli(["run", "tasks.py", "Staged", "--runtime", "apptainer", "--image", image], work, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    seen = json.loads((work / "results" / "staged.json").read_text())
    assert seen == {"calib": "calibration 2.5\n", "scratch": str(work)}
    (row,) = rows(work)
    assert (Path(row["job_dir"]) / "stage-out.tar.gz").is_file()
