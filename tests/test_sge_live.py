"""Grid Engine live: the contract kit against the one-node Grid Engine 8.1.9 of ci/sge (marker ``sge``).

The cell runs in a container (``bash ci/sge/setup.sh``); ci/sge/bin holds qsub, qstat, qacct, qdel,
qhold, qrls and qmod wrappers that run the real commands in it as the tests' uid (the job user: the
job folder's private files are the submitter's).  /tmp and the checkout are shared at the same paths.
Jobs use the container's python3 with the runner bundle bound.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from containerbatch.testing import Harness, SchedulerContract
from tests.conftest import ROOT

SGE_BIN = ROOT / "ci" / "sge" / "bin"

pytestmark = pytest.mark.sge

TASKS = """
import time

import luigi


class Slow(luigi.Task):
    name = luigi.Parameter()
    resources = {"walltime": "3s"}

    def output(self):
        return luigi.LocalTarget(f"results/{self.name}.txt")

    def run(self):
        time.sleep(60)
        with self.output().open("w") as handle:
            handle.write(self.name)


class Wide(luigi.Task):
    resources = {"cpus": 2, "memory": "1GB"}

    def output(self):
        return luigi.LocalTarget("results/wide.txt")

    def run(self):
        import os
        with self.output().open("w") as handle:
            handle.write(os.environ.get("NSLOTS", "") + " " + os.environ.get("PE", ""))
"""


class TestSGE(SchedulerContract):
    scheduler = "sge"
    settings = {"bundle": "always", "executable": ["python3"]}  # the cell's python3, luigi from the bundle
    job_timeout = 90.0

    def environment(self, tmp_path: Path) -> dict[str, str]:
        return {"PATH": f"{SGE_BIN}:{os.environ['PATH']}"}


@pytest.fixture
def sge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with TestSGE().harness(tmp_path, monkeypatch) as harness:
        yield harness


def attempts(root: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(root / ".containerbatch" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts ORDER BY attempt").fetchall()


def test_walltime_is_classified_and_doubled(sge: Harness):
    """h_rt exceeded (qacct failed 37, exit 137) is a walltime failure; the next attempt gets twice the time."""
    (sge.root / "tasks.py").write_text(TASKS)
    proc = sge.cli(
        ["run", str(sge.root / "tasks.py"), "Slow", "--name", "late", "--batch-system", "sge"],
        env={"CONTAINERBATCH_MAX_ATTEMPTS": "2", "CONTAINERBATCH_RETRY_WAIT": "0"},
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    rows = attempts(sge.root)
    assert [(r["attempt"], r["state"], r["reason"]) for r in rows] == [
        (1, "failed", "walltime"),
        (2, "failed", "walltime"),
    ]
    assert not (sge.root / "results" / "late.txt").exists()


def test_cpus_use_the_smp_environment_and_memory_is_per_slot(sge: Harness):
    (sge.root / "tasks.py").write_text(TASKS)
    proc = sge.cli(["run", str(sge.root / "tasks.py"), "Wide", "--batch-system", "sge"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (sge.root / "results" / "wide.txt").read_text() == "2 smp"
    show = sge.cli(["show", str(sge.root / "tasks.py"), "Wide", "--batch-system", "sge"])
    assert "-pe smp 2" in show.stdout and "h_vmem=477M" in show.stdout, show.stdout


@pytest.fixture
def logged(tmp_path: Path) -> tuple[str, Path]:
    """PATH with shims of the Grid Engine commands that log each call (one JSON line) before running it."""
    shims, log = tmp_path / "shims", tmp_path / "calls.log"
    shims.mkdir()
    for tool in ("qsub", "qstat", "qacct", "qdel", "qrls"):
        shim = shims / tool
        shim.write_text(
            "#!/usr/bin/env python3\n"
            "import json, os, sys\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write(json.dumps([{tool!r}, *sys.argv[1:]]) + '\\n')\n"
            f"os.execv({str(SGE_BIN / tool)!r}, [{tool!r}, *sys.argv[1:]])\n"
        )
        shim.chmod(0o755)
    return f"{shims}:{SGE_BIN}:{os.environ['PATH']}", log


def logged_calls(log: Path, tool: str) -> list[list[str]]:
    import json

    return [c[1:] for c in map(json.loads, log.read_text().splitlines()) if c[0] == tool] if log.exists() else []


def test_array_is_one_qsub_and_a_failed_element_is_resubmitted_alone(sge: Harness, logged: tuple[str, Path]):
    """qsub -t 1-5; $SGE_TASK_ID picks each element's job folder; element states from one qstat -xml and
    one qacct -j per array; the failed element goes again on its own."""
    from tests.test_arrays import FLAKY

    path, log = logged
    (sge.root / "results").mkdir(exist_ok=True)
    (sge.root / "pieces.py").write_text(FLAKY)
    proc = sge.cli(
        ["run", "pieces.py", "Pieces", "--n", "5", "--workers", "10", "--batch-system", "sge"],
        env={
            "PATH": path,
            "CONTAINERBATCH_MAX_ARRAY_SIZE": "100",
            "CONTAINERBATCH_RETRY_ON": '["task_error"]',
            "CONTAINERBATCH_MAX_ATTEMPTS": "2",
            "CONTAINERBATCH_RETRY_WAIT": "0",
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (sge.root / "results").glob("piece_*.txt")) == [f"piece_{i}.txt" for i in range(5)]
    submits = logged_calls(log, "qsub")
    assert len(submits) == 3, submits  # the array, the resubmitted element, Pieces
    assert submits[0][-3:-1] == ["-t", "1-5"] and submits[0][-1].endswith("/array.sh")
    rows = attempts(sge.root)
    first = [r for r in rows if r["attempt"] == 1 and r["task_family"] == "Piece"]
    numbers = {r["job_id"].split(".")[0] for r in first}
    assert len(numbers) == 1 and sorted(int(r["job_id"].split(".")[1]) for r in first) == [1, 2, 3, 4, 5]
    again = [r for r in rows if r["attempt"] == 2]
    assert len(again) == 1 and again[0]["task_id"].startswith("Piece_2_") and again[0]["state"] == "done"
    assert "." not in again[0]["job_id"]  # resubmitted alone, as a plain job
    (number,) = numbers
    asked = [c for c in logged_calls(log, "qacct") if c[1].split(".")[0] == number]
    assert asked and all(c == ["-j", number] for c in asked)  # whole array per call, never per element
    assert all(c == ["-xml"] for c in logged_calls(log, "qstat"))


NAPS = """
import time
import luigi

