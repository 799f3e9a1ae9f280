"""containerbatch on real one-node Slurm clusters (required when CI is set).

Two clusters (the fixture ``cluster``): the host's, from ci/slurm/setup.sh (Debian's slurm-wlm: 22.05 on
Debian 12, 24.11 on 13), and Slurm 24.11 from Debian trixie in a container (``bash ci/slurm/run.sh up``;
marker ``slurm24``), whose node has python3 and luigi but no container engine: jobs there use runtime host
with the node's python3, and the Docker test runs on the host's cluster only.

Scheduler calls are counted from the outside: a folder of shims first on PATH
logs every squeue/sacct/scontrol/sbatch/scancel call and execs the real binary.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from containerbatch.schedulers.slurm import SlurmScheduler
from tests.conftest import DEMO_IMAGE, ROOT, run_cli, slurm24_bin

TOOLS = ("squeue", "sacct", "scontrol", "sbatch", "scancel")
SHIM = """#!/bin/bash
tool=$(basename "$0")
printf '%s %s\\n' "$tool" "$*" >> "$CB_SHIM_LOG"
if [ "$tool" = squeue ] && [ -n "${CB_SHIM_SQUEUE_FAILS:-}" ]; then
    n=$(cat "$CB_SHIM_LOG.fails" 2>/dev/null || echo 0)
    if [ "$n" -lt "$CB_SHIM_SQUEUE_FAILS" ]; then
        echo $((n + 1)) > "$CB_SHIM_LOG.fails"
        echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2
        exit 1
    fi
fi
exec "$CB_SHIM_REAL/$tool" "$@"
"""
NAPS = """
import time
import luigi

class Nap(luigi.Task):
    i = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=6)

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.i}.txt")

    def run(self):
        time.sleep(self.seconds)
        with self.output().open("w") as handle:
            handle.write("ok")

