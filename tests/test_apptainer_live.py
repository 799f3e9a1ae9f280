"""The Apptainer runtime against the real Apptainer (1.4, Debian sid) of the ci/htcondor pool.

``ci/htcondor/bin/apptainer`` runs it in the pool container, as the pool's job owner, in the caller's folder
(a shared one: tmp_path is under /tmp).  Jobs run with batch_system local (job.sh on this host calls
``apptainer`` by name, found first on PATH) or htcondor (job.sh on the pool's node calls the node's own).
Selected like the live HTCondor tests (tests/conftest.py): with CI set, a missing pool fails them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import live_env, require

pytestmark = pytest.mark.apptainer_live

TASKS = """
import json
import os
import luigi


class Env(luigi.Task):
    tag = luigi.Parameter(default="a")

    def output(self):
        return luigi.LocalTarget("results/env_%s.json" % self.tag)

    def run(self):
        names = ("CB_X", "CB_Y", "BATCH_SYSTEM", "_CONDOR_SCRATCH_DIR", "APPTAINER_CONTAINER", "HOME")
        seen = {k: os.environ.get(k) for k in names}
        seen["cwd"] = os.getcwd()
        seen["module_visible"] = os.path.exists(os.path.abspath(__file__))
        seen["release"] = open("/etc/cb-demo-release").read() if os.path.exists("/etc/cb-demo-release") else None
        with self.output().open("w") as handle:
            json.dump(seen, handle)


class Exit(luigi.Task):
    code = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget("results/exit_%d.txt" % self.code)

    def run(self):
        os._exit(self.code)


class Gpu(luigi.Task):
    resources = {"gpus": 1}

    def output(self):
        return luigi.LocalTarget("results/gpu.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ran")


class Pair(luigi.WrapperTask):
    def requires(self):
        return [Env(tag="one"), Env(tag="two")]
