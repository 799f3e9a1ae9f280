"""One behaviour contract, run over every runtime (host, docker, podman, apptainer) and scheduler (local, slurm).

Each case runs a tiny workflow with ``containerbatch run … --runtime R --image IMG`` and checks what the task
saw inside its container: the bound input, a clean environment with the `env` setting in it, the image's own
Python, and that a failing task is reported with its reason, exit code and log path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
from pathlib import Path

import pytest

from containerbatch.testing import RuntimeContract
from tests.conftest import DEMO_IMAGE, FAKES_BIN, IN_CI, run_cli

WORKFLOW = """
import json, os, platform, luigi

class Facts(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/facts.json")

    def run(self):
        facts = {
            "uid": os.getuid(),
            "path": os.environ.get("PATH", ""),
            "contract_env": os.environ.get("CB_CONTRACT"),
            "host_only": os.environ.get("CB_HOST_ONLY"),
            "bound": open(os.environ["CB_INPUT"]).read(),
            "os_release": open("/etc/os-release").read(),
            "python": platform.python_version(),
            "sees_repo": os.path.exists(os.environ["CB_REPO_FILE"]),
            "cwd": os.getcwd(),
        }
        print("FACTS " + json.dumps(facts))
        with self.output().open("w") as handle:
            json.dump(facts, handle)

class Boom(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/never")

    def run(self):
        raise RuntimeError("contract failure 42")

class All(luigi.WrapperTask):
    def requires(self):
        return [Facts(), Boom()]
"""

ODD_VALUE = "spaces, commas; $dollar 'quotes' \"double\""
CASES = [
    pytest.param("host", "local", id="host-local"),
    pytest.param("docker", "local", id="docker-local", marks=pytest.mark.docker),
    pytest.param("podman", "local", id="podman-local", marks=pytest.mark.podman),
    pytest.param("apptainer", "local", id="apptainer-local", marks=pytest.mark.apptainer),
    pytest.param("docker", "slurm", id="docker-slurm", marks=[pytest.mark.docker, pytest.mark.slurm]),
    pytest.param("apptainer", "slurm", id="apptainer-slurm", marks=[pytest.mark.apptainer, pytest.mark.slurm]),
]


@pytest.mark.parametrize(("runtime", "scheduler"), CASES)
def test_runtime_contract(runtime: str, scheduler: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if scheduler != "local" and importlib.util.find_spec(f"containerbatch.schedulers.{scheduler}") is None:
        message = f"containerbatch.schedulers.{scheduler} is not there yet"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path / "work"
    work.mkdir()
    (work / "wf.py").write_text(WORKFLOW)
    data = tmp_path / "data"  # outside the working directory: visible only through the bind
    data.mkdir()
    (data / "input.txt").write_text("bound input\n")
    inside = str(data / "input.txt") if runtime == "host" else "/data/input.txt"
    # a host file outside every folder the engines bind by default (apptainer binds /tmp, $HOME and the
    # current folder, so the repository itself may be visible when it is cloned under /tmp)
    probe = Path("/srv") / f"cb-contract-probe-{os.getpid()}-{runtime}-{scheduler}"
    probe.write_text("host only\n")
    request.addfinalizer(lambda: probe.unlink(missing_ok=True))
    settings = {
        "binds": [f"{data}:/data:ro"],
        "env": {"CB_CONTRACT": ODD_VALUE, "CB_INPUT": inside, "CB_REPO_FILE": str(probe)},
    }
    (work / "settings.json").write_text(json.dumps(settings))

    host_path = f"/cb-host-only-dir:{os.environ['PATH']}"
    env = {"CB_HOST_ONLY": "leaked", "PATH": host_path}
    args = ["run", "wf.py", "All", "--runtime", runtime, "--batch-system", scheduler, "--workers", "2"]
    if runtime in ("docker", "podman"):
        args += ["--image", DEMO_IMAGE]
    elif runtime == "apptainer":
        args += ["--image", str(request.getfixturevalue("rootfs"))]
        env["PATH"] = f"{FAKES_BIN}:{host_path}"
    proc = run_cli(args, cwd=work, env=env)
    output = proc.stdout + proc.stderr

    # the failing task fails the run, with reason, exit code and where its log is
    assert proc.returncode == 1, output[-3000:]
    assert "contract failure 42" in output and "task_error" in output
    assert "exit code" in output and str(work / "logs" / "Boom") in output
    boom = json.loads(next((work / "logs" / "Boom").glob("*/attempt-1/result.json")).read_text())
    assert boom["status"] == "failure" and "contract failure 42" in boom["exception"]
    assert not (work / "results" / "never").exists()

    # the good task: result.json read back, output owned by the submitting user
    facts_result = json.loads(next((work / "logs" / "Facts").glob("*/attempt-1/result.json")).read_text())
    assert facts_result["status"] == "success"
    out_file = work / "results" / "facts.json"
    assert out_file.stat().st_uid == os.getuid()
    facts = json.loads(out_file.read_text())
    stdout_log = next((work / "logs" / "Facts").glob("*/attempt-1/stdout")).read_text()
    assert "FACTS " in stdout_log  # the task's own output lands in the job's log

    assert facts["uid"] == os.getuid()
    assert facts["bound"] == "bound input\n"
    assert facts["contract_env"] == ODD_VALUE  # the env setting arrives intact
    assert facts["cwd"] == str(work)
    assert "bookworm" in facts["os_release"]
    if runtime == "host":
        assert facts["python"] == platform.python_version()
    else:
        # a clean environment: neither the host's PATH nor its variables, and only bound folders
        assert "/cb-host-only-dir" not in facts["path"]
        assert facts["host_only"] is None
        assert facts["sees_repo"] is False
        assert facts["python"] == "3.11.2"  # the image's Python (Debian bookworm), not the host's


# -- the kit's runtime contract, over the built-in runtimes -------------------------------------------
class TestHostRuntime(RuntimeContract):
    runtime = "host"
    isolated = False  # the host's environment is the task's


@pytest.mark.docker
class TestDockerRuntime(RuntimeContract):
    runtime = "docker"

    def image(self, tmp_path: Path) -> str | None:
        return DEMO_IMAGE
