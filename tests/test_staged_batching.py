"""Staged tasks (HTCondor ``transfer_files``, no shared filesystem) in arrays and in jobs of several tasks,
through the HTCondor fake: each element brings its own archive in; each task's outputs come back to it
alone (``cb_out_I.tar.gz`` remapped into its job folder), and each task keeps its own marker."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from containerbatch.jobscript import STAGE_IN, STAGE_OUT
from tests.conftest import DEMO_IMAGE, FAKES_BIN, run_cli

pytestmark = pytest.mark.docker

WORKFLOW = """
import luigi


class Make(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/make_{self.n}.txt")

    def run(self):
        calib = open("data/calib.txt").read().strip()
        with self.output().open("w") as handle:
            handle.write(f"{self.n * 10} {calib}")


class All(luigi.WrapperTask):
    def requires(self):
        return [Make(n=n) for n in range(6)]
"""


def rows(work: Path) -> list[dict[str, object]]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM attempts WHERE task_family = 'Make'")]


@pytest.mark.parametrize(
    ("tasks_per_job", "jobs"),
    [pytest.param(1, 6, id="array-of-single-tasks"), pytest.param(3, 2, id="array-of-groups-of-3")],
)
def test_staged_tasks_go_out_in_one_array(tasks_per_job, jobs, tmp_path, fake_schedulers):
    work = tmp_path / "work"
    work.mkdir()
    (work / "wf.py").write_text(WORKFLOW)
    (work / "data").mkdir()
    (work / "data" / "calib.txt").write_text("c7\n")
    settings = {
        "transfer_files": ["data/calib.txt"],
        "poll_interval": 1,
        "max_array_size": 100,
        "tasks_per_job": tasks_per_job,
        "batch_window": 2,
    }
    (work / "settings.json").write_text(json.dumps(settings))
    args = ["run", "wf.py", "All", "--batch-system", "htcondor", "--runtime", "docker", "--image", DEMO_IMAGE]
    try:
        proc = run_cli([*args, "--workers", "8"], cwd=work)
    finally:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert sorted(p.read_text() for p in (work / "results").glob("make_*.txt")) == [f"{n * 10} c7" for n in range(6)]

    made = rows(work)
    assert len(made) == 6 and {r["state"] for r in made} == {"done"}
    ids = [str(r["job_id"]) for r in made]
    assert len({i.split(".")[0] for i in ids}) == 1, ids  # one cluster
    assert len(set(ids)) == jobs  # one proc per job: 6 alone, or 2 of 3 tasks
    for row in made:
        job_dir = Path(str(row["job_dir"]))
        n = json.loads((job_dir / "task.json").read_text())["params"]["n"]
        assert (job_dir / "exit_code").read_text().strip() == "0"
        assert Path(str(row["marker_path"])).is_file()
        # what came back for this task: its own folder's new files and its own output, nothing of the others
        with tarfile.open(job_dir / STAGE_OUT) as tar:
            names = [n.lstrip("./") for n in tar.getnames()]
        outputs = [name for name in names if "/results/" in "/" + name]
        assert [Path(name).name for name in outputs] == [f"make_{n}.txt"], names
        assert all(name.startswith(str(job_dir).lstrip("/")) for name in names if name not in outputs), names
        if tasks_per_job > 1:  # the group's archive carried its three tasks in, once
            group = Path((job_dir / "group").read_text().strip())
            with tarfile.open(group / STAGE_IN) as tar:
                inside = tar.getnames()
            assert sum(name.endswith("/task.json") for name in inside) == 3
            assert any(name.endswith("data/calib.txt") for name in inside)
            # and the group's own archive brings back its own folder only: each task's files come back once
            with tarfile.open(group / STAGE_OUT) as tar:
                back = [name.lstrip("./") for name in tar.getnames()]
            assert back and all(name.startswith(str(group).lstrip("/")) for name in back), back