class Naps(luigi.Task):
    n = luigi.IntParameter(default=4)
    seconds = luigi.FloatParameter(default=6)

    def requires(self):
        return [Nap(i=i, seconds=self.seconds) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget(f"results/naps_{self.n}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("done")
"""


@dataclass
class Cluster:
    """A live Slurm cluster: where its real tools are, and the settings of runs whose jobs go there."""

    name: str
    bin: Path
    env: dict[str, str] = field(default_factory=dict)

    def tool(self, name: str) -> str:
        return str(self.bin / name)


HOST = Cluster("host", Path("/usr/bin"))


def container_cluster() -> Cluster:
    """Slurm 24.11 of ci/slurm/run.sh: its node runs the runner with its own python3 (and luigi)."""
    return Cluster("24.11", slurm24_bin(), {"CONTAINERBATCH_EXECUTABLE": '["python3"]'})


@pytest.fixture(
    params=[
        pytest.param("host", marks=pytest.mark.slurm),
        pytest.param("24.11", marks=pytest.mark.slurm24),
    ]
)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return HOST if request.param == "host" else container_cluster()


@pytest.fixture
def shims(tmp_path: Path, cluster: Cluster) -> tuple[dict[str, str], Path]:
    folder = tmp_path / "shims"
    folder.mkdir()
    for tool in TOOLS:
        (folder / tool).write_text(SHIM)
        (folder / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{folder}:{os.environ['PATH']}",
        "CB_SHIM_LOG": str(log),
        "CONTAINERBATCH_POLL_INTERVAL": "2",
        "CONTAINERBATCH_BATCH_SYSTEM": "slurm",
        "CB_SHIM_REAL": str(cluster.bin),
        **cluster.env,
    }
    return env, log


def calls(log: Path, tool: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split()[1:] for line in log.read_text().splitlines() if line.split()[0] == tool]


def journal_ids(work: Path) -> list[str]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        rows = db.execute("SELECT job_id FROM attempts WHERE scheduler = 'slurm' AND job_id IS NOT NULL")
        return [r[0] for r in rows]


def naps(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "naps.py").write_text(NAPS)
    return work


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def slurm_state(job_id: str, cluster: Cluster = HOST) -> str:
    out = subprocess.run([cluster.tool("scontrol"), "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")), "")


@pytest.mark.slurm
@pytest.mark.docker
@pytest.mark.parametrize("cluster", ["host"], indirect=True)  # the container's node has no docker
def test_readme_workflow_on_slurm_with_docker(tmp_path, shims):
    env, log = shims
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    proc = run_cli(
        [
            "run",
            str(ROOT / "examples" / "workflow.py"),
            "Summary",
            "--samples",
            "2",
            "--batch-system",
            "slurm",
            "--image",
            DEMO_IMAGE,
            "--workers",
            "3",
        ],
        cwd=work,
        env=env,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "results" / "summary_2.txt").read_text().startswith("2 fits")
    ids = journal_ids(work)
    assert len(ids) == 3  # Fit x2 + Summary; Simulate names batch_system = "local" itself
    sbatch = calls(log, "sbatch")
    assert len(sbatch) == 3 and all(c[0] == "--parsable" and c[-1].endswith("/job.sh") for c in sbatch), sbatch
    for job_id in ids:  # Slurm's own record (kept for MinJobAge after the end)
        assert slurm_state(job_id) == "COMPLETED", job_id
    squeue = calls(log, "squeue")
    assert len(squeue) <= elapsed / 2 + 2  # at most one call per poll, whatever the number of jobs


def test_one_squeue_call_serves_every_job(tmp_path, shims):
    env, log = shims
    work = naps(tmp_path)
    started = time.monotonic()
    proc = run_cli(["run", "naps.py", "Naps", "--n", "4", "--seconds", "8", "--workers", "4"], cwd=work, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((work / "results").glob("nap_*.txt"))) == 4
    squeue = calls(log, "squeue")
    assert squeue, "the Nap jobs run 8 s with a 2 s poll interval: squeue must have been asked"
    widest = max(len(c[c.index("-j") + 1].split(",")) for c in squeue)
    assert widest == 4, squeue  # one call asked for all four jobs
    assert len(squeue) <= elapsed / 2 + 2  # calls <= polls, not polls x jobs
    assert calls(log, "sacct") == []  # nothing left the queue without a marker
    assert calls(log, "scontrol") == []


def test_failing_status_command_is_retried_and_the_run_succeeds(tmp_path, shims):
    env, log = shims
    work = naps(tmp_path)
    env = {**env, "CB_SHIM_SQUEUE_FAILS": "3"}
    proc = run_cli(["run", "naps.py", "Naps", "--n", "2", "--seconds", "10", "--workers", "2"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (log.parent / "calls.log.fails").read_text().strip() == "3"  # the shim did fail three times
    assert len(calls(log, "squeue")) > 3  # and was asked again afterwards
    assert "status query failed" in proc.stderr


def _start(work: Path, env: dict[str, str], seconds: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "containerbatch", "run", "naps.py", "Nap", "--i", "0", "--seconds", seconds],
        cwd=work,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _running_job(work: Path, cluster: Cluster) -> str:
    def running() -> str | None:
        try:
            ids = journal_ids(work)
        except sqlite3.Error:
            return None
        return ids[0] if ids and slurm_state(ids[0], cluster) == "RUNNING" else None

    return wait_for(running, what="the job to run")


def test_job_cancelled_from_outside_fails_the_task_with_a_reason(tmp_path, shims, cluster):
    env, log = shims
    work = naps(tmp_path)
    proc = _start(work, env, "60")
    try:
        job_id = _running_job(work, cluster)
        subprocess.run([cluster.tool("scancel"), job_id], check=True)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    said = out + err  # the end summary explains the failure (stdout); warnings and errors go to stderr
    assert f"job {job_id}" in said and "failed" in said, said
    assert f"JOB {job_id} ON" in said and "CANCELLED" in said  # Slurm's own word, from the log tail
    assert slurm_state(job_id, cluster) == "CANCELLED"


def test_sigterm_of_the_submitter_cancels_its_jobs(tmp_path, shims, cluster):
    env, log = shims
    work = naps(tmp_path)
    proc = _start(work, env, "60")
    try:
        job_id = _running_job(work, cluster)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert [job_id] in calls(log, "scancel"), (log.read_text(), err)
    wait_for(lambda: slurm_state(job_id, cluster) in ("CANCELLED", ""), timeout=30, what="the job to be cancelled")
    listed = subprocess.run([cluster.tool("squeue"), "-h", "-j", job_id], capture_output=True, text=True).stdout
    assert job_id not in listed  # squeue (default: pending and running jobs) no longer lists it
    assert "cancelled 1 job" in err


def test_hostile_directive_values_reach_slurm_unchanged(tmp_path, cluster, monkeypatch):
    """Quoting of #SBATCH lines as sbatch itself reads them: a held job, read back with scontrol."""
    from containerbatch import jobscript
    from tests.test_slurm_parsers import spec

    work = tmp_path / "w 'q' \"d\" $(x) # %j ;"
    job_dir = work / "logs" / "attempt-1"
    job_dir.mkdir(parents=True)
    comment = "c 'q' \"d\" $(touch /tmp/never) # x"
    the_spec = spec(
        str(work),
        job_dir=str(job_dir),
        job_name="name with space",
        settings={"slurm_extra_args": [f"--comment={comment}", "--hold"]},
    )
    monkeypatch.setenv("PATH", f"{cluster.bin}:{os.environ['PATH']}")  # sbatch of that cluster
    sched = SlurmScheduler()
    script = jobscript.render(the_spec, ["true"], directives=sched.directives(the_spec))
    Path(the_spec.script_path).write_text(script)
    job_id = sched.submit(the_spec)
    try:
        out = subprocess.run([cluster.tool("scontrol"), "show", "job", job_id], capture_output=True, text=True).stdout
    finally:
        subprocess.run([cluster.tool("scancel"), job_id])
    assert "JobName=name_with_space" in out
    assert f"Comment={comment}" in out
    assert f"WorkDir={work}\n" in out
    assert "JobState=PENDING Reason=JobHeldUser" in out
