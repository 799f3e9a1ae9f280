"""A task forges the files of its own job folder; the submit side believes only what it wrote itself.

The attacker is the task's code (the image or the node would do the same): it writes result.json, edits
task.json or plants a module, then leaves with ``os._exit`` so that the runner cannot write the honest
result.  Checked from outside: nothing imported (a planted module would write a sentinel), nothing moved,
the exit code, the journal's reason, no traceback, and ``status``/``report`` still work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.conftest import cb, rows, tree

PLANT = """
import json
import sys
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Attack(luigi.Task):
    runtime = "host"
    how = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "attack.txt"))

    def run(self):
        job_dir = os.environ["CONTAINERBATCH_JOB_DIR"]
        info = json.load(open(os.path.join(job_dir, "task.json")))
        result = {"task_id": info["task_id"], "attempt": info["attempt"], "status": "new_deps", "started": 1.0}
        if self.how == "planted":
            # a module next to the workflow that, once imported on the submit host, leaves a sentinel
            with open(os.path.join(HERE, "planted.py"), "w") as handle:
                handle.write(
                    "import luigi, pathlib\\n"
                    "pathlib.Path(%r).write_text('imported on the submit host')\\n"
                    "class Planted(luigi.Task):\\n    pass\\n" % os.path.join(HERE, "SENTINEL")
                )
            result["new_deps"] = [["planted", "Planted", {}]]
        elif self.how == "unknown_family":
            result["new_deps"] = [["luigi", "NoSuchTask", {}]]
        elif self.how == "foreign_family":  # a task of an imported module, named under another module
            result["new_deps"] = [["os", "Attack", {"how": "x"}]]
        elif self.how == "bad_params":
            result["new_deps"] = [[__name__, "Attack", {"nope": "1"}]]
        with open(os.path.join(job_dir, "result.json"), "w") as handle:
            json.dump(result, handle)
        os._exit(0)


class All(luigi.WrapperTask):
    hows = luigi.ListParameter()

    def requires(self):
        return [Attack(how=how) for how in self.hows]
"""


NEW_DEPS = ["planted", "unknown_family", "foreign_family", "bad_params"]


def test_new_deps_never_import_or_build_what_the_node_names(workdir: Path) -> None:
    (workdir / "wf.py").write_text(PLANT)
    proc = cb(workdir, "run", "wf.py", "All", "--hows", json.dumps(NEW_DEPS), "--workers", "4", "--no-progress")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert not (workdir / "SENTINEL").exists(), "the planted module was imported on the submit host"
    found = {json.loads(r["params"])["how"]: (r["state"], r["reason"]) for r in rows(workdir)}
    assert found == dict.fromkeys(NEW_DEPS, ("failed", "bad_result"))
    assert "planted" in proc.stderr and "never imports" in proc.stderr


FORGE = """
import json
import sys
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Forge(luigi.Task):
    runtime = "host"
    how = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "forge.txt"))

    def run(self):
        job_dir = os.environ["CONTAINERBATCH_JOB_DIR"]
        info = json.load(open(os.path.join(job_dir, "task.json")))
        path = os.path.join(job_dir, "result.json")
        ok = {"task_id": info["task_id"], "attempt": info["attempt"], "status": "success"}
        if self.how == "string_time":
            json.dump(dict(ok, started="yesterday", finished="today"), open(path, "w"))
        elif self.how == "list":
            json.dump([ok], open(path, "w"))
        elif self.how == "bad_status":
            json.dump(dict(ok, status=["success"]), open(path, "w"))
        elif self.how == "other_task":
            json.dump(dict(ok, task_id="Someone_else_123"), open(path, "w"))
        elif self.how == "huge_number":
            text = '{"task_id": %s, "status": "success", "started": 1e999}' % json.dumps(info["task_id"])
            open(path, "w").write(text)
        elif self.how == "not_json":
            open(path, "wb").write(b"\\xff\\xfe{{{")
        elif self.how == "symlink":
            os.symlink("/etc/passwd", path)
        elif self.how == "fifo":
            os.mkfifo(path)
        elif self.how == "deep":
            open(path, "w").write("[" * 100000 + "]" * 100000)
        os._exit(0)


class All(luigi.WrapperTask):
    hows = luigi.ListParameter()

    def requires(self):
        return [Forge(how=how) for how in self.hows]
"""

FORGERIES = ["string_time", "list", "bad_status", "other_task", "huge_number", "not_json", "symlink", "fifo", "deep"]


def test_a_forged_result_is_the_attempts_failure_never_a_crash(workdir: Path) -> None:
    (workdir / "wf.py").write_text(FORGE)
    hows = json.dumps(FORGERIES)
    proc = cb(workdir, "run", "wf.py", "All", "--hows", hows, "--workers", "9", "--no-progress", timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    found = {json.loads(r["params"])["how"]: (r["state"], r["reason"]) for r in rows(workdir)}
    assert found == dict.fromkeys(FORGERIES, ("failed", "bad_result"))
    for row in rows(workdir):
        assert isinstance(row["started"], (float, type(None))) and isinstance(row["ended"], float)
    # what the user looks at next still works
    for args in (["status"], ["status", "--json"], ["report", "--output", str(workdir / "report.html")]):
        shown = cb(workdir, *args)
        assert shown.returncode in (0, 1), shown.stderr[-2000:]


EDIT = """
import json
import sys
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Edit(luigi.Task):
    runtime = "host"
    max_attempts = 1
    victim = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "edit.txt"))

    def run(self):
        path = os.path.join(os.environ["CONTAINERBATCH_JOB_DIR"], "task.json")
        info = json.load(open(path))
        info["absent_outputs"] = [self.victim, os.path.join(HERE, "wf.py")]
        json.dump(info, open(path, "w"))
        os.makedirs(os.path.dirname(self.output().path), exist_ok=True)
        open(self.output().path, "w").write("partial")
        os._exit(1)  # and fail: the submitter sets partial outputs aside
