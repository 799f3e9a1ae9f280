"""The README's promises: its two commands, and its example under every runtime."""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, FAKES_BIN, ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")


def test_readme_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.rst").read_text()
    commands = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith("bash ci/")]
    assert commands[0].startswith(
        "bash ci/docker/setup.sh && pip install -e . && containerbatch run examples/workflow.py"
    )
    assert commands[1] == "bash ci/test.sh"
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash ci/test\.sh", ci_run, re.M)
    for script in ("ci/docker/setup.sh", "ci/test.sh", "ci/slurm/setup.sh", "ci/rootfs.sh"):
        assert os.access(ROOT / script, os.R_OK), script


def _check_example(work: Path, proc) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "results" / "summary_2.txt").read_text().startswith("2 fits")


@pytest.mark.podman
def test_example_with_podman(tmp_path):
    proc = run_cli(
        ["run", EXAMPLE, "Summary", "--samples", "2", "--runtime", "podman", "--image", DEMO_IMAGE], cwd=tmp_path
    )
    _check_example(tmp_path, proc)
    assert "podman run" in next((tmp_path / "logs").rglob("job.sh")).read_text()


@pytest.mark.apptainer
def test_example_with_apptainer_test_double(tmp_path, rootfs):
    """The apptainer on PATH is tests/fakes/bin/apptainer, a test double (unshare + chroot), not Apptainer."""
    env = {"PATH": f"{FAKES_BIN}:{os.environ['PATH']}"}
    args = ["run", EXAMPLE, "Summary", "--samples", "2", "--runtime", "apptainer", "--image", str(rootfs)]
    proc = run_cli(args, cwd=tmp_path, env=env)
    _check_example(tmp_path, proc)
    job_sh = next((tmp_path / "logs").rglob("job.sh")).read_text()
    assert "apptainer exec" in job_sh.replace(str(FAKES_BIN) + "/", "")
    show = run_cli(
        ["show", EXAMPLE, "Fit", "--sample", "1", "--runtime", "apptainer", "--image", str(rootfs)],
        cwd=tmp_path,
        env=env,
    )
    assert show.returncode == 0 and re.search(r"apptainer exec .*--cleanenv", show.stdout), show.stdout


ENV_SCRIPT_FLOW = """
import os
import luigi

class Env(luigi.Task):
    env_script = "setup_env.sh"
    env = {"FROM_SETTING": "set"}

    def output(self):
        return luigi.LocalTarget("results/env.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(os.environ.get("FROM_SCRIPT", "-") + " " + os.environ.get("FROM_SETTING", "-") + " "
                         + os.environ.get("HOST_ONLY", "-"))
"""


@pytest.mark.parametrize("runtime", ["host", pytest.param("docker", marks=pytest.mark.docker)])
def test_env_script_and_env(tmp_path, runtime):
    """env_script runs on the node before the container; env reaches the task; the host's variables do not
    leak into a container."""
    (tmp_path / "wf.py").write_text(ENV_SCRIPT_FLOW)
    (tmp_path / "setup_env.sh").write_text("export FROM_SCRIPT=sourced\n")
    args = ["run", "wf.py", "Env", "--runtime", runtime] + (["--image", DEMO_IMAGE] if runtime == "docker" else [])
    proc = run_cli(args, cwd=tmp_path, env={"HOST_ONLY": "leaked"})
    assert proc.returncode == 0, proc.stderr
    got = (tmp_path / "results" / "env.txt").read_text().split()
    if runtime == "host":
        assert got == ["sourced", "set", "leaked"]
    else:
        assert got == ["-", "set", "-"]


def test_missing_env_script_is_config_error(tmp_path):
    (tmp_path / "wf.py").write_text(ENV_SCRIPT_FLOW)
    proc = run_cli(["run", "wf.py", "Env", "--runtime", "host"], cwd=tmp_path)
    assert proc.returncode == 2 and "env_script" in proc.stderr and "setup_env.sh" in proc.stderr
    assert not (tmp_path / "logs").exists()


def test_fakes_dir_exists():
    assert shutil.which("apptainer", path=str(FAKES_BIN))
