"""An out-of-tree plugin (tests/plugins/example: scheduler toyq with its own small fake, runtime toyrun)
registered by entry point, passing the same contract kit as the built-ins; plus broken entry points,
which `doctor` lists and a run refuses, never with a traceback.

The entry points are registered the way an installed distribution does it: a ``*.dist-info`` folder
with ``entry_points.txt`` in a temporary folder on sys.path (and PYTHONPATH for the CLI runs).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from containerbatch import plugins, settings
from containerbatch.errors import ConfigError
from containerbatch.testing import Harness, RuntimeContract, SchedulerContract
from containerbatch.testing.fakes import FakeBatch

EXAMPLE = Path(__file__).parent / "plugins" / "example"

ENTRY_POINTS = """\
[containerbatch.schedulers]
toyq = containerbatch_toyq:ToyScheduler

[containerbatch.runtimes]
toyrun = containerbatch_toyq:ToyRuntime
"""
BROKEN = """\
[containerbatch.schedulers]
broken = no_such_module_cb:Scheduler
notaclass = os:sep
abstract = containerbatch.schedulers.base:Scheduler
misnamed = containerbatch_toyq:ToyScheduler
badform = containerbatch_toyq

[containerbatch.runtimes]
crashy = containerbatch_toyq:NoSuchRuntime
"""


def dist_info(folder: Path, name: str, entry_points: str) -> None:
    info = folder / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin installed by entry point for this module (in-process and for subprocesses)."""
    site = tmp_path_factory.mktemp("site")
    dist_info(site, "containerbatch_toyq", ENTRY_POINTS)
    added = [str(site), str(EXAMPLE)]
    sys.path[:0] = added
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ":".join([*added, *([saved] if saved else [])])
    plugins.reset()
    yield site
    del sys.path[: len(added)]
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved
    plugins.reset()


class TestToyq(SchedulerContract):
    scheduler = "toyq"
    workflow_env = {"CB_TOYQ_PEND_SECONDS": "2"}  # the two Work jobs are in flight together

    @pytest.fixture(autouse=True)
    def _installed(self, installed: Path) -> None:
        pass

    def environment(self, tmp_path: Path) -> dict[str, str]:
        state = tmp_path / "toyq-state"
        return {"CB_TOYQ_STATE": str(state), "PATH": f"{EXAMPLE / 'bin'}:{os.environ['PATH']}"}

    def status_calls(self, harness: Harness) -> list[list[str]] | None:
        log = Path(harness.env["CB_TOYQ_STATE"]) / "calls.log"
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [c["argv"] for c in calls if c["tool"] == "toyq-stat"]

    def cleanup(self, harness: Harness) -> None:
        FakeBatch(harness.env["CB_TOYQ_STATE"]).cleanup()


