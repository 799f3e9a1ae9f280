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
