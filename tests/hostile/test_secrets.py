"""Secrets in ``env`` on HTCondor: never in the submit description or the job's ClassAd, only in the 0600 env file.

Anyone who can run ``condor_q -l`` sees a job's ClassAd (``Environment`` included), and job.sub lies in the
job folder; the values must travel in the job folder's env.sh (mode 0600) that job.sh sources on the node,
and with ``transfer_files`` inside stage-in.tar.gz (mode 0600 too).  Checked from outside: the task sees the
value, and no file or ad readable by others holds it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from containerbatch.jobfiles import ENV_FILE
from tests.conftest import DEMO_IMAGE, FAKES_BIN, live_env
from tests.hostile.conftest import cb

SECRET = "s3cr3t value; $(touch pwned) 'q' \"dq\" `touch pwned2` \\"

WORKFLOW = """
import os
import luigi


class Leak(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/seen.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(os.environ.get("CB_SECRET", "<unset>"))
"""


@pytest.mark.parametrize(
    ("runtime", "staged"),
    [
        pytest.param("host", False, id="host"),
        pytest.param("docker", False, marks=pytest.mark.docker, id="docker"),
        pytest.param("docker", True, marks=pytest.mark.docker, id="docker-transfer_files"),
        pytest.param("host-live", False, marks=pytest.mark.htcondor_live, id="host-live-pool"),
    ],
)
def test_htcondor_env_values_travel_only_in_the_private_env_file(
    workdir: Path, fake_schedulers: Path, runtime: str, staged: bool
) -> None:
    live = runtime == "host-live"
    runtime = runtime.removesuffix("-live")
    env = {}
    if live:  # the real pool (ci/htcondor): its jobs run as the pool's user, with the node's python3 and the bundle
        workdir.chmod(0o777)
        env = {
            "PATH": live_env()["PATH"],
            "CONTAINERBATCH_EXECUTABLE": '["python3"]',
            "CONTAINERBATCH_BUNDLE": "always",
        }
    (workdir / "wf.py").write_text(WORKFLOW)
    # (docker's --env-file cannot carry a line break: refused before submission, tested elsewhere)
    secret = SECRET + ("" if runtime == "docker" else "\nsecond line")
    settings: dict[str, object] = {
        "batch_system": "htcondor",
        "runtime": runtime,
        "env": {"CB_SECRET": secret},
        "poll_interval": 1,
    }
    if runtime == "docker":
        settings["image"] = DEMO_IMAGE
    if staged:
        settings["transfer_files"] = True
    (workdir / "settings.json").write_text(json.dumps(settings))
    try:
        proc = cb(workdir, "run", "wf.py", "Leak", "--no-progress", env=env)
    finally:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (workdir / "results" / "seen.txt").read_text() == secret  # the task got it, intact
    assert not list(workdir.rglob("pwned*"))

    (job_dir,) = [p.parent for p in (workdir / "logs").rglob("job.sub")]
    needle = "s3cr3t"
    assert needle not in (job_dir / "job.sub").read_text()
    # the job's ClassAd (what condor_q -l / condor_history -l print to anyone)
    if live:
        said = subprocess.run(
            ["condor_history", "-l", "-match", "5"], capture_output=True, text=True, env={**os.environ, **env}
        )
        assert said.returncode == 0 and "Cmd = " in said.stdout and needle not in said.stdout
    else:
        ads = json.loads((fake_schedulers / "state.json").read_text())["condor"]["jobs"]
        assert ads and needle not in json.dumps(ads)
    # the only copies: the private env file (env.sh; Docker's --env-file) and, staged, the stage-in archive:
    # files the user alone may read
    holders, leaks = [], []
    for path in job_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if needle.encode() in data or path.name == "stage-in.tar.gz":
                holders.append(path.name)
                if path.stat().st_mode & 0o077:
                    leaks.append(path)
    assert leaks == [], leaks
    assert (ENV_FILE in holders or runtime == "docker") and holders, holders
    if staged:
        assert "stage-in.tar.gz" in holders
