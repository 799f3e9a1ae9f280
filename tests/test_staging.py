"""HTCondor without a shared filesystem (``transfer_files``): what travels in, what comes back, and a real
run through the HTCondor fake, whose jobs then run in a scratch folder of their own."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from containerbatch import jobfiles, jobscript, staging
from containerbatch.errors import ConfigError
from containerbatch.jobscript import STAGE_IN, STAGE_OUT
from containerbatch.run import Run
from containerbatch.schedulers.htcondor import HTCondorScheduler
from containerbatch.settings import DEFINITIONS
from containerbatch.spec import JobSpec
from tests.conftest import DEMO_IMAGE, FAKES_BIN, run_cli

htcondor2 = pytest.importorskip("htcondor2", reason="pip install htcondor (the test extra)")


def make_spec(base: Path, runtime: str = "docker", **settings: object) -> JobSpec:
    job_dir = base / "logs" / "Fit" / "Fit_a" / "attempt-1"
    job_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "htcondor_container_mode": "wrap",
        "htcondor_settings": {},
        "transfer_files": True,
        "batch_system": "htcondor",
        "docker_binary": "/usr/bin/docker",
        **settings,
    }
    return JobSpec(
        run_id="20240101-000000-abcdef",
        task_id="Fit_a",
        task_family="Fit",
        task_module="wf",
        module_file=str(base / "wf.py"),
        params={"sample": "a"},
        attempt=1,
        batch_system="htcondor",
        runtime=runtime,
        image=DEMO_IMAGE if runtime in ("docker", "podman") else "/images/a.sif",
        working_dir=str(base),
        result_dir=str(base / "results"),
        log_dir=str(base / "logs"),
        state_dir=str(base / ".containerbatch"),
        job_dir=str(job_dir),
        marker_path=str(base / ".containerbatch" / "markers" / "Fit_a.1"),
        job_name="cb-abcdef-Fit",
        executable=("python3",),
        bundle_dir=str(base / ".containerbatch" / "bundle" / "k"),
        settings=values,
    )


def render(spec: JobSpec) -> tuple[str, list[str], str]:
    script, command, sub = Run().render(spec)
    assert sub is not None
    return script, command, sub


# ----------------------------------------------------------------------------- submit side, offline


def test_setting_takes_bool_or_list():
    convert = DEFINITIONS["transfer_files"].convert
    assert convert("true") is True and convert(False) is False
    assert convert(["data/a.txt"]) == ["data/a.txt"] and convert('["x"]') == ["x"]
    with pytest.raises(TypeError, match="true, false or a list"):
        convert(3)


def test_submit_file_sends_one_archive_and_remaps_the_marker(tmp_path):
    spec = make_spec(tmp_path)
    sub = htcondor2.Submit(HTCondorScheduler({}).submit_file(spec))
    assert sub["should_transfer_files"] == "YES" and sub["when_to_transfer_output"] == "ON_EXIT"
    assert sub["transfer_input_files"] == f"{spec.job_dir}/{STAGE_IN}"
    assert sub["transfer_output_files"] == f"{STAGE_OUT},cb_done"
    assert sub["transfer_output_remaps"] == f'"cb_done = {spec.marker_path}"'
    # a shared filesystem (the default) transfers nothing
    shared = htcondor2.Submit(HTCondorScheduler({}).submit_file(make_spec(tmp_path, transfer_files=False)))
    assert shared["should_transfer_files"] == "NO" and "transfer_input_files" not in shared


def test_job_script_binds_only_the_scratch_folder(tmp_path):
    spec = make_spec(tmp_path)
    script, command, _sub = render(spec)
    sources = [command[i + 1].split(":")[0] for i, a in enumerate(command) if a == "-v"]
    assert sources and all(s.startswith("@CB_SCRATCH@/cb_root/") for s in sources)
    targets = {command[i + 1].split(":")[1] for i, a in enumerate(command) if a == "-v"}
    assert spec.working_dir in targets  # result, log, job folders and bundle lie inside it
    # in job.sh the placeholder is the shell variable, quoted apart from the rest
    assert f'-v "$cb_scratch"/cb_root{spec.working_dir}:{spec.working_dir} ' in script
    assert jobscript.q("@CB_SCRATCH@/cb_root/a b:/a b") == "\"$cb_scratch\"'/cb_root/a b:/a b'"
    assert jobscript.q("@CB_SCRATCH@") == '"$cb_scratch"'
    assert "@CB_SCRATCH@" not in script
    assert 'cb_scratch="${_CONDOR_SCRATCH_DIR:-$PWD}"' in script
    assert f"cd -- {spec.working_dir}" not in script  # the submit-side folder does not exist on the node
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runtime": "host"}, "runtime host"),
        ({"settings": {"htcondor_container_mode": "universe"}}, "htcondor_container_mode 'universe'"),
        ({"marker_path": "/runs/a;b/m"}, "transfer lists"),
        ({"settings": {"transfer_files": ["missing.dat"]}}, "does not exist"),
    ],
)
def test_what_cannot_be_staged_is_a_config_error(tmp_path, changes, message):
    spec = make_spec(tmp_path)
    if "settings" in changes:
        changes = {**changes, "settings": {**spec.settings, **changes["settings"]}}
    spec = replace(spec, **changes)
    with pytest.raises(ConfigError, match=message) as info:
        HTCondorScheduler({}).check(spec)
    assert info.value.setting == "transfer_files"


def test_pack_inputs_holds_what_the_job_needs_and_nothing_else(tmp_path, monkeypatch):
    import importlib.util
    import sys

    import luigi

    base = tmp_path / "flow"
    base.mkdir()
    (base / "wf.py").write_text("# workflow\n")
    (base / "lib").mkdir()
    (base / "lib" / "helpers.py").write_text("X = 1\n")
    # modules of the folder the workflow never imported: a big one and one holding a secret
    (base / "unrelated.py").write_text("# " + "x" * 2_000_000 + "\n")
    (base / "lib" / "keys.py").write_text("TOKEN = 'do-not-ship'\n")
    # what the workflow imports from its folder
    found = importlib.util.spec_from_file_location("cb_test_lib_helpers", base / "lib" / "helpers.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "cb_test_lib_helpers", module)
    (base / "settings.json").write_text("{}")
    (base / "secret.txt").write_text("not for the node\n")
    (base / ".git").mkdir()
    (base / ".git" / "config.py").write_text("")
    (base / "venv").mkdir()
    (base / "venv" / "pyvenv.cfg").write_text("")
    (base / "venv" / "site.py").write_text("")
    (base / "results").mkdir()
    (base / "results" / "in.txt").write_text("input\n")
    (base / "results" / "other.py").write_text("an output that happens to be Python\n")
    (base / "data").mkdir()
    (base / "data" / "calib.txt").write_text("calibration\n")
    bundle = base / ".containerbatch" / "bundle" / "k" / "luigi"
    bundle.mkdir(parents=True)
    (bundle / "__init__.py").write_text("")

    class In(luigi.ExternalTask):
        def output(self):
            return luigi.LocalTarget(str(base / "results" / "in.txt"))

    class Use(luigi.Task):
        def requires(self):
            return In()

    spec = make_spec(base, transfer_files=["data/calib.txt"])
    (Path(spec.job_dir) / "task.json").write_text("{}")
    (Path(spec.job_dir) / "job.sh").write_text("#!/bin/bash\n")
    jobfiles.write_private(str(Path(spec.job_dir) / jobfiles.ENV_FILE), "export SECRET=s3cr3t\n")
    archive = staging.pack_inputs(spec, Use())
    assert os.stat(archive).st_mode & 0o777 == 0o600  # it carries env.sh: only the user may read it
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert tar.getmember(rel_name(Path(spec.job_dir) / jobfiles.ENV_FILE)).mode & 0o777 == 0o600
    rel = lambda p: str(p).lstrip("/")  # noqa: E731
    for wanted in (
        base / "wf.py",
        base / "lib" / "helpers.py",
        base / "settings.json",
        base / "results" / "in.txt",
        base / "data" / "calib.txt",
        bundle / "__init__.py",
        Path(spec.job_dir) / "task.json",
        Path(spec.job_dir) / "job.sh",
        Path(spec.job_dir) / jobfiles.ENV_FILE,
    ):
        assert rel(wanted) in names, wanted
    for unwanted in (
        base / "unrelated.py",
        base / "lib" / "keys.py",
        base / "secret.txt",
        base / ".git" / "config.py",
        base / "venv" / "site.py",
        base / "results" / "other.py",
        Path(spec.job_dir) / STAGE_IN,
    ):
        assert rel(unwanted) not in names, unwanted


def rel_name(path: Path) -> str:
    return str(path).lstrip("/")


def _archive(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)


def test_unpack_writes_inside_the_task_folders_only(tmp_path, caplog):
    spec = make_spec(tmp_path / "w")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("user's file\n")
    rel = lambda p: str(p).lstrip("/")  # noqa: E731
    _archive(
        Path(spec.job_dir) / STAGE_OUT,
        {
            rel(Path(spec.result_dir) / "sub" / "out.txt"): b"result",
            rel(Path(spec.job_dir) / "result.json"): b'{"status": "success"}',
            rel(outside): b"overwritten",
            rel(Path(spec.result_dir) / ".." / ".." / "elsewhere.txt"): b"overwritten",
        },
        links={rel(Path(spec.result_dir) / "link"): "/etc/passwd"},
    )
    written = staging.unpack_outputs(spec, outputs=[str(Path(spec.result_dir) / "sub" / "out.txt")])
    assert sorted(written) == sorted([str(Path(spec.result_dir) / "sub" / "out.txt"), spec.result_path])
    assert (Path(spec.result_dir) / "sub" / "out.txt").read_text() == "result"
    assert outside.read_text() == "user's file\n"
    assert not (Path(spec.result_dir) / "link").exists()
    assert caplog.text.count("refused '") == 3
    assert len((Path(spec.job_dir) / "stage-out-refused.txt").read_text().splitlines()) == 3


def test_unpack_without_archive_says_so(tmp_path, caplog):
    spec = make_spec(tmp_path)
    assert staging.unpack_outputs(spec, wait=0.3) == []
    assert "no stage-out.tar.gz came back" in caplog.text


# ----------------------------------------------------------------------------- a run through the fake

WORKFLOW = """
import json
import os
import luigi

