"""``containerbatch show`` prints the array or group script a task went out in, found through a pointer file
in the task's job folder. That folder is the node's to write: a forged pointer must not make ``show`` print
another file of the submit host, nor hang on a FIFO put in the pointer's place."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hostile.conftest import cb

WORKFLOW = """
import luigi


class T(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/t_{self.i}.txt")
"""


def test_forged_pointers_are_not_followed(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "wf.py").write_text(WORKFLOW)
    secret = tmp_path / "private.txt"
    secret.write_text("not-for-show-7f3a\n")
    first = cb(work, "show", "wf.py", "T", "--i", "1", "--json")
    assert first.returncode == 0, first.stderr
    job_dir = Path(json.loads(first.stdout)["job_dir"])
    job_dir.mkdir(parents=True)
    # the array pointer names a file outside the run's jobs folder; the group pointer is a FIFO
    (job_dir / "array").write_text(f"{secret}\n")
    os.mkfifo(job_dir / "group")
    shown = cb(work, "show", "wf.py", "T", "--i", "1", timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "not-for-show-7f3a" not in shown.stdout + shown.stderr
    # a pointer into the jobs folder but at a file that is not a job or array script is refused too
    jobs = work / "logs" / "_cb_jobs" / "run" / "a1"
    jobs.mkdir(parents=True)
    (jobs / "notes.txt").write_text("not-a-script-5b1c\n")
    os.unlink(job_dir / "group")
    (job_dir / "array").write_text(f"{jobs / 'notes.txt'}\n")
    shown = cb(work, "show", "wf.py", "T", "--i", "1", timeout=60)
    assert shown.returncode == 0 and "not-a-script-5b1c" not in shown.stdout, shown.stdout
    # the real thing is still shown
    (jobs / "array.sh").write_text("#!/bin/bash\n# the array script 9e2d\n")
    (job_dir / "array").write_text(f"{jobs / 'array.sh'}\n")
    shown = cb(work, "show", "wf.py", "T", "--i", "1", timeout=60)
    assert shown.returncode == 0 and "the array script 9e2d" in shown.stdout, shown.stdout
