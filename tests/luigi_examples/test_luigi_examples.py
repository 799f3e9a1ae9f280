"""luigi's example workflows through ``containerbatch run`` write what luigi itself writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
EXAMPLES = [
    ("hello_world.py", ["examples.HelloWorldTask"]),
    ("foo.py", ["examples.Foo"]),
    ("dynamic_requirements.py", ["Dynamic", "--seed", "3"]),
    ("wordcount.py", ["WordCount", "--date-interval", "2024-01-01-2024-01-04"]),
]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERBATCH_")}
    env["CONTAINERBATCH_DOCKER_BINARY"] = "/usr/bin/docker"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd), env.get("PYTHONPATH", "")])
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def data(folder: Path) -> dict[str, bytes]:
    base = folder / "data"
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()} if base.exists() else {}


def both(tmp: Path, name: str, task: list[str], extra: list[str]) -> tuple[dict[str, bytes], dict[str, bytes], str]:
    plain, batch = tmp / "luigi", tmp / "containerbatch"
    for folder in (plain, batch):
        folder.mkdir()
        shutil.copy(HERE / name, folder / name)
    module = name[:-3]
    first = run([sys.executable, "-m", "luigi", "--module", module, *task, "--local-scheduler"], plain)
    assert first.returncode == 0 and ":)" in first.stderr, first.stderr[-2000:]
    second = run([sys.executable, "-m", "containerbatch", "run", name, *task, *extra, "--json", "--no-progress"], batch)
    assert second.returncode == 0, second.stderr[-3000:]
    doc = json.loads(second.stdout[second.stdout.index("{") :])
    assert doc["ok"] is True and doc["tasks"], doc
    return data(plain), data(batch), second.stderr


@pytest.mark.parametrize(("name", "task"), EXAMPLES)
def test_luigi_example_on_the_host(tmp_path: Path, name: str, task: list[str]) -> None:
    expected, got, log = both(tmp_path, name, task, ["--runtime", "host"])
    assert got == expected
    if name == "hello_world.py":
        assert expected == {}
        assert list((tmp_path / "containerbatch" / "logs").rglob("result.json"))  # it ran as a job
    if name == "dynamic_requirements.py":
        assert "Dynamic_3.txt" in got and len(got) >= 5


@pytest.mark.docker
def test_luigi_dynamic_requirements_in_docker(tmp_path: Path) -> None:
    expected, got, _log = both(
        tmp_path,
        "dynamic_requirements.py",
        ["Dynamic", "--seed", "3"],
        ["--image", "cb-demo:latest"],
    )
    assert got == expected


@pytest.mark.docker
def test_luigis_own_tmp_paths_fail_with_outputs_missing_in_docker(tmp_path: Path) -> None:
    """luigi's foo example as shipped writes /tmp/bar: in a container that is lost, and said so."""
    outside = f"/tmp/b2luigi-foo-{uuid.uuid4().hex[:8]}"
    text = (HERE / "foo.py").read_text().replace('f"data/bar/{self.num}"', f'f"{outside}/bar/{{self.num}}"')
    work = tmp_path / "work"
    work.mkdir()
    (work / "foo_tmp.py").write_text(text)
    proc = run(
        [sys.executable, "-m", "containerbatch", "run", "foo_tmp.py", "examples.Foo"]
        + ["--image", "cb-demo:latest", "--workers", "4", "--json", "--no-progress"],
        work,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    doc = json.loads(proc.stdout[proc.stdout.index("{") :])
    reasons = {t["task_id"]: t["reasons"] for t in doc["tasks"] if t["task_id"].startswith("examples.Bar")}
    assert len(reasons) == 4 and all(r == ["outputs_missing"] for r in reasons.values()), reasons
    assert "outside the folders bound into the container" in proc.stderr
    assert not os.path.exists(outside)
