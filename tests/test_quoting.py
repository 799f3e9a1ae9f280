"""Parameters and paths with spaces, quotes, $(…), backticks, ; and newlines pass through unchanged.

Nothing in them is executed by a shell.
"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, run_cli

HOSTILE = [
    "two words",
    'it\'s "quoted"',
    "$(touch {canary}/dollar)",
    "`touch {canary}/backtick`",
    "a; touch {canary}/semicolon",
    "line1\nline2 $(touch {canary}/newline)",
    "*?[glob] ~ \\back\\slash & | > <",
]

WORKFLOW = """
import json
import luigi

class Echo(luigi.Task):
    value = luigi.Parameter()

    def output(self):
        import hashlib
        return luigi.LocalTarget("results/" + hashlib.sha1(self.value.encode()).hexdigest() + ".json")

    def run(self):
        with self.output().open("w") as handle:
            json.dump({"value": self.value}, handle)
"""


def _workdir(tmp_path: Path) -> Path:
    # the working directory itself has a hostile name
    work = tmp_path / "work dir 'q' $(touch canary-dir) ; x"
    work.mkdir()
    (work / "wf with space.py").write_text(WORKFLOW)
    return work


def _check(work: Path, canary: Path, value: str, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = list((work / "results").glob("*.json"))
    assert [json.loads(p.read_text())["value"] for p in outputs] == [value]
    assert list(canary.iterdir()) == [], "a value was executed by a shell"
    assert not (work / "canary-dir").exists()


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_parameters_host_runtime(tmp_path, template):
    canary = tmp_path / "canary"
    canary.mkdir()
    value = template.format(canary=canary)
    work = _workdir(tmp_path)
    proc = run_cli(["run", str(work / "wf with space.py"), "Echo", "--value", value, "--runtime", "host"], cwd=work)
    _check(work, canary, value, proc)


@pytest.mark.docker
def test_hostile_parameters_docker(tmp_path):
    canary = tmp_path / "canary"
    canary.mkdir()
    value = "\n".join(t.format(canary=canary) for t in HOSTILE)
    work = _workdir(tmp_path)
    proc = run_cli(["run", str(work / "wf with space.py"), "Echo", "--value", value, "--image", DEMO_IMAGE], cwd=work)
    _check(work, canary, value, proc)
    show = run_cli(["show", str(work / "wf with space.py"), "Echo", "--value", value, "--image", DEMO_IMAGE], cwd=work)
    assert show.returncode == 0, show.stderr
    assert "docker run --name" in show.stdout.replace("/usr/bin/docker", "docker")