HERE = os.path.dirname(os.path.abspath(__file__))


class Make(luigi.Task):
    n = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/make_{self.n}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(str(self.n * 10))


class Use(luigi.Task):
    def requires(self):
        return [Make(n=1), Make(n=2)]

    def output(self):
        return luigi.LocalTarget("results/sub/use.json")

    def run(self):
        extra = yield Make(n=3)  # a dynamic requirement: the second attempt must find its output
        seen = {
            "inputs": [open(t.path).read() for t in self.input()],
            "dynamic": open(extra.path).read(),
            "calib": open("data/calib.txt").read(),
            "secret_visible": os.path.exists(os.path.join(HERE, "secret.txt")),
            "cwd": os.getcwd(),
        }
        with self.output().open("w") as handle:
            json.dump(seen, handle)
"""


@pytest.mark.parametrize(
    ("runtime", "marker_first"),
    [
        pytest.param("docker", False, marks=pytest.mark.docker, id="docker"),
        pytest.param("apptainer", False, marks=pytest.mark.apptainer, id="apptainer"),
        # HTCondor lands the done-marker 2 s before the output archive: the task must still succeed
        pytest.param("docker", True, marks=pytest.mark.docker, id="docker-marker-first"),
    ],
)
def test_workflow_runs_without_a_shared_filesystem(runtime, marker_first, tmp_path, fake_schedulers, request):
    work = tmp_path / "work"
    work.mkdir()
    (work / "wf.py").write_text(WORKFLOW)
    (work / "data").mkdir()
    (work / "data" / "calib.txt").write_text("calibration 1.5\n")
    (work / "secret.txt").write_text("stays on the submit host\n")
    (work / "settings.json").write_text(json.dumps({"transfer_files": ["data/calib.txt"], "poll_interval": 1}))
    args = ["run", "wf.py", "Use", "--batch-system", "htcondor", "--runtime", runtime, "--workers", "2"]
    env = {"CB_FAKE_TRANSFER_REVERSED": "1"} if marker_first else {}
    if runtime == "docker":
        args += ["--image", DEMO_IMAGE]
    else:
        args += ["--image", str(request.getfixturevalue("rootfs"))]
        env["PATH"] = f"{FAKES_BIN}:{os.environ['PATH']}"
        # HTCondor jobs get no PATH (getenv = false): the node's apptainer by its path there
        env["CONTAINERBATCH_NODE_ENGINE_BINARY"] = str(FAKES_BIN / "apptainer")
    try:
        proc = run_cli(args, cwd=work, env=env)
    finally:
        subprocess.run([str(FAKES_BIN / "fakesched-fault"), "cleanup"], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]

    # outputs came back to their submit-side paths, from jobs that saw only what was sent
    assert (work / "results" / "make_1.txt").read_text() == "10"
    assert (work / "results" / "make_2.txt").read_text() == "20"
    seen = json.loads((work / "results" / "sub" / "use.json").read_text())
    assert seen == {
        "inputs": ["10", "20"],
        "dynamic": "30",
        "calib": "calibration 1.5\n",
        "secret_visible": False,
        "cwd": str(work),
    }
    assert (work / "secret.txt").read_text() == "stays on the submit host\n"

    # each job ran in a scratch folder of its own, removed afterwards; one archive each way
    assert not any((fake_schedulers / "execute").iterdir())
    job_dirs = sorted((work / "logs").glob("*/*/attempt-*"))
    statuses = sorted(
        (d.parent.parent.name, d.name, json.loads((d / "result.json").read_text())["status"]) for d in job_dirs
    )
    assert statuses == [("Make", "attempt-1", "success")] * 3 + [
        ("Use", "attempt-1", "new_deps"),
        ("Use", "attempt-2", "success"),
    ]
    for job_dir in job_dirs:
        assert (job_dir / STAGE_IN).is_file() and (job_dir / STAGE_OUT).is_file()
        assert (job_dir / "exit_code").read_text().strip() == "0"
        with tarfile.open(job_dir / STAGE_IN) as tar:
            assert not any(n.endswith("secret.txt") for n in tar.getnames())
    calls = [json.loads(line) for line in (fake_schedulers / "calls.log").read_text().splitlines()]
    assert sum(c["tool"] == "condor_submit" for c in calls) == 5


def test_show_prints_the_staged_job_without_submitting(tmp_path, fake_schedulers):
    (tmp_path / "wf.py").write_text(WORKFLOW)
    args = ["show", "wf.py", "Make", "--n", "1", "--batch-system", "htcondor", "--image", DEMO_IMAGE]
    env = {"CONTAINERBATCH_TRANSFER_FILES": "true"}
    text = run_cli(args, cwd=tmp_path, env=env)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "transfer_output_remaps = " in text.stdout and "stage-in.tar.gz" in text.stdout
    assert f'-v "$cb_scratch"/cb_root{tmp_path}:{tmp_path}' in text.stdout and "@CB_SCRATCH@" not in text.stdout
    doc = json.loads(run_cli([*args, "--json"], cwd=tmp_path, env=env).stdout)
    assert f"$_CONDOR_SCRATCH_DIR/cb_root{tmp_path}:{tmp_path}" in doc["container_command"]
    assert (
        not (fake_schedulers / "calls.log").exists()
        or "condor_submit" not in (fake_schedulers / "calls.log").read_text()
    )
