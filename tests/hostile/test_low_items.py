"""The low items of #12 that had fixes but no test: each test fails without its fix.

* runtimes were cached by name only: a task's own docker_binary after the first task was ignored;
* a ``:`` in a Docker bind path failed only at run time (``-v`` has no escape for it);
* ``doctor --image`` left a stopped container behind;
* a locked journal (a second submitter holding it) was a raw sqlite traceback;
* a full disk (ENOSPC while writing job files or the journal) was a raw traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE
from tests.hostile.conftest import cb, rows, tree

DOCKER_SHIM = """#!/bin/bash
printf '%s\\n' "$*" >> {log}
exec /usr/bin/docker "$@"
"""

TWO = """
import luigi


class Echo(luigi.Task):
    name = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget("results/%s.txt" % self.name)

    def run(self):
        with self.output().open("w") as handle:
            handle.write(self.name)


class A(Echo):
    docker_binary = {a!r}


class B(Echo):
    docker_binary = {b!r}
    image = "cb-demo"  # the same image by another name: checked again before submission, with B's client


class Both(luigi.WrapperTask):
    def requires(self):
        return [A(name="a"), B(name="b")]
"""


def _shim(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    path = folder / name
    path.write_text(DOCKER_SHIM.format(log=log))
    path.chmod(0o755)
    return path, log


@pytest.mark.docker
def test_each_task_runs_with_the_runtime_of_its_own_settings(workdir: Path, tmp_path: Path) -> None:
    a, a_log = _shim(tmp_path / "shims", "docker-a")
    b, b_log = _shim(tmp_path / "shims", "docker-b")
    (workdir / "wf.py").write_text(TWO.format(a=str(a), b=str(b)))
    proc = cb(workdir, "run", "wf.py", "Both", "--runtime", "docker", "--image", DEMO_IMAGE, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # each task's container went through its own client (not the first task's for both)
    a_runs = [ln for ln in a_log.read_text().splitlines() if ln.startswith("run ")]
    b_runs = [ln for ln in b_log.read_text().splitlines() if ln.startswith("run ")]
    assert len(a_runs) == 1 and "/logs/A/" in a_runs[0], a_runs
    assert len(b_runs) == 1 and "/logs/B/" in b_runs[0], b_runs
    # and the submit-side checks of B's image (preflight: the engine's version, the image) through B's client
    b_checks = [ln for ln in b_log.read_text().splitlines() if not ln.startswith(("run ", "inspect ", "rm "))]
    assert b_checks, b_log.read_text()


COLON = """
import luigi


class Out(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/out.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ran")
"""


@pytest.mark.docker
def test_a_colon_in_a_docker_bind_path_is_refused_before_anything_is_submitted(tmp_path: Path) -> None:
    work = tmp_path / "run:2"
    work.mkdir()
    (work / "wf.py").write_text(COLON)
    proc = cb(work, "run", "wf.py", "Out", "--runtime", "docker", "--image", DEMO_IMAGE, "--no-progress")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no escape for ':'" in proc.stderr and str(work) in proc.stderr.replace("\n", "")
    assert not (work / "logs").exists() and not (work / "results").exists()  # nothing was submitted


@pytest.mark.docker
def test_doctor_image_leaves_no_container_behind(workdir: Path, tmp_path: Path) -> None:
    shim, log = _shim(tmp_path / "shims", "docker")
    proc = cb(
        workdir, "doctor", "--image", DEMO_IMAGE, "--runtime", "docker", env={"CONTAINERBATCH_DOCKER_BINARY": str(shim)}
    )
    assert "CB-DOCTOR" not in proc.stderr
    runs = [ln.split() for ln in log.read_text().splitlines() if ln.startswith("run ")]
    assert runs, log.read_text()  # the probe did start a container, through the shim
    for argv in runs:
        name = argv[argv.index("--name") + 1]
        left = subprocess.run(
            ["/usr/bin/docker", "ps", "-a", "-q", "--filter", f"name=^{name}$"], capture_output=True, text=True
        )
        assert left.returncode == 0 and left.stdout.strip() == "", f"container {name} was left behind"


def test_a_locked_journal_is_a_clear_error_and_loses_nothing(workdir: Path) -> None:
    """A second submitter (another process) holds the journal's write lock past the busy timeout: exit 2 with
    what to do, never "move it aside" (which would lose it); the journal is intact afterwards."""
    (workdir / "wf.py").write_text(COLON)
    first = cb(workdir, "run", "wf.py", "Out", "--runtime", "host", "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    before = rows(workdir)
    (workdir / "results" / "out.txt").unlink()
    holder = sqlite3.connect(workdir / ".containerbatch" / "journal.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a second submitter in the middle of a write holds
    try:
        code = (
            "import sys, containerbatch.journal as j; j.BUSY_TIMEOUT = 0.5; from containerbatch.cli import main; "
            "sys.argv = ['containerbatch', 'run', 'wf.py', 'Out', '--runtime', 'host', '--no-progress']; main()"
        )
        proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    said = proc.stderr.replace("\n", " ")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "is locked by another process" in said and "mv " not in said
    assert not (workdir / "results" / "out.txt").exists()  # nothing ran behind the lock's back
    assert rows(workdir) == before  # nothing lost


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 2 MiB tmpfs, filled up: every write there is ENOSPC."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        with open(mount / "filler", "wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("where", ["log_dir", "state_dir"])
def test_a_full_disk_is_a_clear_error_and_loses_nothing(workdir: Path, full_disk: Path, where: str) -> None:
    """Job files (log_dir) or the journal (state_dir) on a full filesystem: a message naming the cause and
    a non-zero exit, no traceback; the user's files are untouched."""
    (workdir / "wf.py").write_text(COLON)
    (workdir / "results").mkdir()
    (workdir / "results" / "keep.txt").write_text("a result the user made\n")
    (workdir / "settings.json").write_text(json.dumps({where: str(full_disk / "cb")}))
    before = tree(workdir)
    proc = cb(workdir, "run", "wf.py", "Out", "--runtime", "host", "--no-progress")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    said = (proc.stderr + proc.stdout).replace("\n", " ")
    assert "No space left on device" in said, said[-3000:]
    after = tree(workdir)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing the user made changed
    assert not (workdir / "results" / "out.txt").exists()
