"""From inside a Docker container: the read-only binds really are read-only, secrets travel in a file only
the user can read (never on a command line), and what the task makes follows the submitting user's umask.

The attacker is the task's code in cb-demo:latest: it tries to rewrite the workflow file and the runner
bundle (both bound read-only, inside the read-write working directory) and reports what happened.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE
from tests.hostile.conftest import SUBMIT_SIDE_FRAME, rows

pytestmark = pytest.mark.docker

SECRET = "hunter2-" + os.urandom(6).hex()

WORKFLOW = """
import json
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


def attempt_write(path):
    try:
        with open(path, "a") as handle:
            handle.write("# rewritten from inside the container\\\\n")
        return "written"
    except OSError as exc:
        return exc.strerror


class Inside(luigi.Task):
    image = %(image)r
    env = {"SECRET": %(secret)r}

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "inside.json"))

    def run(self):
        bundle = os.environ["PYTHONPATH"].split(":")[0]
        mask = os.umask(0)
        os.umask(mask)
        report = {
            "workflow": attempt_write(os.path.abspath(__file__)),
            "bundle": attempt_write(os.path.join(bundle, "containerbatch", "runner.py")),
            "new_in_bundle": attempt_write(os.path.join(bundle, "planted.py")),
            "secret": os.environ.get("SECRET"),
            "umask": oct(mask),
        }
        os.makedirs(os.path.dirname(self.output().path), exist_ok=True)
        with open(self.output().path + ".tmp", "w") as handle:
            json.dump(report, handle)
        os.rename(self.output().path + ".tmp", self.output().path)
""" % {"image": DEMO_IMAGE, "secret": SECRET}  # noqa: UP031


def test_read_only_binds_secrets_and_umask_from_inside(workdir: Path) -> None:
    (workdir / "wf.py").write_text(WORKFLOW)
    workflow_before = (workdir / "wf.py").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "containerbatch", "run", "wf.py", "Inside", "--no-progress"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(0o077),  # noqa: PLW1509 - the user's umask is the point
    )
    assert SUBMIT_SIDE_FRAME.search(proc.stderr) is None, proc.stderr[-4000:]
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((workdir / "results" / "inside.json").read_text())
    assert report["workflow"] == "Read-only file system", report
    assert report["bundle"] == "Read-only file system", report
    assert report["new_in_bundle"] == "Read-only file system", report
    assert (workdir / "wf.py").read_bytes() == workflow_before
    # the secret reached the task, through a 0600 file: not in job.sh, not in the container command
    assert report["secret"] == SECRET
    (row,) = rows(workdir)
    job_dir = Path(row["job_dir"])
    for name in ("job.sh", "task.json", "stdout", "stderr"):
        assert SECRET not in (job_dir / name).read_text(), name
    holders = [p for p in job_dir.iterdir() if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert holders and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in holders), holders
    shown = subprocess.run(
        [sys.executable, "-m", "containerbatch", "show", "wf.py", "Inside", "--json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "--env-file" in shown.stdout and SECRET not in shown.stdout, shown.stdout
    # modes follow the umask (077): job.sh, the job folder, and what the task made in its container
    assert report["umask"] == "0o77"
    assert stat.S_IMODE((job_dir / "job.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((workdir / "results" / "inside.json").stat().st_mode) == 0o600
