"""An image needs only python3: luigi and the runner come from the bundle, unless the image has its own."""

import shutil
import sqlite3
import subprocess
import uuid

import pytest

from containerbatch.bundle import ensure_bundle
from tests.conftest import DEMO_IMAGE, ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")
DOCKER = "/usr/bin/docker"
pytestmark = pytest.mark.docker


def _journal(work):
    db = sqlite3.connect(work / ".containerbatch" / "journal.sqlite")
    try:
        return db.execute("SELECT task_family, attempt, state, reason FROM attempts ORDER BY submitted").fetchall()
    finally:
        db.close()


def test_image_without_luigi_and_no_bundle_is_an_image_error(tmp_path):
    proc = run_cli(
        ["run", EXAMPLE, "Simulate", "--sample", "1", "--image", DEMO_IMAGE],
        cwd=tmp_path,
        env={"CONTAINERBATCH_BUNDLE": "never"},
    )
    assert proc.returncode == 1
    assert "image_error" in proc.stdout and "bundle" in proc.stdout  # the end summary
    # an image error is not the infrastructure's: not resubmitted
    assert _journal(tmp_path) == [("Simulate", 1, "failed", "image_error")]


def test_image_with_its_own_luigi_gets_no_bundle(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    shutil.copytree(ensure_bundle(tmp_path / "state"), context / "site")
    (context / "Dockerfile").write_text(f"FROM {DEMO_IMAGE}\nCOPY site/ /usr/lib/python3/dist-packages/\n")
    tag = f"cb-demo-luigi:test-{uuid.uuid4().hex[:8]}"
    subprocess.run([DOCKER, "build", "-q", "-t", tag, str(context)], check=True, capture_output=True, timeout=300)
    try:
        work = tmp_path / "work"
        work.mkdir()
        proc = run_cli(
            ["run", EXAMPLE, "Fit", "--sample", "2", "--image", tag],
            cwd=work,
            env={"CONTAINERBATCH_IMAGE_HAS_LUIGI": "true"},
        )
        assert proc.returncode == 0, proc.stderr
        assert (work / "results" / "fit_2.json").exists()
        for job_sh in (work / "logs").rglob("job.sh"):
            text = job_sh.read_text()
            assert "PYTHONPATH" not in text and "/bundle/" not in text
        assert not (work / ".containerbatch" / "bundle").exists()
    finally:
        subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
