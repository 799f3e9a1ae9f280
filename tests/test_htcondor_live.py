"""Live HTCondor: the real pool of ``ci/htcondor/run.sh up`` (Debian's condor and apptainer in one container).

The pool's tools are in ci/htcondor/bin (or CB_HTCONDOR_BIN); these tests put that folder first on PATH of
the containerbatch they start.  They run when CI is set (a pool that does not answer then fails them), with
CB_HTCONDOR_LIVE=1, or when the pool's bin folder exists; elsewhere they are deselected (tests/conftest.py).
Work folders are under pytest's tmp_path (in /tmp), which the pool shares at the same path.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, live_env, require

pytestmark = pytest.mark.htcondor_live

WORKFLOW = str(ROOT / "examples" / "workflow.py")

TASKS = """
import json
import os
import sys
import time
import luigi


class Nap(luigi.Task):
    seconds = luigi.IntParameter(default=60)

    def output(self):
        return luigi.LocalTarget("results/nap_%d.txt" % self.seconds)

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


class Where(luigi.Task):
    # what the task sees: the image's marker file and Python, not the node's
    def output(self):
        return luigi.LocalTarget("results/where.json")

    def run(self):
        release = "/etc/cb-demo-release"
        seen = {
            "release": open(release).read() if os.path.exists(release) else None,
            "python": list(sys.version_info[:2]),
            "flavour": os.environ.get("CB_DEMO_FLAVOUR"),
            "container": os.environ.get("APPTAINER_CONTAINER"),
        }
        with self.output().open("w") as handle:
            json.dump(seen, handle)


class Piece(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget("results/piece_%d.txt" % self.i)

    def run(self):
        with self.output().open("w") as handle:
            handle.write(str(self.i))


class Pieces(luigi.WrapperTask):
    n = luigi.IntParameter(default=4)

    def requires(self):
        return [Piece(i=i) for i in range(self.n)]


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
    require("htcondor_live")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    (folder / "data").mkdir()
    (folder / "data" / "calib.txt").write_text("calibration 2.5\n")
    return folder


def rows(work: Path) -> list[sqlite3.Row]:
    path = work / ".containerbatch" / "journal.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts ORDER BY task_id, attempt").fetchall()


def condor(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=live_env())


def history(job_id: str) -> dict:
    for _ in range(60):  # the schedd writes the history a moment after the job leaves the queue
        out = condor("condor_history", "-json", "-match", "1", job_id)
        if out.returncode == 0 and out.stdout.strip():
            return json.loads(out.stdout)[0]
        time.sleep(1)
    raise AssertionError(f"job {job_id} is not in condor_history")


def queue_status(job_id: str) -> int | None:
    out = condor("condor_q", "-json", "-attributes", "JobStatus", job_id)
    return json.loads(out.stdout)[0]["JobStatus"] if out.returncode == 0 and out.stdout.strip() else None


# runtime host runs the runner on the node: its python3 (Debian's, without luigi) with the bundle, not this
# host's interpreter (whose path the node does not have)
ENV = {
    "CONTAINERBATCH_POLL_INTERVAL": "1",
    "CONTAINERBATCH_MARKER_INTERVAL": "1",
    "CONTAINERBATCH_EXECUTABLE": '["python3"]',
    "CONTAINERBATCH_BUNDLE": "always",
}


