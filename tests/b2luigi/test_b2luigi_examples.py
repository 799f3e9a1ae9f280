"""b2luigi's example workflows with only the import changed write the same files as b2luigi itself.

Each workflow in workflows/ is a test version of one of b2luigi's (quick start, tutorial, its own test
workflows).  It runs once with plain b2luigi (local, as b2luigi runs it) and once with
``import containerbatch.b2luigi as b2luigi`` and ``--batch`` (containerbatch's local batch system, on the host
and in the cb-demo image under Docker); the files they write are compared one by one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # in CI b2luigi is part of the test extra: missing, it fails
    pytest.importorskip("b2luigi")

HERE = Path(__file__).resolve().parent
WORKFLOWS = HERE / "workflows"
ROOT = HERE.parent.parent
CHANGED_IMPORT = "import containerbatch.b2luigi as b2luigi"
#: what b2luigi's and containerbatch's own machinery write (job folders, task files, journal): not compared
MACHINERY = {"logs", "task_files", ".containerbatch", "settings.json", "__pycache__"}


def run_script(folder: Path, script: str, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERBATCH_", "B2LUIGI_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, script, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )


def written(folder: Path, script: str) -> dict[str, bytes]:
    """Every file the workflow wrote (relative path → content), machinery left out."""
    files = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in MACHINERY and str(rel) not in (script, "setup_script.sh"):
            files[str(rel)] = path.read_bytes()
    return files


def prepare(
    tmp: Path,
    name: str,
    containerbatch: bool,
    settings: dict[str, object] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    folder = tmp / ("containerbatch" if containerbatch else "b2luigi")
    folder.mkdir()
    for rel, content in (files or {}).items():
        (folder / rel).write_text(content)
    text = (WORKFLOWS / name).read_text()
    if containerbatch:
        assert "\nimport b2luigi\n" in text
        text = text.replace("\nimport b2luigi\n", f"\n{CHANGED_IMPORT}\n")  # the one-line change
    (folder / name).write_text(text)
    if settings:
        (folder / "settings.json").write_text(json.dumps(settings))
    return folder


def compare(
    tmp: Path, name: str, args: list[str], settings: dict[str, object], files: dict[str, str] | None = None
) -> dict[str, bytes]:
    plain = prepare(tmp, name, containerbatch=False, files=files)
    script = plain / name
    # the reference is b2luigi's local run, also for examples that ask for batch mode in the script or task
    script.write_text(script.read_text().replace(", batch=True)", ")").replace('    batch_system = "slurm"\n', ""))
    first = run_script(plain, name, args)
    assert first.returncode == 0, first.stderr[-3000:]
    expected = written(plain, name)
    assert expected, "plain b2luigi wrote nothing"

    batch = prepare(tmp, name, containerbatch=True, settings=settings, files=files)
    second = run_script(batch, name, [*args, "--batch"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "there were no failed tasks" in second.stderr, second.stderr[-3000:]
    got = written(batch, name)
    assert sorted(got) == sorted(expected), (sorted(got), sorted(expected), second.stderr[-3000:])
    for rel, content in expected.items():
        assert got[rel] == content, rel
    # really submitted through containerbatch: one job folder with a result per task that ran
    results = list((batch / "logs").rglob("result.json"))
    assert results, "no containerbatch job ran"
    for result in results:
        assert json.loads(result.read_text())["status"] == "success"
    return got


HOST = {"batch_system": "local", "runtime": "host"}


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("quickstart.py", []),
        ("tutorial.py", []),
        ("tutorial_ex01.py", []),
        ("b2luigi_tests.py", ["mylabel"]),
    ],
)
def test_same_files_as_b2luigi_on_the_host(tmp_path: Path, name: str, args: list[str]) -> None:
    got = compare(tmp_path, name, args, HOST)
    if name == "tutorial_ex01.py":
        assert got == {"parameter=1/output.txt": b"1"}  # b2luigi's folder, made before run()
    if name == "b2luigi_tests.py":
        # settings set only in the main block, the script's command line and a custom setting reached the node
        assert got["out/results/1/5/out.dat"] == b"3 1 mylabel -> 5 custom-value"


DOCKER = {"batch_system": "local", "image": "cb-demo:latest", "docker_binary": "/usr/bin/docker"}


@pytest.mark.docker
@pytest.mark.parametrize(("name", "args"), [("quickstart.py", []), ("b2luigi_tests.py", ["mylabel"])])
def test_same_files_as_b2luigi_in_docker(tmp_path: Path, name: str, args: list[str]) -> None:
    compare(tmp_path, name, args, DOCKER)
    batch = tmp_path / "containerbatch"
    task = json.loads(next((batch / "logs").rglob("task.json")).read_text())
    assert task["b2luigi_settings"]["result_dir"]
    # b2luigi came to the node in the runner bundle: the image has no b2luigi of its own
    bundle = next((batch / ".containerbatch" / "bundle").iterdir())
    assert (bundle / "b2luigi" / "__init__.py").is_file()
    check = subprocess.run(
        ["/usr/bin/docker", "run", "--rm", "cb-demo:latest", "python3", "-c", "import b2luigi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode != 0


SLURM = {
    "batch_system": "slurm",
    "env_script": "setup_script.sh",
    "executable": ["python3"],
    "job_name": "b2luigi_example",
    "slurm_settings": {"partition": "debug"},
    "image": "cb-demo:latest",
    "docker_binary": "/usr/bin/docker",
}


@pytest.mark.slurm
@pytest.mark.docker
def test_b2luigi_slurm_example_on_slurm_in_docker(tmp_path: Path) -> None:
    """b2luigi's Slurm example with its settings.json (plus an image): slurm_settings from the file and the
    task merge into #SBATCH options."""
    setup = {"setup_script.sh": 'echo "Use this script to set up your environment"\n'}
    got = compare(tmp_path, "slurm_example.py", [], SLURM, files=setup)
    assert len(got) == 4
    script = next((tmp_path / "containerbatch" / "logs" / "MyNumberTask").rglob("job.sh")).read_text()
    for line in ("--partition=debug", "--ntasks=1", "--mem=200MB", "--job-name=b2luigi_example"):
        assert f"#SBATCH {line}" in script
    rows = sqlite3.connect(tmp_path / "containerbatch" / ".containerbatch" / "journal.sqlite").execute(
        "SELECT scheduler, runtime, state FROM attempts"
    )
    assert set(rows) == {("slurm", "docker", "done")}


