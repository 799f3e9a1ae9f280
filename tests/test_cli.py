"""The command line beyond run/show: status, logs, kill, doctor; journals from real runs (runtime host)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from containerbatch.cli import app
from containerbatch.journal import Journal
from tests.conftest import ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")
WIDE = {"COLUMNS": "200"}

NAPS = """
import time

import luigi


class Nap(luigi.Task):
    n = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=0.2)

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.n}.txt")

    def run(self):
        print(f"napping {self.seconds} s", flush=True)
        time.sleep(self.seconds)
        with self.output().open("w") as handle:
            handle.write("ok")


class Broken(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/broken.txt")

    def run(self):
        raise RuntimeError("broken on purpose")


class All(luigi.WrapperTask):
    def requires(self):
        return [Nap(n=0), Nap(n=1), Broken()]
"""


def cli(args: list[str], **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, env={**WIDE, **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def attempts(folder: Path) -> list:
    journal = Journal(folder / ".containerbatch" / "journal.sqlite")
    try:
        return journal.attempts()
    finally:
        journal.close()


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README example, run for real with runtime host: 5 tasks, all done."""
    folder = tmp_path_factory.mktemp("example")
    proc = run_cli(["run", EXAMPLE, "Summary", "--samples", "2", "--runtime", "host", "--workers", "2"], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def failed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two naps and a task that raises: exit 1, one failed attempt."""
    folder = tmp_path_factory.mktemp("failed")
    (folder / "naps.py").write_text(NAPS)
    proc = run_cli(["run", "naps.py", "All", "--runtime", "host", "--workers", "3"], cwd=folder)
    assert proc.returncode == 1, proc.stderr[-3000:]
    return folder


@pytest.fixture
def in_dir(monkeypatch: pytest.MonkeyPatch):
    def enter(folder: Path) -> Path:
        monkeypatch.chdir(folder)
        for key in list(os.environ):
            if key.startswith("CONTAINERBATCH_"):
                monkeypatch.delenv(key)
        return folder

    return enter


# -- status ---------------------------------------------------------------------


def test_status_table_lists_every_attempt(example_dir: Path, in_dir) -> None:
    in_dir(example_dir)
    code, out, _ = cli(["status"])
    assert code == 0
    rows = attempts(example_dir)
    assert len(rows) == 5
    for row in rows:
        line = next(ln for ln in out.splitlines() if row.task_id in ln)
        assert row.task_family in line and row.job_id in line and "done" in line and "local" in line
    for column in ("task id", "family", "attempt", "scheduler", "job id", "state", "reason", "image", "elapsed"):
        assert column in out
    assert rows[0].run_id in out and "done 5" in out


def test_status_json_and_run_prefix(example_dir: Path, in_dir) -> None:
    in_dir(example_dir)
    code, out, _ = cli(["status", "--json"])
    assert code == 0
    data = json.loads(out)
    rows = attempts(example_dir)
    assert {a["task_id"] for a in data["attempts"]} == {r.task_id for r in rows}
    assert data["counts"] == {"done": 5}
    assert data["run"]["ended"] and data["run"]["submitter_alive"] is False
    assert all(a["elapsed"] is not None and a["elapsed"] >= 0 for a in data["attempts"])
    code, out, _ = cli(["status", rows[0].run_id[:10], "--json"])
    assert code == 0 and json.loads(out)["run"]["run_id"] == rows[0].run_id


def test_status_of_failed_run_exits_1_with_reason(failed_dir: Path, in_dir) -> None:
    in_dir(failed_dir)
    code, out, _ = cli(["status"])
    assert code == 1
    broken = next(ln for ln in out.splitlines() if "Broken" in ln)
    assert "failed" in broken and "task_error" in broken
    data = json.loads(cli(["status", "--json"])[1])
    assert data["counts"] == {"done": 2, "failed": 1}


def test_status_watch_stops_when_the_run_has_ended(failed_dir: Path, in_dir) -> None:
    in_dir(failed_dir)
    started = time.monotonic()
    code, out, _ = cli(["status", "--watch", "--interval", "0.1"])
    assert code == 1 and "Broken" in out and time.monotonic() - started < 10
    code, out, _ = cli(["status", "--watch", "--json"])
    assert code == 1 and len(out.strip().splitlines()) == 1


def test_status_usage_errors_exit_2(tmp_path: Path, example_dir: Path, in_dir) -> None:
    in_dir(tmp_path)
    code, _, err = cli(["status"])
    assert code == 2 and "no journal" in err
    assert not (tmp_path / ".containerbatch").exists()  # looking creates nothing
    in_dir(example_dir)
    code, _, err = cli(["status", "no-such-run"])
    assert code == 2 and "no run 'no-such-run'" in err
    code, _, _ = cli(["status", "--no-such-option"])
    assert code == 2


def test_status_reads_state_dir_setting(example_dir: Path, tmp_path: Path, in_dir) -> None:
    in_dir(tmp_path)
    code, out, _ = cli(["status", "--json"], CONTAINERBATCH_STATE_DIR=str(example_dir / ".containerbatch"))
    assert code == 0 and len(json.loads(out)["attempts"]) == 5
    code, out, _ = cli(["status", "--json", "--state-dir", str(example_dir / ".containerbatch")])
    assert code == 0 and len(json.loads(out)["attempts"]) == 5


# -- logs -------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["Nap_1", "Nap(n=1)", "Nap(n=1", "Nap(n='1')"])
def test_logs_by_prefix_or_family_and_params(failed_dir: Path, in_dir, query: str) -> None:
    in_dir(failed_dir)
    code, out, _ = cli(["logs", query])
    assert code == 0
    row = next(r for r in attempts(failed_dir) if r.task_family == "Nap" and r.params["n"] == "1")
    assert out == (Path(row.job_dir) / "stdout").read_text()
    assert "napping 0.2 s" in out


def test_logs_stderr_and_json(failed_dir: Path, in_dir) -> None:
    in_dir(failed_dir)
    code, out, _ = cli(["logs", "Broken", "--stderr"])
    assert code == 0 and "broken on purpose" in out
    code, out, _ = cli(["logs", "Broken", "--stderr", "--json"])
    data = json.loads(out)
    assert code == 0 and data["stream"] == "stderr" and data["attempt"] == 1 and data["state"] == "failed"
    assert "broken on purpose" in data["text"] and data["path"].endswith("attempt-1/stderr")


def test_logs_ambiguous_lists_candidates_and_exits_2(failed_dir: Path, in_dir) -> None:
    in_dir(failed_dir)
    code, _, err = cli(["logs", "Nap"])
    assert code == 2
    assert "names 2 tasks" in err and "Nap(n=0, seconds=0.2)" in err and "Nap(n=1, seconds=0.2)" in err
    code, _, err = cli(["logs", "Fit(sample=7)"])
    assert code == 2 and "no task" in err
    code, _, err = cli(["logs", "Nap_0", "--attempt", "4"])
    assert code == 2 and "no attempt 4" in err


def test_logs_follow_of_ended_job_prints_all_and_stops(failed_dir: Path, in_dir) -> None:
    in_dir(failed_dir)
    code, out, _ = cli(["logs", "Nap_0", "--follow"])
    assert code == 0 and "napping" in out
    code, out, _ = cli(["logs", "Nap_0", "--follow", "--json"])
    assert code == 0 and "napping" in "".join(json.loads(line)["text"] for line in out.splitlines())


def test_logs_follow_streams_a_running_job(tmp_path: Path) -> None:
    (tmp_path / "naps.py").write_text(
        NAPS
        + """

class Talk(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/talk.txt")

    def run(self):
        for i in range(3):
            print(f"line {i}", flush=True)
            time.sleep(0.7)
        with self.output().open("w") as handle:
            handle.write("ok")
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERBATCH_")}
    submitter = subprocess.Popen(
        [sys.executable, "-m", "containerbatch", "run", "naps.py", "Talk", "--runtime", "host"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (tmp_path / ".containerbatch" / "journal.sqlite").exists() and attempts(tmp_path))
        follow = subprocess.run(
            [sys.executable, "-m", "containerbatch", "logs", "Talk", "--follow"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert follow.returncode == 0
        assert follow.stdout.splitlines() == ["line 0", "line 1", "line 2"]
        assert submitter.wait(timeout=60) == 0
    finally:
        stop(submitter)


# -- kill --------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def pid_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def sleeping_run(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen, list]]:
    """A submitter with one long local job running (Nap 60 s); yields (folder, submitter, running attempts)."""
    (tmp_path / "naps.py").write_text(NAPS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERBATCH_")}
    submitter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "containerbatch",
            "run",
            "naps.py",
            "Nap",
            "--n",
            "9",
            "--seconds",
            "60",
            "--runtime",
            "host",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # an attempt is journaled (as submitting) before the scheduler's answer: wait for its job id
        journal = tmp_path / ".containerbatch" / "journal.sqlite"
        rows = wait_for(lambda: journal.exists() and [r for r in attempts(tmp_path) if r.job_id])
        assert pid_running(int(rows[0].job_id))
        yield tmp_path, submitter, rows
    finally:
        stop(submitter)
        for row in attempts(tmp_path):
            if row.job_id and pid_running(int(row.job_id)):
                os.kill(int(row.job_id), signal.SIGKILL)


def test_kill_task_cancels_its_job_and_records_it(sleeping_run, in_dir) -> None:
    folder, submitter, rows = sleeping_run
    in_dir(folder)
    code, out, _ = cli(["kill", "Nap(n=9)", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["cancelled"] == [
        {"task_id": rows[0].task_id, "attempt": 1, "scheduler": "local", "job_id": rows[0].job_id}
    ]
    wait_for(lambda: not pid_running(int(rows[0].job_id)), timeout=20)
    assert submitter.wait(timeout=60) == 1  # the task did not complete


def test_kill_task_stays_cancelled_after_the_submitter_notices(sleeping_run, in_dir) -> None:
    folder, submitter, rows = sleeping_run
    in_dir(folder)
    assert cli(["kill", rows[0].task_id])[0] == 0
    assert submitter.wait(timeout=60) == 1
    row = attempts(folder)[0]
    assert row.state == "cancelled" and row.reason is not None and row.reason.startswith("cancelled")


def test_kill_all_stops_the_submitter_too(sleeping_run, in_dir) -> None:
    folder, submitter, rows = sleeping_run
    in_dir(folder)
    code, out, _ = cli(["kill", "--all"])
    assert code == 0
    assert "stopped the submitter" in out and rows[0].task_id in out
    assert submitter.wait(timeout=30) == 130
    wait_for(lambda: not pid_running(int(rows[0].job_id)), timeout=20)
    assert attempts(folder)[0].state == "cancelled"
    code, out, _ = cli(["kill", "--all"])
    assert code == 0 and "nothing to cancel" in out


def test_kill_usage_errors(example_dir: Path, in_dir) -> None:
    in_dir(example_dir)
    assert cli(["kill"])[0] == 2
    assert cli(["kill", "Fit_0", "--all"])[0] == 2
    code, _, err = cli(["kill", "Fit"])
    assert code == 2 and "names 2 tasks" in err
    code, out, _ = cli(["kill", "Fit_0"])  # ended long ago: nothing to do
    assert code == 0 and "nothing to cancel" in out
    assert all(r.state == "done" for r in attempts(example_dir))


# -- doctor ------------------------------------------------------------------------


def test_doctor_host_is_healthy_and_reports_settings_sources(tmp_path: Path, in_dir) -> None:
    in_dir(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps({"poll_max_interval": 120}))
    code, out, _ = cli(["doctor", "--runtime", "host", "--json"], CONTAINERBATCH_LOG_DIR="joblogs")
    assert code == 0, out
    data = json.loads(out)
    settings = {s["name"]: s for s in data["settings"]}
    assert settings["log_dir"] == {
        "name": "log_dir",
        "value": "joblogs",
        "source": "environment CONTAINERBATCH_LOG_DIR",
    }
    assert settings["poll_max_interval"]["source"] == f"file {tmp_path / 'settings.json'}"
    assert settings["batch_system"]["source"] == "default"
    names = {(p["kind"], p["name"]) for p in data["plugins"]}
    assert {("scheduler", "local"), ("runtime", "host"), ("runtime", "docker")} <= names
    assert data["problems"] == []
    assert data["requested"] == {"batch_system": "local", "runtime": "host", "image": None}
    code, out, _ = cli(["doctor", "--runtime", "host"], CONTAINERBATCH_LOG_DIR="joblogs")
    assert code == 0 and "settings in force" in out and "environment CONTAINERBATCH_LOG_DIR" in out


def test_doctor_broken_request_exits_1_with_fix(tmp_path: Path, in_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    in_dir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no batch system commands at all
    code, out, _ = cli(["doctor", "--batch-system", "lsf", "--runtime", "host"])
    assert code == 1
    assert "problem" in out and "fix:" in out and "lsf" in out
    code, out, _ = cli(["doctor", "--batch-system", "nosuch", "--runtime", "host", "--json"])
    problems = json.loads(out)["problems"]
    assert code == 1 and problems[0]["name"] == "nosuch" and "local" in problems[0]["fix"]


def test_doctor_bad_setting_is_a_problem(tmp_path: Path, in_dir) -> None:
    in_dir(tmp_path)
    code, out, _ = cli(["doctor", "--runtime", "host", "--json"], CONTAINERBATCH_POLL_INTERVL="3")
    data = json.loads(out)
    assert code == 1 and "poll_interval" in data["problems"][0]["detail"]


@pytest.mark.docker
def test_doctor_checks_the_image(tmp_path: Path, in_dir) -> None:
    in_dir(tmp_path)
    code, out, _ = cli(["doctor", "--image", "cb-demo:latest", "--runtime", "docker", "--json"])
    data = json.loads(out)
    assert code == 0, data["problems"]
    assert data["image"]["present"] is True and data["image"]["python"].startswith("3.")
    assert data["image"]["luigi"] is None  # the demo image has no luigi: the bundle is bound
    code, out, _ = cli(["doctor", "--image", "no-such-image:404", "--runtime", "docker", "--json"])
    data = json.loads(out)
    assert code == 1 and data["image"]["present"] is False
    assert "docker pull" in data["problems"][0]["detail"]