"""


def test_an_edited_task_file_moves_nothing_but_the_tasks_own_partial_output(workdir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("the user's file")
    (workdir / "wf.py").write_text(EDIT)
    before = tree(tmp_path / "victim")
    proc = cb(workdir, "run", "wf.py", "Edit", "--victim", str(victim), "--no-progress")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert tree(tmp_path / "victim") == before
    assert (workdir / "wf.py").exists()
    (row,) = rows(workdir)
    partial = Path(row["job_dir"]) / "partial-outputs"
    moved = sorted(str(p.relative_to(partial)) for p in partial.rglob("*") if p.is_file())
    assert moved == [str(workdir / "results" / "edit.txt").lstrip("/")]  # only the task's own output
    assert not (workdir / "results" / "edit.txt").exists()


SLOW = """
import os
import time
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Slow(luigi.Task):
    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "slow.txt"))

    def run(self):
        time.sleep(3)
        with open(os.path.join(HERE, "runs.log"), "a") as handle:
            handle.write("ran\\n")
        with self.output().open("w") as handle:
            handle.write("done")
"""


@pytest.mark.parametrize("journaled", ["submitting", "suspended"])
def test_a_submitter_killed_between_submit_and_journal_does_not_run_the_task_twice(
    workdir: Path, journaled: str
) -> None:
    """The journal has the attempt as `submitting` (intent written, job id never learnt), or as `suspended`
    (the scheduler had suspended the job), and its job runs: the next submitter follows that job instead
    of submitting a second one."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    (workdir / "wf.py").write_text(SLOW)
    first = subprocess.Popen(
        [sys.executable, "-m", "containerbatch", "run", "wf.py", "Slow", "--runtime", "host", "--no-progress"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = workdir / ".containerbatch" / "journal.sqlite"
    deadline = time.time() + 60

    def submitted() -> bool:
        try:
            return journal.exists() and any(r["job_id"] for r in rows(workdir))
        except sqlite3.Error:  # the journal is being created
            return False

    while time.time() < deadline and not submitted():
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # the job (its own session) lives on
    first.wait()
    # what the journal holds when the SIGKILL lands between the scheduler's answer and the journal write
    db = sqlite3.connect(journal)
    if journaled == "submitting":
        db.execute("UPDATE attempts SET state = 'submitting', job_id = NULL")
    else:
        db.execute("UPDATE attempts SET state = 'suspended'")
    db.commit()
    db.close()
    proc = cb(workdir, "run", "wf.py", "Slow", "--runtime", "host", "--no-progress", "-v")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "runs.log").read_text() == "ran\n"  # once
    assert [(r["attempt"], r["state"]) for r in rows(workdir)] == [(1, "done")]
    assert ("adopted job" if journaled == "submitting" else "re-attached") in proc.stderr


LINKS = """
import os
import sys
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Links(luigi.Task):
    victim = luigi.Parameter()
    retry_wait = 0
    max_attempts = 2

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "links.txt"))

    def run(self):
        job_dir = os.environ["CONTAINERBATCH_JOB_DIR"]
        # where the submitter will set partial outputs aside, and where it will write the next attempt
        os.symlink(os.path.join(self.victim, "a"), os.path.join(job_dir, "partial-outputs"))
        os.symlink(os.path.join(self.victim, "b"), os.path.join(os.path.dirname(job_dir), "attempt-2"))
        os.makedirs(os.path.dirname(self.output().path), exist_ok=True)
        open(self.output().path, "w").write("partial")
        os._exit(1)  # no result: lost, which is resubmitted
"""


def test_links_left_in_the_job_folder_are_never_written_through(workdir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    for sub in ("a", "b"):
        (victim / sub).mkdir(parents=True)
        (victim / sub / "keep.txt").write_text("the user's")
    before = tree(victim)
    (workdir / "wf.py").write_text(LINKS)
    proc = cb(workdir, "run", "wf.py", "Links", "--victim", str(victim), "--runtime", "host", "--no-progress", "-v")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert tree(victim) == before  # nothing moved into, or written through, the links
    assert "does not write through it" in proc.stderr


FLOAT = """
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Fl(luigi.Task):
    runtime = "host"
    x = luigi.FloatParameter(default=0)

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "fl.txt"))

    def run(self):
        with self.output().open("w") as handle:
            handle.write(repr(self.x))
"""


def test_float_parameter_default_zero_round_trips_to_the_node(workdir: Path) -> None:
    """0 on the submit host, 0.0 parsed on the node: the same task, not "the workflow file changed"."""
    (workdir / "wf.py").write_text(FLOAT)
    proc = cb(workdir, "run", "wf.py", "Fl", "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (workdir / "results" / "fl.txt").read_text() == "0.0"
