"""luigi's own options reach luigi: two submitters share one central scheduler (luigid, shipped with luigi)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

WORKFLOW = """
import time
import luigi


class Shared(luigi.Task):
    runtime = "host"

    def output(self):
        return luigi.LocalTarget("results/shared.txt")

    def run(self):
        with open("results/shared-runs.log", "a") as log:
            log.write("ran\\n")
        time.sleep(4)
        with self.output().open("w") as f:
            f.write("shared")


class Top(luigi.Task):
    runtime = "host"
    name = luigi.Parameter()

    def requires(self):
        return Shared()

    def output(self):
        return luigi.LocalTarget(f"results/top-{self.name}.txt")

    def run(self):
        with self.output().open("w") as f:
            f.write(self.name)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def luigid(tmp_path: Path):
    binary = shutil.which("luigid") or ""
    argv = [binary] if binary else [sys.executable, "-c", "from luigi.cmdline import luigid; luigid()"]
    port = free_port()
    state = tmp_path / "luigid"
    state.mkdir()
    proc = subprocess.Popen(
        [*argv, "--port", str(port), "--address", "127.0.0.1", "--state-path", str(state / "state.pickle")],
        stdout=subprocess.DEVNULL,
        stderr=open(state / "luigid.log", "w"),  # noqa: SIM115
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"luigid did not start: {(state / 'luigid.log').read_text()[-1000:]}")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def task_list(port: int, status: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/task_list?data=" + urllib.request.quote(json.dumps({"status": status}))
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())["response"]


def test_two_submitters_share_one_luigid(workdir: Path, luigid: int) -> None:
    (workdir / "wf.py").write_text(WORKFLOW)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid), "--worker-keep-alive"]
    submitters = [
        subprocess.Popen(
            [sys.executable, "-m", "containerbatch", "run", "wf.py", "Top", "--name", name, *common, "--no-progress"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300) for p in submitters]
    for proc, (_out, err) in zip(submitters, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    assert (workdir / "results" / "top-a.txt").read_text() == "a"
    assert (workdir / "results" / "top-b.txt").read_text() == "b"
    # the shared requirement ran once, for both: the central scheduler gave it to one submitter
    assert (workdir / "results" / "shared-runs.log").read_text() == "ran\n"
    # and luigid scheduled all three (with a local scheduler each, luigid would know none of them)
    done = task_list(luigid, "DONE")
    assert sorted(v["name"] for v in done.values()) == ["Shared", "Top", "Top"], done


B2LUIGI_WORKFLOW = """
import containerbatch.b2luigi as b2luigi


class Numbered(b2luigi.Task):
    n = b2luigi.IntParameter()

    def output(self):
        yield self.add_to_output("n.txt")

    def run(self):
        with open(self.get_output_file_name("n.txt"), "w") as f:
            f.write(str(self.n))


if __name__ == "__main__":
    b2luigi.set_setting("result_dir", "results")
    b2luigi.set_setting("batch_system", "local")
    b2luigi.set_setting("runtime", "host")
    b2luigi.process([Numbered(n=i) for i in range(2)], workers=2)
"""


def test_b2luigi_scheduler_host_flag_reaches_luigid(workdir: Path, luigid: int) -> None:
    pytest.importorskip("b2luigi")
    (workdir / "b2wf.py").write_text(B2LUIGI_WORKFLOW)
    proc = subprocess.run(
        [sys.executable, "b2wf.py", "--batch", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(v["name"] for v in task_list(luigid, "DONE").values()) == ["Numbered", "Numbered"]
    assert len(list((workdir / "logs").rglob("result.json"))) == 2  # submitted through containerbatch