"""


@pytest.fixture(scope="module", autouse=True)
def real_apptainer() -> None:
    require("apptainer_live")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "tasks.py").write_text(TASKS)
    return folder


def cli(args: list[str], work: Path, env: dict[str, str] | None = None, timeout: float = 900):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "containerbatch", *args, "--no-progress"],
        cwd=work,
        env={**live_env(), "CONTAINERBATCH_POLL_INTERVAL": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def apptainer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apptainer", *args], cwd=cwd, env=live_env(), capture_output=True, text=True, timeout=600)


def journal(work: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM attempts ORDER BY task_id, attempt").fetchall()


def test_cleanenv_environment_and_same_path_binds(work: Path, live_sif: Path) -> None:
    # on the pool's node: HTCondor puts BATCH_SYSTEM and _CONDOR_SCRATCH_DIR into the job's environment;
    # --cleanenv keeps them out of the container, the task's env (commas, spaces) arrives as APPTAINERENV_
    env = {"CONTAINERBATCH_ENV": json.dumps({"CB_X": "a,b c", "CB_Y": "x=y;'q'"})}
    args = ["run", "tasks.py", "Env", "--runtime", "apptainer", "--image", str(live_sif), "--batch-system"]
    proc = cli([*args, "htcondor"], work, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads((work / "results" / "env_a.json").read_text())
    assert (seen["CB_X"], seen["CB_Y"]) == ("a,b c", "x=y;'q'")
    assert seen["BATCH_SYSTEM"] is None and seen["_CONDOR_SCRATCH_DIR"] is None
    assert seen["APPTAINER_CONTAINER"] == str(live_sif)
    assert seen["release"] == "built from images/demo/Dockerfile\n"
    assert seen["cwd"] == str(work) and seen["module_visible"]  # the folders at the same paths
    # without --cleanenv the node's job environment shows through
    (work / "results" / "env_a.json").unlink()
    proc = cli([*args, "htcondor"], work, env={**env, "CONTAINERBATCH_APPTAINER_CLEANENV": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads((work / "results" / "env_a.json").read_text())
    assert seen["BATCH_SYSTEM"] == "HTCondor" and seen["CB_X"] == "a,b c"
    script = (Path(journal(work)[-1]["job_dir"]) / "job.sh").read_text()
    assert "apptainer exec --bind" in script and "/usr/bin/apptainer" not in script  # by name on the node


@pytest.mark.parametrize("code", [3, 42])
def test_exit_codes_pass_through(work: Path, live_sif: Path, code: int) -> None:
    # the runner dies with the code before writing its result: the exit code is what apptainer passed on
    args = ["run", "tasks.py", "Exit", "--code", str(code), "--runtime", "apptainer", "--image", str(live_sif)]
    proc = cli(args, work, env={"CONTAINERBATCH_MAX_ATTEMPTS": "1"})
    assert proc.returncode == 1
    (row,) = journal(work)
    assert (row["state"], row["exit_code"]) == ("failed", code)
    assert (Path(row["job_dir"]) / "exit_code").read_text().strip() == str(code)
    assert f"exit code {code}" in proc.stderr


def test_missing_and_corrupt_sif_are_refused_before_submission(work: Path) -> None:
    missing = cli(["run", "tasks.py", "Env", "--runtime", "apptainer", "--image", "nope.sif"], work)
    assert missing.returncode == 2 and "not found" in missing.stderr
    corrupt = work / "corrupt.sif"
    corrupt.write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\0" * 200)
    refused = cli(["run", "tasks.py", "Env", "--runtime", "apptainer", "--image", str(corrupt)], work)
    assert refused.returncode == 2 and "is not a SIF file" in refused.stderr
    assert not (work / ".containerbatch" / "journal.sqlite").exists() or journal(work) == []
    # and the real apptainer agrees that the file is no image
    assert apptainer("exec", str(corrupt), "true", cwd=work).returncode != 0


def test_image_cache_converts_a_docker_archive_once(work: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cb-demo.tar"
    subprocess.run(["/usr/bin/docker", "save", "-o", str(archive), "cb-demo:latest"], check=True, timeout=300)
    cache = tmp_path / "sif-cache"
    env = {"CONTAINERBATCH_IMAGE_CACHE": str(cache)}
    image = f"docker-archive:{archive}"
    proc = cli(["run", "tasks.py", "Pair", "--runtime", "apptainer", "--image", image, "--workers", "2"], work, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sifs = sorted(cache.glob("*.sif"))
    assert len(sifs) == 1 and proc.stderr.count("converting docker-archive:") == 1
    for tag in ("one", "two"):
        assert json.loads((work / "results" / f"env_{tag}.json").read_text())["APPTAINER_CONTAINER"] == str(sifs[0])
    # a second run finds the SIF and converts nothing
    for tag in ("one", "two"):
        (work / "results" / f"env_{tag}.json").unlink()
    again = cli(["run", "tasks.py", "Pair", "--runtime", "apptainer", "--image", image, "--workers", "2"], work, env)
    assert again.returncode == 0 and "converting" not in again.stderr
    assert sorted(cache.glob("*.sif")) == sifs


def test_image_convert_builds_with_the_real_apptainer(live_sif: Path, tmp_path: Path) -> None:
    # live_sif was built from `containerbatch image convert images/demo/Dockerfile --base-archive`; its labels
    # and environment come from the Dockerfile
    labels = apptainer("inspect", "--labels", str(live_sif), cwd=tmp_path)
    assert labels.returncode == 0 and "cb-demo-extended" in labels.stdout, labels.stderr
    out = apptainer("exec", "--cleanenv", str(live_sif), "sh", "-c", "echo $CB_DEMO_FLAVOUR", cwd=tmp_path)
    assert out.stdout.strip() == "extended", out.stderr


def test_gpu_request_adds_nv(work: Path, live_sif: Path) -> None:
    proc = cli(["run", "tasks.py", "Gpu", "--runtime", "apptainer", "--image", str(live_sif)], work)
    (row,) = journal(work)
    script = (Path(row["job_dir"]) / "job.sh").read_text()
    assert "apptainer exec --cleanenv --nv " in script
    # no GPU here: the real apptainer says so and runs the task anyway
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results" / "gpu.txt").read_text() == "ran"
