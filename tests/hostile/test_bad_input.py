"""Bad input from the trusted side, chosen to break things: a clear message and exit 2 before anything is
submitted, never a traceback; generated commands and files quote every value."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from containerbatch.errors import ConfigError
from containerbatch.schedulers.htcondor import HTCondorScheduler
from tests.conftest import FAKES_BIN
from tests.hostile.conftest import cb, rows

TASK = """
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class T(luigi.Task):
    runtime = "host"
    env = %(env)s
    resources = %(resources)s

    def output(self):
        %(output)s
        return luigi.LocalTarget(os.path.join(HERE, "results", "t.txt"))

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ran")
%(tail)s
"""


def workflow(env: str = "{}", resources: str = "{}", output: str = "pass", tail: str = "") -> str:
    return TASK % {"env": env, "resources": resources, "output": output, "tail": tail}


CASES = {
    "env name with shell code": (workflow(env='{"X=1; touch PWNED; Y": "1"}'), "not a valid name"),
    "env value over 128 KiB": (workflow(env='{"BIG": "x" * (200 * 1024)}'), "at most 131072"),
    "memory 0": (workflow(resources='{"memory": 0}'), "memory"),
    "memory 0 GB": (workflow(resources='{"memory": "0GB"}'), "memory"),
    "negative memory": (workflow(resources='{"memory": -5}'), "memory"),
    "huge memory": (workflow(resources='{"memory": "9" * 400 + "TB"}'), "memory"),
    "infinite memory": (workflow(resources='{"memory": float("inf")}'), "memory"),
    "huge walltime": (workflow(resources='{"walltime": 10**400}'), "walltime"),
    "zero cpus": (workflow(resources='{"cpus": 0}'), "cpus"),
    "huge cpus": (workflow(resources='{"cpus": 10**30}'), "cpus"),
    "output() raises": (workflow(output="raise KeyError('no such sample')"), "output()"),
    "workflow does not import": (workflow(tail="import no_such_module_anywhere"), "does not import"),
    "workflow raises on import": (workflow(tail="1 / 0"), "ZeroDivisionError"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_exit_2_with_a_message_and_nothing_submitted(workdir: Path, case: str) -> None:
    text, words = CASES[case]
    (workdir / "wf.py").write_text(text)
    proc = cb(workdir, "run", "wf.py", "T", "--no-progress", timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert words in " ".join(proc.stderr.split()), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (workdir / "PWNED").exists()
    assert not (workdir / "logs").exists(), "a job folder was made: something was about to be submitted"


@pytest.mark.parametrize("damage", ["garbage", "other table", "newer schema"])
def test_a_damaged_journal_is_exit_2_with_what_to_do(workdir: Path, damage: str) -> None:
    (workdir / "wf.py").write_text(workflow())
    journal = workdir / ".containerbatch" / "journal.sqlite"
    journal.parent.mkdir()
    if damage == "garbage":
        journal.write_bytes(b"\x00not a database\xff" * 512)
    else:
        db = sqlite3.connect(journal)
        if damage == "other table":
            db.execute("CREATE TABLE attempts (x TEXT)")
        else:
            db.execute("PRAGMA user_version = 99")
        db.commit()
        db.close()
    for args in (["run", "wf.py", "T", "--no-progress"], ["status"]):
        proc = cb(workdir, *args, timeout=120)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "journal" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_an_old_journal_is_upgraded_in_place(workdir: Path) -> None:
    """A journal of the first schema (no absent_outputs column) is read and extended, not refused."""
    (workdir / "wf.py").write_text(workflow())
    journal = workdir / ".containerbatch" / "journal.sqlite"
    journal.parent.mkdir()
    from containerbatch.journal import SCHEMA

    db = sqlite3.connect(journal)
    db.executescript(SCHEMA.replace("    absent_outputs TEXT,\n", ""))
    db.close()
    proc = cb(workdir, "run", "wf.py", "T", "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["state"] for r in rows(workdir)] == ["done"]


EXIT = """
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Missing(luigi.ExternalTask):
    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "never-made.txt"))


class NeedsMissing(luigi.Task):
    runtime = "host"

    def requires(self):
        return Missing()

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "t.txt"))

    def run(self):
        open(self.output().path, "w").write("ran")
"""


def test_nothing_ran_is_not_success(workdir: Path) -> None:
    (workdir / "wf.py").write_text(EXIT)
    proc = cb(workdir, "run", "wf.py", "NeedsMissing", "--json", "--no-progress", timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["ok"] is False
    assert "external input is missing" in proc.stderr


LSF = """
import os
import luigi

class Q(luigi.Task):
    def output(self):
        return luigi.LocalTarget(os.path.join(os.getcwd(), "results", "q.txt"))

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ran")
"""


def test_lsf_job_path_with_blanks_and_command_substitution(tmp_path: Path, fake_schedulers: Path) -> None:
    """bsub gives the command to /bin/sh on the node: a working directory named like shell code is a name."""
    canary = tmp_path / "PWNED"
    work = tmp_path / f"my work $(touch {canary}) ; `touch {canary}`"
    work.mkdir(parents=True)  # the canary's path makes it nested, all the better
    (work / "wf.py").write_text(LSF)
    env = {"CB_FAKE_STATE": str(fake_schedulers), "PATH": f"{FAKES_BIN}:{os.environ['PATH']}"}
    env["CONTAINERBATCH_POLL_INTERVAL"] = "1"
    proc = cb(work, "run", "wf.py", "Q", "--batch-system", "lsf", "--runtime", "host", "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results" / "q.txt").read_text() == "ran"
    assert not canary.exists()


def test_htcondor_value_ending_in_backslash_cannot_continue_the_line(tmp_path: Path) -> None:
    from tests.test_staging import make_spec

    spec = make_spec(tmp_path, transfer_files=False, htcondor_settings={"+Note": "ends in \\"})
    with pytest.raises(ConfigError, match="trailing"):
        HTCondorScheduler(dict(spec.settings)).submit_file(spec)


def test_kill_of_another_users_job_is_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill` by a user who may not signal the job's process (the kernel says EPERM): a SchedulerError naming
    the job, which `containerbatch kill` reports, not a PermissionError traceback."""
    import subprocess

    from containerbatch.errors import SchedulerError
    from containerbatch.schedulers.local import LocalScheduler

    victim = subprocess.Popen(["sleep", "60"])
    real_kill = os.kill

    def kill_as_another_user(pid: int, sig: int) -> None:
        if pid == victim.pid and sig != 0:
            raise PermissionError(1, "Operation not permitted")
        real_kill(pid, sig)

    try:
        monkeypatch.setattr(os, "kill", kill_as_another_user)
        with pytest.raises(SchedulerError, match="another user"):
            LocalScheduler({}).kill([str(victim.pid)])
        assert victim.poll() is None
    finally:
        monkeypatch.undo()
        victim.kill()
        victim.wait()


def test_long_task_families_get_distinct_job_folders_and_markers(workdir: Path) -> None:
    """Families of 200 characters that differ only at the end: two folders, two done-markers."""
    import luigi

    from containerbatch.run import Run

    specs = []
    for last in "xy":
        cls = type("F" * 199 + last, (luigi.Task,), {"__module__": __name__, "runtime": "host"})
        specs.append(Run().spec_for(cls(), with_bundle=False))
    (a, b) = specs
    assert a.job_dir != b.job_dir and a.marker_path != b.marker_path
    for spec in specs:
        assert all(len(part) <= 120 for part in Path(spec.job_dir).parts)
        assert len(Path(spec.marker_path).name) <= 130