def cli(
    args: list[str], work: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "containerbatch", *args, "--batch-system", "htcondor"],
        cwd=work,
        env={**live_env(), **ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(args: list[str], work: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "containerbatch", *args, "--batch-system", "htcondor", "--no-progress"],
        cwd=work,
        env={**live_env(), **ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 180, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def running_job(work: Path) -> str:
    def job() -> str | None:
        found = [r for r in rows(work) if r["scheduler"] == "htcondor" and r["job_id"]]
        return found[-1]["job_id"] if found and queue_status(found[-1]["job_id"]) == 2 else None

    return wait_for(job, what="a running HTCondor job")


def said(work: Path, *streams: str) -> str:
    """What a run told the user: its output and its run logs (luigi's and containerbatch's records go to
    .containerbatch/runs/*/run.log)."""
    logs = "".join(p.read_text() for p in sorted(work.glob(".containerbatch/runs/*/run.log")))
    return "".join(streams) + logs


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


# -- the README example, in every container mode ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["wrap", "universe", "attribute"])
def test_readme_example_in_each_container_mode(work: Path, live_sif: Path, mode: str) -> None:
    env = {"CONTAINERBATCH_HTCONDOR_CONTAINER_MODE": mode}
    args = ["--runtime", "apptainer", "--image", str(live_sif)]
    proc = cli(["run", WORKFLOW, "Summary", "--samples", "3", *args], work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert (work / "results" / "summary_3.txt").read_text() == "3 fits, mean of means 4.50\n"
    condor_rows = [r for r in rows(work) if r["scheduler"] == "htcondor"]
    assert len(condor_rows) == 4  # 3 Fit + Summary (Simulate runs locally: batch_system local in the example)
    for row in condor_rows:
        assert row["state"] == "done"
        ad = history(row["job_id"])
        assert (ad["JobStatus"], ad.get("ExitCode")) == (4, 0)
        # container universe is vanilla (5) with WantContainer and ContainerImage in the job ad
        assert (ad["JobUniverse"], ad.get("WantContainer", False)) == (5, mode == "universe")
        assert ad.get("ContainerImage" if mode == "universe" else "SingularityImage") == (
            None if mode == "wrap" else str(live_sif)
        )
    # the task ran inside the image (its marker file and Python 3.11), not on the node (Debian sid/trixie)
    proc = cli(["run", "tasks.py", "Where", *args], work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    seen = json.loads((work / "results" / "where.json").read_text())
    assert seen["release"] == "built from images/demo/Dockerfile\n"
    assert seen["python"] == [3, 11] and seen["flavour"] == "extended"
    assert seen["container"] == str(live_sif)


def test_container_modes_refused_when_no_slot_can_start_the_image(work: Path, live_sif: Path) -> None:
    # a pool whose slots lack HasSingularity: refused before anything is submitted, naming the capability
    fake_status = work / "bin"
    fake_status.mkdir()
    (fake_status / "condor_status").write_text("#!/bin/sh\nexit 0\n")  # lists no matching slot
    (fake_status / "condor_status").chmod(0o755)
    for mode, needs in (("attribute", "SINGULARITY_JOB"), ("universe", "HasSIF")):
        proc = cli(
            ["run", "tasks.py", "Where", "--runtime", "apptainer", "--image", str(live_sif)],
            work,
            env={"PATH": f"{fake_status}:{live_env()['PATH']}", "CONTAINERBATCH_HTCONDOR_CONTAINER_MODE": mode},
        )
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "HasSingularity" in proc.stderr and needs in proc.stderr
        assert rows(work) == []


# -- failures, holds, cancellation ------------------------------------------------------------------------------


def test_failing_task_is_a_task_error_with_its_log(work: Path, live_sif: Path) -> None:
    proc = cli(["run", "tasks.py", "Boom", "--runtime", "apptainer", "--image", str(live_sif)], work)
    output = said(work, proc.stdout, proc.stderr)
    assert proc.returncode == 1
    assert "live failure 7" in output and "task_error" in output and "logs:" in output
    (row,) = rows(work)
    assert (row["state"], row["reason"]) == ("failed", "task_error")
    assert history(row["job_id"])["ExitCode"] == 1


def test_runtime_host_runs_on_the_node(work: Path) -> None:
    proc = cli(["run", WORKFLOW, "Summary", "--samples", "2", "--runtime", "host", "--workers", "3"], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert (work / "results" / "summary_2.txt").read_text() == "2 fits, mean of means 2.25\n"


def test_held_job_is_reported_and_failed_after_held_timeout(work: Path) -> None:
    proc = cli(["run", "tasks.py", "Held", "--runtime", "host"], work)
    output = said(work, proc.stdout, proc.stderr)
    assert proc.returncode == 1, output[-4000:]
    assert "held" in output and "HoldReasonCode 3" in output
    (row,) = rows(work)
    assert row["state"] == "failed"
    assert history(row["job_id"])["JobStatus"] == 3  # removed by held_action = fail


def test_hold_then_release_completes(work: Path) -> None:
    proc = start(["run", "tasks.py", "Nap", "--seconds", "8", "--runtime", "host"], work)
    try:
        job = running_job(work)
        assert condor("condor_hold", job).returncode == 0
        wait_for(lambda: queue_status(job) == 5, what="JobStatus 5 after condor_hold")
        time.sleep(3)  # containerbatch sees the hold and waits (held_timeout is unset)
        assert condor("condor_release", job).returncode == 0
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    assert "is held" in said(work, err) and "via condor_hold" in said(work, err)
    assert (work / "results" / "nap_8.txt").read_text() == "slept"
    assert history(job)["JobStatus"] == 4


def test_ctrl_c_removes_the_jobs(work: Path) -> None:
    proc = start(["run", "tasks.py", "Nap", "--runtime", "host"], work)
    job = running_job(work)
    proc.send_signal(signal.SIGINT)
    _out, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "cancelled 1 job(s)" in said(work, err)
    (row,) = rows(work)
    assert row["state"] == "cancelled"
    assert history(job)["JobStatus"] == 3


def test_job_removed_under_it_is_resubmitted(work: Path) -> None:
    # someone else's condor_rm: with cancelled among retry_on, containerbatch submits a new attempt
    env = {"CONTAINERBATCH_RETRY_ON": '["cancelled"]', "CONTAINERBATCH_MAX_ATTEMPTS": "2"}
    proc = start(["run", "tasks.py", "Nap", "--seconds", "6", "--runtime", "host"], work, env=env)
    try:
        first = running_job(work)
        assert condor("condor_rm", first).returncode == 0
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-4000:]
    attempts = rows(work)
    assert [(r["attempt"], r["state"]) for r in attempts] == [(1, "cancelled"), (2, "done")]
    assert history(first)["JobStatus"] == 3 and history(attempts[1]["job_id"])["JobStatus"] == 4


def test_reattach_after_the_submitter_was_killed(work: Path) -> None:
    proc = start(["run", "tasks.py", "Nap", "--seconds", "10", "--runtime", "host"], work)
    job = running_job(work)
    os.killpg(proc.pid, signal.SIGKILL)  # the submitter dies; the job runs on
    proc.communicate(timeout=60)
    assert queue_status(job) in (1, 2)
    again = cli(["run", "tasks.py", "Nap", "--seconds", "10", "--runtime", "host"], work)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"re-attached to htcondor job {job}" in said(work, again.stderr)
    assert [(r["attempt"], r["job_id"], r["state"]) for r in rows(work)] == [(1, job, "done")]


def test_array_is_one_cluster_on_the_real_pool(work: Path, live_sif: Path) -> None:
    env = {"CONTAINERBATCH_MAX_ARRAY_SIZE": "100"}
    args = ["run", "tasks.py", "Pieces", "--n", "4", "--workers", "8", "--runtime", "apptainer", "--image"]
    proc = cli([*args, str(live_sif)], work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + said(work, proc.stderr)[-4000:]
    assert sorted(p.read_text() for p in (work / "results").glob("piece_*.txt")) == ["0", "1", "2", "3"]
    ids = [r["job_id"] for r in rows(work) if r["task_family"] == "Piece"]
    assert len({i.split(".")[0] for i in ids}) == 1 and sorted(i.split(".")[1] for i in ids) == ["0", "1", "2", "3"]
    for job in ids:
        assert (history(job)["JobStatus"], history(job)["ExitCode"]) == (4, 0)


# -- no shared filesystem ---------------------------------------------------------------------------------------


def test_transfer_files_without_shared_filesystem(work: Path, live_sif: Path) -> None:
    proc = cli(["run", "tasks.py", "Staged", "--runtime", "apptainer", "--image", str(live_sif)], work, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    seen = json.loads((work / "results" / "staged.json").read_text())
    assert seen == {"calib": "calibration 2.5\n", "scratch": str(work)}
    (row,) = rows(work)
    assert (Path(row["job_dir"]) / "stage-out.tar.gz").is_file()
    ad = history(row["job_id"])
    assert ad["ShouldTransferFiles"] == "YES" and ad["ExitCode"] == 0


def test_staged_tasks_in_one_array_of_jobs_of_two_tasks(work: Path, live_sif: Path) -> None:
    env = {
        "CONTAINERBATCH_TRANSFER_FILES": "true",
        "CONTAINERBATCH_TASKS_PER_JOB": "2",
        "CONTAINERBATCH_MAX_ARRAY_SIZE": "100",
        "CONTAINERBATCH_BATCH_WINDOW": "3",
    }
    args = ["run", "tasks.py", "Pieces", "--n", "4", "--workers", "8", "--runtime", "apptainer", "--image"]
    proc = cli([*args, str(live_sif)], work, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + said(work, proc.stderr)[-4000:]
    assert sorted(p.read_text() for p in (work / "results").glob("piece_*.txt")) == ["0", "1", "2", "3"]
    pieces = [r for r in rows(work) if r["task_family"] == "Piece"]
    ids = [r["job_id"] for r in pieces]
    assert len({i.split(".")[0] for i in ids}) == 1 and len(set(ids)) == 2, ids  # one cluster, two jobs
    for row in pieces:  # each task's own archive came back into its folder
        assert (Path(row["job_dir"]) / "stage-out.tar.gz").is_file()
    for job in set(ids):
        ad = history(job)
        assert ad["ShouldTransferFiles"] == "YES" and ad["ExitCode"] == 0
