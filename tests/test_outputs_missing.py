"""No workflow "succeeds" while its outputs are missing on the submit host.

After a job reports success, luigi's own completeness check decides; a task whose dynamic requirements
never become complete for it is stopped after a few rounds; a crash by signal is the task's failure.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, ROOT, run_cli

#: fail fast here; the default (10 s) gives slow network filesystems time
QUICK = {"CONTAINERBATCH_OUTPUTS_WAIT": "1"}

MAIN_ONLY = """
import sys
import luigi
import containerbatch

SETTINGS = {"folder": "node-side"}


class Out(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget(f"results/{SETTINGS['folder']}/out.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write("x")


if __name__ == "__main__":
    SETTINGS["folder"] = "main-block"  # set only here: the node imports the file without running this block
    sys.exit(0 if containerbatch.process([Out()]) else 1)
"""


def summary(proc) -> dict:
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def test_success_without_outputs_is_outputs_missing_with_paths_and_hint(workdir: Path) -> None:
    (workdir / "wf.py").write_text(MAIN_ONLY)
    proc = subprocess.run(
        [sys.executable, "wf.py"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **QUICK, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "outputs_missing" in proc.stderr
    assert f"missing {workdir / 'results' / 'main-block' / 'out.txt'}" in proc.stderr
    assert '`if __name__ == "__main__":`' in proc.stderr  # the hint names the likely cause
    assert (workdir / "results" / "node-side" / "out.txt").exists()  # where the node wrote it
    journal = sqlite3.connect(workdir / ".containerbatch" / "journal.sqlite")
    rows = journal.execute("SELECT attempt, state, reason FROM attempts").fetchall()
    assert rows == [(1, "failed", "outputs_missing")]  # failed at once, not resubmitted


WRITES_ELSEWHERE = """
import luigi

class Out(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget("results/out.txt")

    def run(self):
        with open("results-typo.txt", "w") as f:
            f.write("x")
"""


def test_a_job_that_writes_nothing_fails_at_once(workdir: Path) -> None:
    (workdir / "wf.py").write_text(WRITES_ELSEWHERE)
    proc = run_cli(["run", "wf.py", "Out", "--json", "--no-progress"], workdir, env=QUICK)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (task,) = summary(proc)["tasks"]
    assert task["reasons"] == ["outputs_missing"]
    assert task["attempt"] == 1
    assert str(workdir / "results" / "out.txt") in proc.stderr
    assert "Possible causes" in proc.stderr
    assert (workdir / "results").is_dir()  # the runner made the output's folder before run()


OUTSIDE = """
import luigi

class Outside(luigi.Task):
    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(self.path)

    def run(self):
        with self.output().open("w") as f:
            f.write("lost in the container")
"""


@pytest.mark.docker
def test_outputs_outside_the_binds_warned_in_preflight_and_fail_in_docker(workdir: Path) -> None:
    (workdir / "wf.py").write_text(OUTSIDE)
    target = f"/tmp/b2luigi-outside-{uuid.uuid4().hex[:8]}/bar.txt"
    proc = run_cli(
        ["run", "wf.py", "Outside", "--path", target, "--image", DEMO_IMAGE, "--json", "--no-progress"],
        workdir,
        env={"CONTAINERBATCH_DOCKER_BINARY": "/usr/bin/docker", **QUICK},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "outside the folders bound into its container" in proc.stderr  # preflight warning
    (task,) = summary(proc)["tasks"]
    assert task["reasons"] == ["outputs_missing"]
    assert f"missing {target}" in proc.stderr
    assert "lie outside the folders bound into the container" in proc.stderr
    assert not Path(target).exists()


LATE = """
import subprocess
import luigi

class Late(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget("results/late.txt")

    def run(self):
        # the output shows up on the submit host only after the job ended (as on a slow network filesystem)
        subprocess.Popen(["sh", "-c", "sleep 3; echo x > results/late.txt"], start_new_session=True)
"""


def test_outputs_that_arrive_late_are_waited_for(workdir: Path) -> None:
    (workdir / "wf.py").write_text(LATE)
    proc = run_cli(
        ["run", "wf.py", "Late", "--json", "--no-progress"], workdir, env={"CONTAINERBATCH_OUTPUTS_WAIT": "30"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (task,) = summary(proc)["tasks"]
    assert task["outcome"] == "DONE" and task["reasons"] == []


SEGFAULT = """
import os
import luigi

class Crash(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget("results/crash.txt")

    def run(self):
        os.kill(os.getpid(), 11)
"""


def test_a_crash_by_signal_is_a_task_failure_not_lost(workdir: Path) -> None:
    (workdir / "wf.py").write_text(SEGFAULT)
    proc = run_cli(["run", "wf.py", "Crash", "--json", "--no-progress"], workdir)
    assert proc.returncode == 1
    (task,) = summary(proc)["tasks"]
    assert task["reasons"] == ["task_error"] and task["attempt"] == 1
    assert "SIGSEGV" in proc.stderr


STALE_DYNAMIC = """
import sys
import luigi

class Dep(luigi.Task):
    runtime = "host"

    def complete(self):
        # complete on the submit host, never inside the job (as outputs the node cannot see)
        main_spec = getattr(sys.modules["__main__"], "__spec__", None)
        return getattr(main_spec, "name", "") != "containerbatch.runner"

    def run(self):
        pass


class Parent(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget("results/parent.txt")

    def run(self):
        yield Dep()
        with self.output().open("w") as f:
            f.write("x")
"""


def test_dynamic_requirements_that_never_become_complete_are_stopped(workdir: Path) -> None:
    (workdir / "wf.py").write_text(STALE_DYNAMIC)
    proc = run_cli(["run", "wf.py", "Parent", "--json", "--no-progress"], workdir, timeout=240)
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = summary(proc)
    rounds = sorted((t for t in doc["tasks"] if t["task_id"].startswith("Parent")), key=lambda t: t["attempt"])
    assert [t["attempt"] for t in rounds] == [1, 2, 3]
    assert rounds[-1]["reasons"] == ["outputs_missing"] and rounds[-1]["outcome"] == "FAILED"
    assert "asked 3 times in a row" in proc.stderr
    results = list((workdir / "logs" / "Parent").rglob("result.json"))
    assert len(results) == 3  # three rounds, not forever


RAISING_COMPLETE = """
import luigi

class Broken(luigi.Task):
    runtime = "host"

    def complete(self):
        raise RuntimeError("cannot reach the storage")


class Top(luigi.WrapperTask):
    def requires(self):
        return Broken()
"""


def test_complete_raising_is_luigis_clean_failure(workdir: Path) -> None:
    (workdir / "wf.py").write_text(RAISING_COMPLETE)
    proc = run_cli(["run", "wf.py", "Top", "--no-progress"], workdir)
    assert proc.returncode == 1
    assert "cannot reach the storage" in proc.stderr
    assert "Traceback" not in proc.stderr.split("cannot reach the storage")[0][-400:]
