"""The foundation end to end: the example workflow in Docker on the local scheduler."""

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DEMO_IMAGE, ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")
pytestmark = pytest.mark.docker


def _journal(work: Path) -> list[dict]:
    db = sqlite3.connect(work / ".containerbatch" / "journal.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM attempts")]


def test_example_runs_in_containers(tmp_path):
    proc = run_cli(["run", EXAMPLE, "Summary", "--samples", "3", "--image", DEMO_IMAGE, "--workers", "3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "results" / "summary_3.txt").read_text().startswith("3 fits")
    sample = json.loads((tmp_path / "results" / "sample_0.json").read_text())
    # the image's Python (Debian bookworm), not the host's
    assert sample["python"].startswith("3.11.2")
    rows = _journal(tmp_path)
    assert sorted(r["task_family"] for r in rows) == ["Fit"] * 3 + ["Simulate"] * 3 + ["Summary"]
    assert {r["runtime"] for r in rows} == {"docker"} and {r["state"] for r in rows} == {"done"}
    for row in rows:
        result = json.loads((Path(row["job_dir"]) / "result.json").read_text())
        assert result["status"] == "success"
        assert "docker run --name" in (Path(row["job_dir"]) / "job.sh").read_text().replace("/usr/bin/docker", "docker")
    # containers are removed after the run
    names = subprocess.run(
        ["/usr/bin/docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout
    ours = {
        "cb-" + hashlib.sha1(f"{r['run_id']}/{r['task_id']}".encode()).hexdigest()[:10] + f"-{r['attempt']}"
        for r in rows
    }
    assert ours and not ours & set(names.split())


def test_second_run_submits_nothing(tmp_path):
    args = ["run", EXAMPLE, "Fit", "--sample", "1", "--image", DEMO_IMAGE]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    before = len(_journal(tmp_path))
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0
    assert len(_journal(tmp_path)) == before


def test_missing_image_is_config_error_before_submission(tmp_path):
    proc = run_cli(["run", EXAMPLE, "Summary", "--samples", "2", "--image", "no-such-image:404"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "no-such-image:404" in proc.stderr and "docker pull" in proc.stderr
    assert not (tmp_path / "logs").exists()
    assert not (tmp_path / ".containerbatch" / "journal.sqlite").exists()


def test_failing_task_reports_log_and_exit_code(tmp_path):
    (tmp_path / "wf.py").write_text(
        "import luigi\n"
        "class Boom(luigi.Task):\n"
        "    def output(self):\n"
        "        return luigi.LocalTarget('results/never')\n"
        "    def run(self):\n"
        "        print('about to fail')\n"
        "        raise ValueError('the fit did not converge')\n"
    )
    proc = run_cli(["run", "wf.py", "Boom", "--image", DEMO_IMAGE], cwd=tmp_path)
    assert proc.returncode == 1
    assert "the fit did not converge" in proc.stdout  # the end summary
    assert "task_error" in proc.stdout and "logs/Boom" in proc.stdout
    assert not (tmp_path / "results" / "never").exists()


def test_image_without_python_is_image_error(tmp_path):
    (tmp_path / "wf.py").write_text(
        "import luigi\n"
        "class T(luigi.Task):\n"
        "    executable = ['/no/python3']\n"
        "    def output(self):\n"
        "        return luigi.LocalTarget('results/t')\n"
        "    def run(self):\n"
        "        pass\n"
    )
    proc = run_cli(["run", "wf.py", "T", "--image", DEMO_IMAGE], cwd=tmp_path)
    assert proc.returncode == 1
    assert "image_error" in proc.stdout


def test_container_runs_as_submitting_user(tmp_path, workdir, monkeypatch):
    """Results written inside belong to the submitting user: `-u UID:GID` of the submitter.

    The submitter's identity is faked (uid 12345) in the runtime, the way a
    non-root user would submit; the container then writes as that user.
    """
    import containerbatch.runtimes.docker as docker_runtime
    from containerbatch.cli.common import build_task
    from containerbatch.worker import process

    monkeypatch.setattr(docker_runtime.os, "getuid", lambda: 12345)
    monkeypatch.setattr(docker_runtime.os, "getgid", lambda: 12346)
    (workdir / "owner_wf.py").write_text(
        "import os, luigi\n"
        "class Own(luigi.Task):\n"
        "    image = 'cb-demo:latest'\n"
        "    def output(self):\n"
        "        return luigi.LocalTarget('results/owned.txt')\n"
        "    def run(self):\n"
        "        with self.output().open('w') as f:\n"
        "            f.write(f'{os.getuid()}:{os.getgid()}')\n"
    )
    for parent in [workdir, *workdir.parents]:  # pytest's tmp folders are 0700
        if str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o755)
    old = os.umask(0)  # the folders containerbatch creates stay writable for uid 12345
    try:
        task = build_task(str(workdir / "owner_wf.py"), ["Own"])
        assert process([task]) is True
    finally:
        os.umask(old)
    out = workdir / "results" / "owned.txt"
    assert out.read_text() == "12345:12346"
    assert (out.stat().st_uid, out.stat().st_gid) == (12345, 12346)
    job_sh = next((workdir / "logs").rglob("job.sh")).read_text()
    assert "-u 12345:12346" in job_sh and "--privileged" not in job_sh and "--init" in job_sh
