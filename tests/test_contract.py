"""The contract kit (containerbatch.testing) run against every built-in scheduler.

local runs as is; LSF and HTCondor through the fakes (tests/fakes); Slurm live, the host's (marker ``slurm``)
and 24.11 in a container (marker ``slurm24``, ``bash ci/slurm/run.sh up``); Grid Engine live in
tests/test_sge_live.py; an out-of-tree plugin in tests/test_plugin_example.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from containerbatch.testing import Harness, SchedulerContract
from tests.conftest import DEMO_IMAGE, FAKES_BIN, run_cli, slurm24_bin

DOCKER = pytest.param(("docker", ["--image", DEMO_IMAGE]), id="docker", marks=pytest.mark.docker)


def calls(state: Path) -> list[dict]:
    log = state / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class FakeContract(SchedulerContract):
    """A scheduler whose commands are the fakes in tests/fakes/bin (shared state per test)."""

    status_tool = ""
    runtimes = ("host", DOCKER)
    workflow_env = {"CB_FAKE_PEND_SECONDS": "2"}  # the two Work jobs are in flight together

    def environment(self, tmp_path: Path) -> dict[str, str]:
        state = tmp_path / "fake-state"
        state.mkdir(exist_ok=True)
        return {"CB_FAKE_STATE": str(state), "PATH": f"{FAKES_BIN}:{os.environ['PATH']}"}

    def status_calls(self, harness: Harness) -> list[list[str]] | None:
        return [c["argv"] for c in calls(Path(harness.env["CB_FAKE_STATE"])) if c["tool"] == self.status_tool]

    def cleanup(self, harness: Harness) -> None:
        subprocess.run(
            [str(FAKES_BIN / "fakesched-fault"), "cleanup"],
            capture_output=True,
            timeout=60,
            env=harness.env,
        )


class TestLocal(SchedulerContract):
    scheduler = "local"
    runtimes = ("host", DOCKER)


class TestLSF(FakeContract):
    scheduler = "lsf"
    status_tool = "bjobs"


class TestHTCondor(FakeContract):
    scheduler = "htcondor"
    status_tool = "condor_q"


@pytest.mark.slurm
class TestSlurm(SchedulerContract):
    scheduler = "slurm"
    job_timeout = 180.0


@pytest.mark.slurm24
class TestSlurm24(SchedulerContract):
    """Slurm 24.11 (Debian trixie) in a container, through the wrappers of ``ci/slurm/run.sh up``.

    Its node has python3 and luigi but no container engine: the jobs run with runtime host and the node's
    python3 (the containerbatch runner from the shared checkout); the Docker runtime is covered on the host's
    cluster (TestSlurm)."""

    scheduler = "slurm"
    settings = {"executable": ["python3"]}
    job_timeout = 180.0

    def environment(self, tmp_path: Path) -> dict[str, str]:
        return {"PATH": f"{slurm24_bin()}:{os.environ['PATH']}"}


# -- fake-specific: the status command failing, seen from the fakes' call log ------------------------
TASKS = """
import luigi


class Echo(luigi.Task):
    name = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(f"results/{self.name}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(self.name)
"""
STATUS_TOOL = {"lsf": "bjobs", "htcondor": "condor_q"}


@pytest.mark.parametrize("sched", ["lsf", "htcondor"])
def test_status_command_failing_three_times(sched, tmp_path, fake_schedulers, monkeypatch):
    monkeypatch.setenv("CONTAINERBATCH_POLL_INTERVAL", "1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "tasks.py").write_text(TASKS)
    subprocess.run(
        [str(FAKES_BIN / "fakesched-fault"), "error", STATUS_TOOL[sched], "--count", "3"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        # the job pends 5 s: the failing queries (retried after 1, 2, 4 s) all happen while it waits
        proc = run_cli(
            ["run", str(work / "tasks.py"), "Echo", "--name", "ok", "--batch-system", sched, "--runtime", "host"],
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
    assert all(re.fullmatch(r"\d+(\.\d+)?", a) or not a.isdigit() for c in status for a in c["argv"])