def test_plugin_settings_join_the_one_table(installed: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    settings.set_setting("toyq_priority", 5)  # unknown before the plugin: now declared, typed
    assert settings.get_setting("toyq_priority") == 5
    definition = settings.DEFINITIONS["toyq_priority"]
    assert definition.owner == "scheduler plugin 'toyq'" and definition.type_name == "int"
    monkeypatch.setenv("CONTAINERBATCH_TOYRUN_LABEL", "from-env")
    assert settings.SettingsResolver().resolve("toyrun_label").value == "from-env"
    settings.clear_setting("toyq_priority")
    monkeypatch.setenv("CONTAINERBATCH_TOYQ_PRIORITY", "high")
    with pytest.raises(ConfigError, match="toyq_priority"):
        settings.SettingsResolver().resolve("toyq_priority")
    from containerbatch.docs import documented

    assert "toyq_priority" not in documented()  # third-party settings are documented by the plugin


def test_runtime_plugin_claims_its_images(installed: Path):
    assert plugins.guess_runtime("data/cell.toyimg") == "toyrun"
    assert plugins.guess_runtime("img.sif") == "apptainer"
    assert plugins.guess_runtime("name:tag") == "docker"
    assert plugins.guess_runtime(None) == "host"


def test_runtime_plugin_runs_a_task_and_owns_its_start_failures(installed: Path, tmp_path: Path):
    from containerbatch.resubmit import classify
    from containerbatch.states import JobState, JobStatus

    work = tmp_path / "work"
    work.mkdir()
    (work / "cell.toyimg").write_text("")
    (work / "tasks.py").write_text(
        "import os\nimport luigi\n\n\nclass Label(luigi.Task):\n"
        "    def output(self):\n        return luigi.LocalTarget('results/label.txt')\n\n"
        "    def run(self):\n        with self.output().open('w') as h:\n"
        "            h.write(os.environ['TOYRUN_LABEL'] + ' ' + os.environ['TOYRUN_IMAGE'])\n"
    )
    from tests.conftest import run_cli

    proc = run_cli(
        ["run", "tasks.py", "Label", "--image", "cell.toyimg"], cwd=work, env={"CONTAINERBATCH_TOYRUN_LABEL": "hello"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "results" / "label.txt").read_text() == "hello cell.toyimg"
    failure = classify(None, JobStatus(JobState.FAILED, "failed"), 99, runtime="toyrun")
    assert failure.reason.value == "image_error" and "toy image" in failure.detail
    assert classify(None, JobStatus(JobState.FAILED, "failed"), 99, runtime="docker").reason.value == "lost"


def test_broken_entry_points_are_listed_by_doctor_never_a_traceback(installed: Path, tmp_path: Path):
    from tests.conftest import run_cli

    site = tmp_path / "broken-site"
    dist_info(site, "containerbatch_broken", BROKEN)
    env = {"PYTHONPATH": f"{site}:{os.environ['PYTHONPATH']}"}
    proc = run_cli(["doctor", "--json"], cwd=tmp_path, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    errors = {row["name"]: row["error"] for row in report["plugins"]}
    assert "No module named 'no_such_module_cb'" in errors["broken"]
    assert "not a class" in errors["notaclass"]
    assert "does not implement" in errors["abstract"] and "submit_argv" in errors["abstract"]
    assert "registered as 'misnamed'" in errors["misnamed"]
    assert "module:Class" in errors["badform"]
    assert "NoSuchRuntime" in errors["crashy"]
    assert errors["toyq"] is None and errors["local"] is None
    listed = {c["name"] for c in report["checks"] if "plugin" in c["section"] and not c["ok"]}
    assert {"broken", "notaclass", "abstract", "misnamed", "badform", "crashy"} <= listed
    run = run_cli(["run", "tasks.py", "X", "--batch-system", "abstract"], cwd=tmp_path, env=env)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr


class TestToyrun(RuntimeContract):
    runtime = "toyrun"
    isolated = False  # the toy runtime runs with the host's environment

    @pytest.fixture(autouse=True)
    def _installed(self, installed: Path) -> None:
        pass

    def image(self, tmp_path: Path) -> str | None:
        (tmp_path / "cell.toyimg").touch()
        return "cell.toyimg"


def test_small_fake_gets_the_kits_faults_and_job_life(installed: Path, tmp_path: Path):
    """The example's 60-line fake (FakeBatch) has what the built-in fakes have: logged calls, tool faults
    from the kit's fault command, jobs run for real, a kill, a hold that keeps a job from starting."""
    import subprocess
    import time

    state = tmp_path / "state"
    env = {**os.environ, "CB_TOYQ_STATE": str(state), "CB_FAKE_STATE": str(state)}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run(sys.executable, str(EXAMPLE / "bin" / name), *args)

    def fault(*args: str) -> None:
        assert run(sys.executable, "-m", "containerbatch.testing.fakes", "fault", *args).returncode == 0

    def stat(job: str) -> str:
        for _ in range(200):
            out = tool("toyq-stat", job).stdout
            if out:
                return out.split()[1] + " " + out.split()[2]
            time.sleep(0.05)
        raise AssertionError("no such job")

    def until(job: str, want: str) -> None:
        deadline = time.time() + 30
        while stat(job) != want:
            assert time.time() < deadline, (job, stat(job), want)
            time.sleep(0.1)

    (tmp_path / "ok.sh").write_text("echo hello\nexit 3\n")
    (tmp_path / "long.sh").write_text("sleep 60\n")
    sub = ("toyq-sub", "--name", "n", "--out", "o.txt", "--err", "e.txt")
    try:
        assert tool(*sub, "ok.sh").stdout == "toyq: job 1 queued\n"
        until("1", "DONE 3")
        assert (tmp_path / "o.txt").read_text() == "hello\n"
        fault("error", "toyq-stat", "--count", "2", "--message", "toyq: server down", "--exit-code", "7")
        for _ in range(2):
            failed = tool("toyq-stat", "1")
            assert (failed.returncode, failed.stdout, failed.stderr) == (7, "", "toyq: server down\n")
        assert tool("toyq-stat", "1").stdout == "1 DONE 3\n"
        fault("garbage", "toyq-stat", "--count", "1", "--text", "<html>{")
        assert tool("toyq-stat", "1").stdout == "<html>{"
        assert tool(*sub, "long.sh").returncode == 0
        until("2", "RUNNING -")
        assert tool("toyq-del", "2").stdout == "toyq: job 2 deleted\n"
        until("2", "KILLED 143")
        assert tool("toyq-del", "2").returncode == 1  # over: nothing to delete
        fault("hold", "batch", "3")  # before the job exists: applied when it does
        assert tool(*sub, "ok.sh").returncode == 0
        time.sleep(1.5)
        assert stat("3") == "PENDING -"  # held: never started
        calls = [json.loads(line)["tool"] for line in (state / "calls.log").read_text().splitlines()]
        assert calls[:2] == ["toyq-sub", "toyq-stat"] and calls.count("toyq-del") == 2
    finally:
        FakeBatch(state).cleanup()
        run(sys.executable, "-m", "containerbatch.testing.fakes", "cleanup")
