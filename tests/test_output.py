"""What a person sees from ``containerbatch run``: a quiet console, the run's log file, every failure explained.

Real runs (runtime host; local scheduler, or the fake LSF of tests/fakes for refused submissions), in a
subprocess whose stdout is not a terminal, as in a log file or CI.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from tests.conftest import FAKES_BIN, run_cli

LEAVES = """
import time

import luigi


class Leaf(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/leaf_{self.n}.txt")

    def run(self):
        print(f"leaf {self.n} working", flush=True)
        time.sleep(0.1)
        if self.n == 5:
            raise ValueError(f"leaf {self.n} cannot be computed")
        with self.output().open("w") as handle:
            handle.write("ok")


class All(luigi.WrapperTask):
    count = luigi.IntParameter(default=20)

    def requires(self):
        return [Leaf(n=i) for i in range(self.count)]
"""

REFUSAL = "Bad argument for option -q: no such queue 'short'. Job not submitted."


def run_log(folder: Path) -> Path:
    logs = sorted((folder / ".containerbatch" / "runs").glob("*/run.log"))
    assert len(logs) == 1, logs
    return logs[0]


@pytest.fixture(scope="module")
def twenty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, int]:
    """20 leaves (one fails) and their wrapper, run without a terminal."""
    folder = tmp_path_factory.mktemp("twenty")
    (folder / "leaves.py").write_text(LEAVES)
    proc = run_cli(["run", "leaves.py", "All", "--runtime", "host", "--workers", "6"], cwd=folder)
    return folder, proc.stdout, proc.stderr, proc.returncode


def test_twenty_tasks_one_failure_is_short_and_explained(twenty: tuple[Path, str, str, int]) -> None:
    folder, stdout, stderr, code = twenty
    lines = (stdout + stderr).splitlines()
    assert code == 1
    assert len(lines) <= 100, "\n".join(lines)
    assert not [ln for ln in lines if "DEBUG" in ln], stderr
    assert (stdout + stderr).count("Luigi Execution Summary") <= 1
    # the failure: its exception text, its log and the last lines of it, then where to look next
    assert "ValueError('leaf 5 cannot be computed')" in stdout
    failed_dir = next((folder / "logs" / "Leaf").glob("Leaf_5_*")) / "attempt-1"
    assert f"log: {failed_dir / 'stderr'}" in stdout
    assert "| ValueError: leaf 5 cannot be computed" in stdout
    assert "containerbatch logs Leaf_5_" in stdout and "containerbatch status " in stdout
    # told once, in the summary, not also as a log record
    assert stdout.count("FAILED Leaf_5_") == 1 and "Leaf_5_" not in stderr
    last = [ln for ln in lines if re.match(r"run \d{8}-", ln)][-1]
    assert re.search(r"done 19, failed 1, not run 1 in [\d.]+s", last), last
    assert "waiting" not in last


def test_the_run_log_has_luigi_once(twenty: tuple[Path, str, str, int]) -> None:
    folder, stdout, _stderr, _code = twenty
    log = run_log(folder)
    text = log.read_text()
    assert f"run log (luigi and containerbatch): {log}" in stdout
    assert text.count("===== Luigi Execution Summary =====") == 2  # luigi's summary opens and closes with it
    assert text.count("Scheduled 21 tasks of which") == 1
    assert text.count("Informed scheduler that task   Leaf_3_") == 2  # PENDING, DONE: each once
    assert "submitted Leaf_0_" in text and "ValueError('leaf 5 cannot be computed')" in text
    assert " DEBUG " not in text


def test_state_changes_have_a_line_each_with_the_reason(twenty: tuple[Path, str, str, int]) -> None:
    _folder, stdout, _stderr, _code = twenty
    failed = [ln for ln in stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d failed ", ln)]
    assert len(failed) == 1 and "task_error: the task raised: ValueError('leaf 5" in failed[0]
    done = [ln for ln in stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d done ", ln)]
    assert len(done) == 19


def test_verbose_shows_luigi_info_once(tmp_path: Path) -> None:
    (tmp_path / "leaves.py").write_text(LEAVES)
    args = ["run", "leaves.py", "All", "--count", "2", "--runtime", "host", "-v", "--no-progress"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    informed = [ln for ln in proc.stderr.splitlines() if "Informed scheduler that task   Leaf_0_" in ln]
    assert len(informed) == 2, proc.stderr  # PENDING and DONE, each once: not luigi's handler and ours
    assert proc.stderr.count("Scheduled 3 tasks of which") == 1
    assert "DEBUG" not in proc.stderr
    assert re.search(r"^run \d{8}-\S+: done 3 in ", proc.stdout, re.M), proc.stdout  # --no-progress: the summary
    debug = run_cli(
        ["run", "leaves.py", "All", "--count", "1", "--runtime", "host", "--log-level", "debug", "--no-progress"],
        cwd=tmp_path,
    )
    assert "DEBUG" in debug.stderr
    bad = run_cli(["run", "leaves.py", "All", "--log-level", "LOUD"], cwd=tmp_path)
    assert bad.returncode == 2 and "--log-level 'LOUD' is not a level" in bad.stderr


def lsf_env(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "fake-state"
    state.mkdir()
    return {
        "CB_FAKE_STATE": str(state),
        "PATH": f"{FAKES_BIN}:{os.environ['PATH']}",
        "CONTAINERBATCH_RETRY_WAIT": "0.2",
    }


def fault(env: dict[str, str], *args: str) -> None:
    import subprocess

    subprocess.run([str(FAKES_BIN / "fakesched-fault"), *args], env={**os.environ, **env}, check=True)


def bsub_calls(env: dict[str, str]) -> int:
    calls = Path(env["CB_FAKE_STATE"]) / "calls.log"
    return sum(1 for line in calls.read_text().splitlines() if json.loads(line)["tool"] == "bsub")


def test_refused_submission_shows_the_schedulers_words(tmp_path: Path) -> None:
    (tmp_path / "leaves.py").write_text(LEAVES)
    env = lsf_env(tmp_path)
    fault(env, "error", "bsub", "--exit-code", "2", "--message", REFUSAL)
    args = ["run", "leaves.py", "All", "--count", "3", "--runtime", "host", "--batch-system", "lsf"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    out = proc.stdout
    assert out.count(REFUSAL) >= 2  # the task's line, and the summary
    assert "submit_error" in out and "never got a job id" in out
    assert "the queue does not exist here: `bqueues` lists the queues" in out  # the fix, named
    assert "refused with the same words for 2 more task(s)" in out
    last = [ln for ln in out.splitlines() if re.match(r"run \d{8}-", ln)][-1]
    assert "failed 3" in last and "waiting" not in last, last
    assert bsub_calls(env) == 3  # a permanent refusal is not asked again
    assert re.search(r"containerbatch logs Leaf_\d_\w+   \(what the batch system said\)", out)
    logs = run_cli(["logs", "Leaf_0"], cwd=tmp_path, env=env)
    assert logs.returncode == 0 and REFUSAL in logs.stdout and "was never submitted" in logs.stderr
    submit_log = next(tmp_path.glob("logs/Leaf/Leaf_0_*/attempt-1/submit.log")).read_text()
    assert REFUSAL in submit_log and "exit code: 2" in submit_log and "command: bsub -J" in submit_log
    # status: a row per refused attempt, without a job id, with the scheduler's words
    status = run_cli(["status"], cwd=tmp_path, env={**env, "COLUMNS": "250"})
    assert status.returncode == 1
    rows = [ln for ln in status.stdout.splitlines() if "Leaf_" in ln]
    assert len(rows) == 3 and all("submit_error: " + REFUSAL in ln for ln in rows), status.stdout
    doc = json.loads(run_cli(["status", "--json"], cwd=tmp_path, env=env).stdout)
    assert {a["job_id"] for a in doc["attempts"]} == {None}
    assert {a["detail"] for a in doc["attempts"]} == {REFUSAL}


def test_refused_submission_json_never_says_waiting(tmp_path: Path) -> None:
    (tmp_path / "leaves.py").write_text(LEAVES)
    env = lsf_env(tmp_path)
    fault(env, "error", "bsub", "--exit-code", "2", "--message", REFUSAL)
    args = ["run", "leaves.py", "All", "--count", "2", "--runtime", "host", "--batch-system", "lsf", "--json"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    outcomes = {t["task_id"].split("_")[0]: t["outcome"] for t in doc["tasks"]}
    assert outcomes == {"Leaf": "FAILED", "All": "NOT_RUN"}
    leaf = next(t for t in doc["tasks"] if t["task_id"].startswith("Leaf_"))
    assert leaf["reason"] == "submit_error" and REFUSAL in leaf["message"]
    assert doc["counts"] == {"FAILED": 2, "NOT_RUN": 1}
    assert REFUSAL in proc.stderr  # the summary went to stderr, stdout is the document


def test_transient_refusal_is_retried_and_each_retry_logged(tmp_path: Path) -> None:
    (tmp_path / "leaves.py").write_text(LEAVES)
    env = lsf_env(tmp_path)
    fault(env, "error", "bsub", "--count", "2")  # "Request from non-LSF host rejected", exit 255
    args = ["run", "leaves.py", "Leaf", "--n", "1", "--runtime", "host", "--batch-system", "lsf"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    retries = [ln for ln in proc.stderr.splitlines() if "refused the submission" in ln]
    assert len(retries) == 2, proc.stderr
    assert "(attempt 1): Request from non-LSF host rejected; transient, trying again" in retries[0]
    assert "as attempt 3" in retries[1]
    assert bsub_calls(env) == 3
    status = json.loads(run_cli(["status", "--json"], cwd=tmp_path, env=env).stdout)
    assert [(a["attempt"], a["state"], a["reason"]) for a in status["attempts"]] == [
        (1, "failed", "submit_error"),
        (2, "failed", "submit_error"),
        (3, "done", None),
    ]


# -- the run's log file from the library -------------------------------------------------------------------


def test_run_logging_writes_the_file_and_leaves_the_program_as_it_was(tmp_path: Path) -> None:
    from containerbatch.runlog import run_logging

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}:{record.levelname}:{record.getMessage()}")

    root = logging.getLogger()
    collect = Collect()
    root.addHandler(collect)
    old_level = root.level
    root.setLevel(logging.WARNING)
    luigi_log = logging.getLogger("luigi-interface")
    before = (luigi_log.level, luigi_log.propagate, list(luigi_log.handlers))
    try:
        with run_logging(tmp_path / "runs" / "r1" / "run.log") as path:
            luigi_log.debug("luigi debug")
            luigi_log.info("luigi info")
            luigi_log.warning("luigi warning")
            logging.getLogger("containerbatch.worker").info("ours info")
            logging.getLogger("containerbatch.worker").error("ours error")
        luigi_log.warning("after the run")
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
    text = path.read_text()
    assert "luigi info" in text and "luigi warning" in text and "ours info" in text and "ours error" in text
    assert "luigi debug" not in text and "after the run" not in text
    # the program's handlers saw what they saw before, once each
    assert seen == [
        "luigi-interface:WARNING:luigi warning",
        "containerbatch.worker:ERROR:ours error",
        "luigi-interface:WARNING:after the run",
    ]
    assert (luigi_log.level, luigi_log.propagate, list(luigi_log.handlers)) == before


@pytest.mark.parametrize(
    ("scheduler", "code", "said", "fix"),
    [
        ("lsf", 255, "short: No such queue. Job not submitted.", "`bqueues` lists the queues"),
        ("slurm", 1, "sbatch: error: invalid partition specified: gpu", "`sinfo -s` lists them"),
        ("slurm", 1, "sbatch: error: Invalid account or account/partition combination specified", "sacctmgr"),
        ("lsf", 0, "Welcome to LSF", "the job may have been submitted anyway"),
    ],
)
def test_permanent_refusals_name_the_fix(scheduler: str, code: int, said: str, fix: str) -> None:
    from containerbatch.plugins import schedulers
    from containerbatch.schedulers.base import CommandResult

    sched = schedulers.get(scheduler)({})
    result = CommandResult(("bsub" if scheduler == "lsf" else "sbatch", "job.sh"), code, "", said)
    with pytest.raises(Exception) as caught:
        sched.parse_submit(result)
    exc = caught.value
    assert getattr(exc, "transient", None) is False
    assert fix in str(exc) and said in str(exc)


def test_a_transient_refusal_is_transient() -> None:
    from containerbatch.plugins import schedulers
    from containerbatch.schedulers.base import CommandResult

    result = CommandResult(("sbatch", "job.sh"), 1, "", "sbatch: error: Batch job submission failed: Socket timed out")
    with pytest.raises(Exception) as caught:
        schedulers.get("slurm")({}).parse_submit(result)
    assert getattr(caught.value, "transient", None) is True and "retrying may help" in str(caught.value)


def test_times_are_the_jobs_own(twenty: tuple[Path, str, str, int]) -> None:
    """The journal (so status and report) has the end the job recorded, for a failure too, not when it was seen."""
    from containerbatch.journal import Journal

    folder = twenty[0]
    journal = Journal(folder / ".containerbatch" / "journal.sqlite")
    try:
        rows = [r for r in journal.attempts() if r.task_family == "Leaf"]
    finally:
        journal.close()
    assert len(rows) == 20
    for row in rows:
        result = json.loads((Path(row.job_dir) / "result.json").read_text())
        assert row.ended == pytest.approx(result["finished"], abs=1e-3), row.task_id
        assert row.started == pytest.approx(result["started"], abs=1e-3)
    failed = next(r for r in rows if r.state == "failed")
    assert failed.task_id.startswith("Leaf_5_") and failed.reason == "task_error"
