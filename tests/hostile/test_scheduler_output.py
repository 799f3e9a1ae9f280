"""A scheduler that prints garbage, bytes that are not UTF-8, or hangs: the submitter neither crashes nor
hammers it, healthy jobs go on, and a failed task keeps its own reason.

The scheduler is the fake LSF of tests/fakes behind a PATH shim that mangles what bjobs prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FAKES_BIN
from tests.hostile.conftest import cb, rows, shim

WORKFLOW = """
import os
import sys
import time
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Job(luigi.Task):
    name = luigi.Parameter()
    sleep = luigi.FloatParameter(default=0)
    fail = luigi.BoolParameter()
    max_attempts = 1

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", self.name))

    def run(self):
        time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("failing on purpose")
        with self.output().open("w") as handle:
            handle.write("done")


class Both(luigi.WrapperTask):
    fails = luigi.IntParameter(default=1)

    def requires(self):
        yield Job(name="healthy", sleep=4)
        for i in range(self.fails):
            yield Job(name="broken%d" % i, fail=True)
"""

MANGLE = """
out = subprocess.run([REAL, *sys.argv[1:]], capture_output=True)
sys.stdout.buffer.write(out.stdout + b"\\\\xff\\\\xfe\\\\x80 caf\\\\xe9 \\\\x00\\\\n")
sys.stderr.buffer.write(out.stderr + b"\\\\xc3\\\\x28 warning\\\\n")
sys.exit(out.returncode)
"""

GARBAGE = """
sys.stdout.buffer.write(b"\\\\x89PNG\\\\r\\\\n\\\\x1a\\\\n{[<<\\\\xff\\\\xfe JOBID STAT\\\\n\\\\x00\\\\x01")
sys.exit(0)
"""


@pytest.fixture
def lsf(workdir: Path, fake_schedulers: Path, tmp_path: Path) -> dict[str, str]:
    (workdir / "wf.py").write_text(WORKFLOW)
    return {
        "CB_FAKE_STATE": str(fake_schedulers),
        "CONTAINERBATCH_POLL_INTERVAL": "1",
        "CONTAINERBATCH_POLL_MAX_INTERVAL": "2",
    }


def _run(work: Path, env: dict[str, str], shims: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**env, "PATH": f"{shims}:{FAKES_BIN}:{os.environ['PATH']}"}
    return cb(work, "run", "wf.py", *args, "--batch-system", "lsf", "--runtime", "host", "--no-progress", env=env)


def test_non_utf8_status_output_crashes_nothing(workdir: Path, lsf: dict[str, str], tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    shim(shims, "bjobs", MANGLE)
    proc = _run(workdir, lsf, shims, "Both", "--workers", "2")
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert (workdir / "results" / "healthy").read_text() == "done"  # the healthy job was not cancelled
    states = {json.loads(r["params"])["name"]: (r["state"], r["reason"]) for r in rows(workdir)}
    assert states == {"healthy": ("done", None), "broken0": ("failed", "task_error")}, states


def test_garbage_status_output_is_not_hammered(workdir: Path, lsf: dict[str, str], tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    shim(shims, "bjobs", GARBAGE)
    shim(shims, "bhist", GARBAGE)
    proc = _run(workdir, lsf, shims, "Job", "--name", "healthy", "--sleep", "6")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (workdir / "results" / "healthy").read_text() == "done"
    calls = [float(line.split()[1]) for line in (shims / "calls").read_text().splitlines()]
    span = max(calls) - min(calls) + 1
    assert len(calls) >= 2, "the garbage was never read"
    assert len(calls) <= span / 1.0, f"{len(calls)} status calls in {span:.1f} s: no back-off"


def test_a_hanging_status_command_blocks_the_run_once_not_per_failed_job(
    workdir: Path, lsf: dict[str, str], tmp_path: Path
) -> None:
    shims = tmp_path / "shims"
    shim(shims, "bjobs", "time.sleep(60)\n")
    # the poller asks rarely (it would mark the jobs UNKNOWN, and nobody asks an unknown scheduler why):
    # the question "why did this job end" after each failure is what would block luigi's loop each time
    env = {**lsf, "CONTAINERBATCH_COMMAND_TIMEOUT": "3", "CONTAINERBATCH_POLL_INTERVAL": "60"}
    proc = _run(workdir, env, shims, "Both", "--fails", "3", "--workers", "4", "-v")
    assert proc.returncode == 1, proc.stderr[-4000:]
    asked = re.findall(r"could not ask lsf why job \d+ ended", proc.stderr)
    assert len(asked) == 1, proc.stderr[-4000:]
    states = sorted((r["state"], r["reason"]) for r in rows(workdir))
    assert states == [("done", None)] + [("failed", "task_error")] * 3, states