class Nap(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.i}.txt")

    def run(self):
        time.sleep(120)

class Naps(luigi.Task):
    def requires(self):
        return [Nap(i=i) for i in range(4)]

    def output(self):
        return luigi.LocalTarget("results/naps.txt")

    def run(self):
        pass
"""


def test_sigterm_cancels_an_array_with_one_qdel(sge: Harness, logged: tuple[str, Path]):
    import signal
    import subprocess
    import sys
    import time

    path, log = logged
    (sge.root / "naps.py").write_text(NAPS)
    env = {**sge.env, "PATH": path, "CONTAINERBATCH_MAX_ARRAY_SIZE": "10"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "containerbatch", "run", "naps.py", "Naps", "--workers", "5", "--batch-system", "sge"],
        cwd=sge.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def running() -> list[str]:
        try:
            ids = [r["job_id"] for r in attempts(sge.root) if r["job_id"]]
        except sqlite3.Error:
            return []
        if len(ids) != 4:
            return []
        out = subprocess.run([str(SGE_BIN / "qstat")], capture_output=True, text=True, timeout=30).stdout
        number = ids[0].split(".")[0]
        return ids if any(line.split()[:1] == [number] and " r " in line for line in out.splitlines()) else []

    ids: list[str] = []
    try:
        deadline = time.time() + 120
        while not ids and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            ids = running()
        assert ids, "the array did not start"
        number = ids[0].split(".")[0]
        assert sorted(ids) == [f"{number}.{i}" for i in range(1, 5)]
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
        if ids:  # a failed test leaves no job behind
            subprocess.run([str(SGE_BIN / "qdel"), ids[0].split(".")[0]], capture_output=True, timeout=60)
    assert logged_calls(log, "qdel") == [[f"{number}.1-4"]], err
    assert "cancelled 4 job" in err, err
    deadline = time.time() + 30
    while time.time() < deadline:
        out = subprocess.run([str(SGE_BIN / "qstat")], capture_output=True, text=True, timeout=30).stdout
        if not any(line.split()[:1] == [number] for line in out.splitlines()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"array {number} still in qstat:\n{out}")