def test_dry_run_and_other_modes_submit_nothing(tmp_path: Path) -> None:
    folder = prepare(tmp_path, "quickstart.py", containerbatch=True, settings=HOST)
    dry = run_script(folder, "quickstart.py", ["--batch", "--dry-run"])
    assert dry.returncode == 0, dry.stderr
    assert "Would run MyAverageTask()" in dry.stdout and "In total 5" in dry.stdout
    shown = run_script(folder, "quickstart.py", ["--batch", "--show-output"])
    assert shown.returncode == 0 and "output_file.txt" in shown.stdout, shown.stderr
    assert written(folder, "quickstart.py") == {}
    assert not (folder / ".containerbatch").exists() and not (folder / "logs").exists()

    ran = run_script(folder, "quickstart.py", ["--batch"])
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert len(written(folder, "quickstart.py")) == 5
    done = run_script(folder, "quickstart.py", ["--batch", "--dry-run"])
    assert "All tasks are finished!" in done.stdout, done.stdout
    jobs = sorted((folder / "logs").rglob("result.json"))
    removed = run_script(folder, "quickstart.py", ["--batch", "--remove-only", "MyAverageTask", "-y"])
    assert removed.returncode == 0, removed.stderr
    assert sorted(written(folder, "quickstart.py")) == [f"results/some_parameter={i}/output_file.txt" for i in range(4)]
    assert sorted((folder / "logs").rglob("result.json")) == jobs  # nothing was submitted by --remove-only
    tested = run_script(folder, "quickstart.py", ["--batch", "--test"])  # b2luigi's test mode: runs right here
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert len(written(folder, "quickstart.py")) == 5
    assert sorted((folder / "logs").rglob("result.json")) == jobs  # still nothing submitted
    removed = run_script(folder, "quickstart.py", ["--batch", "--remove", "MyNumberTask", "-y"])
    assert removed.returncode == 0, removed.stderr
    assert written(folder, "quickstart.py") == {}  # the task and everything that depends on it
    assert sorted((folder / "logs").rglob("result.json")) == jobs


def test_without_batch_b2luigi_runs_locally(tmp_path: Path) -> None:
    folder = prepare(tmp_path, "tutorial_ex01.py", containerbatch=True, settings=HOST)
    ran = run_script(folder, "tutorial_ex01.py", [])
    assert ran.returncode == 0, ran.stderr
    assert written(folder, "tutorial_ex01.py") == {"parameter=1/output.txt": b"1"}
    assert not (folder / ".containerbatch").exists()  # b2luigi ran it, containerbatch submitted nothing


GROUPING = """
import containerbatch.b2luigi as b2luigi


class Grouped(b2luigi.Task):
    number = b2luigi.IntParameter(grouping=True)
    max_grouping_size = 5

    def output(self):
        yield self.add_to_output("n.txt")

    def run(self):
        with open(self.get_output_file_name("n.txt"), "w") as f:
            f.write(str(self.number))


class Top(b2luigi.WrapperTask):
    def requires(self):
        for i in range(10):
            yield Grouped(number=i)


if __name__ == "__main__":
    b2luigi.set_setting("result_dir", "results")
    b2luigi.process(Top(), batch=True)
"""


def test_parameter_grouping_is_refused_before_submission(tmp_path: Path) -> None:
    (tmp_path / "grouped.py").write_text(GROUPING)
    (tmp_path / "settings.json").write_text(json.dumps(HOST))
    ran = run_script(tmp_path, "grouped.py", [])
    assert ran.returncode == 2, ran.stderr
    assert "max_grouping_size=5" in ran.stderr and "tasks_per_job" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert not (tmp_path / "logs").exists()
