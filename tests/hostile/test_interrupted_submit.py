"""A submitter SIGKILLed after the batch system accepted a job but before it journaled the id (defect #9).

The journal then holds the attempt as ``submitting`` with the submission key it wrote before the submit
call; the batch system holds the job under that key.  The rerun must find the job with one lookup and
follow it: every task runs exactly once.  The kill is real (SIGKILL of the first submitter once its job
is queued); the window between the scheduler's answer and the journal write is then recreated in the
journal (job id cleared, state ``submitting``), since it is too short to hit by timing.

And the other side: what the batch system prints is untrusted, so a job that carries the key but is
another user's, or runs another script, is not adopted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from containerbatch.schedulers.base import CommandResult, new_submit_key
from tests.conftest import ROOT, live_env
from tests.hostile.conftest import cb, rows, shim

SGE_BIN = ROOT / "ci" / "sge" / "bin"

WORKFLOW = """
import os
import time
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Slow(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(os.path.join(HERE, "results", "slow_%d.txt" % self.i))

    def run(self):
        with open(os.path.join(HERE, "runs.log"), "a") as handle:
            handle.write("%d\\n" % self.i)
        time.sleep(8)  # still running when the rerun looks for it
        with self.output().open("w") as handle:
            handle.write("done")


class All(luigi.WrapperTask):
    n = luigi.IntParameter(default=1)

    def requires(self):
        return [Slow(i=i) for i in range(self.n)]
"""

SCHEDULERS = [
    pytest.param("local", id="local"),
    pytest.param("lsf", id="lsf-fake"),
    pytest.param("htcondor", id="htcondor-fake"),
    pytest.param("slurm", id="slurm-live", marks=pytest.mark.slurm),
    pytest.param("sge", id="sge-live", marks=pytest.mark.sge),
    pytest.param("htcondor-live", id="htcondor-live", marks=pytest.mark.htcondor_live),
]


# every scheduler with a single job; arrays on every one that has them (local has none); group jobs take the
# same path on every scheduler, so local and slurm cover them
def _applies(batch_system: str, how: str) -> bool:
    if how == "array":
        return batch_system != "local"
    return how == "single" or batch_system in ("local", "slurm")


CASES = [
    pytest.param(p.values[0], how, id=f"{how}-{p.id}", marks=p.marks)
    for how in ("single", "array", "group")
    for p in SCHEDULERS
    if _applies(p.values[0], how)
]


def _env(batch_system: str) -> dict[str, str]:
    env = {"CONTAINERBATCH_POLL_INTERVAL": "1", "CONTAINERBATCH_MARKER_INTERVAL": "0.5"}
    if batch_system == "sge":
        env["PATH"] = f"{SGE_BIN}:{os.environ['PATH']}"
    if batch_system == "htcondor-live":
        env["PATH"] = live_env()["PATH"]
    return env


def _settings(batch_system: str, how: str) -> str:
    import json

    values: dict[str, object] = {"batch_system": batch_system.removesuffix("-live"), "runtime": "host"}
    if batch_system in ("sge", "htcondor-live"):
        values.update(bundle="always", executable=["python3"])  # the cell's python3, luigi from the bundle
    if how == "array":
        values.update(max_array_size=10, batch_window=1)
    elif how == "group":
        values.update(tasks_per_job=3, batch_window=1)
    return json.dumps(values)


def _slow(work: Path) -> list[dict]:
    return [r for r in rows(work) if r["task_family"] == "Slow"]


def _all_submitted(work: Path, count: int) -> bool:
    try:
        found = _slow(work)
    except sqlite3.Error:  # the journal is being created
        return False
    return len(found) == count and all(r["job_id"] for r in found)


@pytest.mark.parametrize(("batch_system", "how"), CASES)
def test_a_job_accepted_but_not_journaled_is_adopted_not_run_twice(
    workdir: Path, fake_schedulers: Path, batch_system: str, how: str
) -> None:
    if batch_system == "htcondor-live":
        workdir.chmod(0o777)  # the pool's jobs run as its own user (ci/htcondor)
    n = 1 if how == "single" else 3
    (workdir / "wf.py").write_text(WORKFLOW)
    (workdir / "settings.json").write_text(_settings(batch_system, how))
    env = {**os.environ, **_env(batch_system)}
    args = ["run", "wf.py", "All", "--n", str(n), "--workers", "10", "--no-progress"]  # all ready at once
    argv = [sys.executable, "-m", "containerbatch", *args]
    first = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _all_submitted(workdir, n):
        assert first.poll() is None, "the first submitter ended before its jobs were submitted"
        time.sleep(0.1)
    assert _all_submitted(workdir, n), rows(workdir)
    os.kill(first.pid, signal.SIGKILL)  # its jobs live on (own session / the batch system)
    first.wait()
    journal = workdir / ".containerbatch" / "journal.sqlite"
    db = sqlite3.connect(journal)
    db.execute("UPDATE attempts SET state = 'submitting', job_id = NULL")  # as if killed before the journal write
    db.commit()
    db.close()
    keys = {r["submit_key"] for r in _slow(workdir)}
    assert all(keys) and len(keys) == (1 if how != "single" else n)  # one key per submission

    proc = cb(workdir, *args, "-v", env=_env(batch_system))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ran = sorted((workdir / "runs.log").read_text().split())
    assert ran == [str(i) for i in range(n)], ran  # every task exactly once
    assert [(r["attempt"], r["state"]) for r in _slow(workdir)] == [(1, "done")] * n
    assert proc.stderr.count("adopted job") == n, proc.stderr[-4000:]


# -- the lookup believes nothing it is not entitled to -------------------------------------------------------


def test_slurm_lookup_takes_only_the_users_jobs_with_the_key_and_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    from containerbatch.schedulers import base, slurm
    from containerbatch.schedulers.slurm import SlurmScheduler

    monkeypatch.setattr(base, "current_user", lambda: "alice")
    monkeypatch.setattr(slurm, "current_user", lambda: "alice")
    key, other = new_submit_key(), new_submit_key()
    # squeue -h -a -t all -u alice -o "%i|%u|%k|%o" (Slurm 22.05; a job without comment prints (null))
    out = "\n".join(
        [
            "4935|alice|(null)|(null)",
            f"4986|mallory|{key}|/w/attempt-1/job.sh",  # another user's job under our key
            f"4987|alice|{key}|/elsewhere/job.sh",  # our key, another script
            f"4988_[0-2]|alice|{key}|/w/a b|array.sh",  # the array: its pending range, | in the path
            f"4988_3|alice|{key}|/w/a b|array.sh",
            f"4990|alice|{other}|/w/attempt-1/job.sh",
            "\udcff garbage | | |",
        ]
    )
    sched = SlurmScheduler()
    result = CommandResult(tuple(sched.find_argv([key])), 0, out, "")
    found = base.own_jobs(sched.parse_find(result, {key: "/w/a b|array.sh"}), {key: "/w/a b|array.sh"}, "slurm")
    assert found == {key: ["4988"]}
    assert sched.find_argv([key])[:2] == ["squeue", "-h"] and "alice" in sched.find_argv([key])


def test_sge_lookup_reads_context_owner_and_script_of_qstat_j() -> None:
    from containerbatch.schedulers import base
    from containerbatch.schedulers.sge import SGEScheduler

    text = (ROOT / "tests" / "fixtures" / "sge" / "qstat_j_context.txt").read_text()
    rows_ = SGEScheduler().parse_find(
        CommandResult(("qstat", "-j", "5,6,7"), 0, text, ""),
        {"cb0123456789abcdef01234567": "x", "cb0123456789abcdef01234568": "y"},
    )
    assert rows_ == [
        ("cb0123456789abcdef01234567", "6", "root", "/tmp/sec2-slurm/x y.sh"),
        ("cb0123456789abcdef01234568", "7", "root", "/tmp/sec2-slurm/x y.sh"),
    ]
    assert base.own_jobs(rows_, {"cb0123456789abcdef01234567": "/tmp/sec2-slurm/x y.sh"}, "sge") == (
        {"cb0123456789abcdef01234567": ["6"]} if base.current_user() == "root" else {}
    )


@pytest.mark.parametrize("forged", ["owner", "script"])
def test_a_job_under_our_key_that_is_not_ours_is_not_adopted(workdir: Path, fake_schedulers: Path, forged: str) -> None:
    """The journal says `submitting` under key K; the batch system lists a job with K, but another user's or
    running another script (a forged or colliding entry): it is not adopted, the task is submitted anew."""
    import json

    (workdir / "wf.py").write_text(WORKFLOW)
    (workdir / "settings.json").write_text(_settings("htcondor", "single"))
    proc = cb(workdir, "run", "wf.py", "Slow", "--i", "0", "--no-progress", env=_env("htcondor"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = rows(workdir)
    # the fake's queue: the job now claims another owner or another executable
    state = fake_schedulers / "state.json"
    box = json.loads(state.read_text())
    for job in box["condor"]["jobs"].values():
        job["running"] = False
        if forged == "owner":  # condor_q lists only our jobs: this one is found in the history, everyone's
            job["JobStatus"] = 4
            job["Owner"] = "mallory"
        else:  # back in the queue, running another script
            job["JobStatus"] = 2
            job["Cmd"] = "/tmp/elsewhere/job.sh"
    state.write_text(json.dumps(box))
    (workdir / "results" / "slow_0.txt").unlink()  # as if the job had not run yet: no output, no marker
    Path(row["marker_path"]).unlink()
    db = sqlite3.connect(workdir / ".containerbatch" / "journal.sqlite")
    db.execute("UPDATE attempts SET state = 'submitting', job_id = NULL")
    db.commit()
    db.close()
    again = cb(workdir, "run", "wf.py", "Slow", "--i", "0", "--no-progress", "-v", env=_env("htcondor"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not adopted" in again.stderr and "adopted job" not in again.stderr
    assert [(r["attempt"], r["state"]) for r in rows(workdir)] == [(1, "failed"), (2, "done")]
    assert row["submit_key"] and rows(workdir)[1]["submit_key"] != row["submit_key"]


SILENT = """
out = subprocess.run([REAL, *sys.argv[1:]], capture_output=True)
sys.stderr.buffer.write(b"%s\\n" % os.environ.get("CB_SHIM_SAYS", "").encode())
sys.exit(out.returncode if os.environ.get("CB_SHIM_SUBMITS") == "1" else 0)
"""


@pytest.mark.parametrize("tool", ["bsub", "condor_submit"])
@pytest.mark.parametrize("submits", [True, False])
def test_a_submit_that_prints_no_id_is_found_by_its_key_or_is_a_submit_error(
    workdir: Path, fake_schedulers: Path, tmp_path: Path, tool: str, submits: bool
) -> None:
    """The submit command exits 0 and prints no job id (defect #15). If it did submit, the job is found by its
    submission key and followed (it runs once, no orphan); if it did not, the attempt is a submit_error that
    shows what the command said."""
    batch_system = "lsf" if tool == "bsub" else "htcondor"
    shim(tmp_path / "shims", tool, SILENT if submits else "sys.stderr.write('queue is closed today\\n')\n")
    (workdir / "wf.py").write_text(WORKFLOW)
    (workdir / "settings.json").write_text(_settings(batch_system, "single"))
    env = {
        **_env(batch_system),
        "PATH": f"{tmp_path / 'shims'}:{os.environ['PATH']}",
        "CB_SHIM_SUBMITS": "1",
        "CONTAINERBATCH_MAX_ATTEMPTS": "1",
    }
    proc = cb(workdir, "run", "wf.py", "Slow", "--i", "0", "--no-progress", env=env)
    said = (proc.stderr + proc.stdout).replace("\n", " ")
    if submits:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (workdir / "runs.log").read_text() == "0\n"
        assert "printed no job id" in said and "found the job by its submission key" in said
        assert [(r["attempt"], r["state"]) for r in rows(workdir)] == [(1, "done")]
    else:
        assert proc.returncode != 0
        assert not (workdir / "runs.log").exists()
        assert "gave no job id" in said and "queue is closed today" in said, said[-3000:]
        assert [(r["attempt"], r["state"], r["reason"]) for r in rows(workdir)] == [(1, "failed", "submit_error")]
