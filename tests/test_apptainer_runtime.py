"""ApptainerRuntime / SingularityRuntime: argv, environment, preflight and the image cache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from containerbatch import images, jobscript
from containerbatch.errors import ConfigError
from containerbatch.runtimes.apptainer import ApptainerRuntime, SingularityRuntime
from containerbatch.settings import DEFINITIONS
from containerbatch.spec import Bind, JobSpec, Resources
from tests.conftest import FAKES_BIN, ROOT, run_cli

SIF_HEAD = images.SIF_LAUNCH.ljust(32, b"\0") + images.SIF_MAGIC + b"\0" + b"\x01" * 22


def make_spec(
    work: str | Path = "/w",
    image: str | None = "/img/analysis.sif",
    *,
    env: dict[str, str] | None = None,
    binds: tuple[Bind, ...] = (),
    gpus: int | None = None,
    bundle: str | None = "/cb/bundle/k",
    **settings: Any,
) -> JobSpec:
    values = {name: d.default for name, d in DEFINITIONS.items()}
    values.update(settings)
    work = str(work)
    job_dir = f"{work}/logs/Fit/Fit_a_1/attempt-1"
    return JobSpec(
        run_id="run-1",
        task_id="Fit_a_1",
        task_family="Fit",
        task_module="wf",
        module_file="/code/wf.py",
        params=MappingProxyType({"sample": "a"}),
        attempt=1,
        batch_system="local",
        runtime="apptainer",
        image=image,
        working_dir=work,
        result_dir=f"{work}/results",
        log_dir=f"{work}/logs",
        state_dir=f"{work}/.cb",
        job_dir=job_dir,
        marker_path=f"{work}/.cb/runs/run-1/done/Fit_a_1.1",
        job_name="cb-Fit",
        executable=("python3",),
        binds=binds,
        env=MappingProxyType(env or {}),
        resources=Resources(gpus=gpus),
        bundle_dir=bundle,
        settings=MappingProxyType(values),
    )


def runtime(cls: type[ApptainerRuntime] = ApptainerRuntime, binary: str = "/usr/bin/apptainer") -> ApptainerRuntime:
    return cls({"apptainer_binary": binary})


# -- argv ----------------------------------------------------------------------------------------------------------
def test_command_golden() -> None:
    spec = make_spec(
        binds=(Bind("/data", "/in", read_only=True), Bind("/scratch", "/scratch")),
        apptainer_extra_args=["--writable-tmpfs"],
    )
    assert runtime().command(spec) == [
        "/usr/bin/apptainer",
        "exec",
        "--cleanenv",
        "--bind",
        "/w:/w",  # working dir: results and logs are inside, not bound again
        "--bind",
        "/code:/code:ro",  # the workflow's folder
        "--bind",
        "/cb/bundle/k:/cb/bundle/k:ro",
        "--bind",
        "/data:/in:ro",
        "--bind",
        "/scratch:/scratch",
        "--pwd",
        "/w",
        "--writable-tmpfs",
        "/img/analysis.sif",
        "python3",
        "-m",
        "containerbatch.runner",
        "/w/logs/Fit/Fit_a_1/attempt-1",
    ]


def test_flags_follow_settings_and_resources() -> None:
    spec = make_spec(gpus=1, apptainer_cleanenv=False, apptainer_containall=True, apptainer_no_home=True)
    argv = runtime().command(spec)
    flags = argv[2 : argv.index("--bind")]
    assert flags == ["--containall", "--no-home", "--nv"]
    assert "--nv" not in runtime().command(make_spec(gpus=None))
    assert "--cleanenv" not in argv


def test_result_and_log_dirs_outside_working_dir_are_bound() -> None:
    spec = replace(make_spec(), result_dir="/results", log_dir="/logs", job_dir="/logs/Fit/Fit_a_1/attempt-1")
    binds = [argv for argv in runtime().command(spec) if ":" in argv and argv.startswith("/")]
    assert binds[:3] == ["/w:/w", "/results:/results", "/logs:/logs"]


def test_environment_goes_through_prefixed_exports() -> None:
    spec = make_spec(env={"OMP_NUM_THREADS": "2", "CSV": "a,b,c", "PYTHONPATH": "/opt/lib"})
    exports = runtime().exports(spec)
    assert exports == {
        "APPTAINERENV_PYTHONDONTWRITEBYTECODE": "1",
        "APPTAINERENV_OMP_NUM_THREADS": "2",
        "APPTAINERENV_CSV": "a,b,c",  # a comma would split an --env value; an exported variable keeps it
        "APPTAINERENV_PYTHONPATH": "/cb/bundle/k:/opt/lib",
    }
    assert not any(a.startswith("--env") for a in runtime().command(spec))


def test_singularity_uses_its_binary_and_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(FAKES_BIN))
    sing = SingularityRuntime({})
    spec = make_spec(env={"A": "1"})
    assert sing.binary() == str(FAKES_BIN / "singularity")
    assert sing.command(spec)[:2] == ["singularity", "exec"]  # by name: found on the node's PATH
    assert set(sing.exports(spec)) == {
        "SINGULARITYENV_A",
        "SINGULARITYENV_PYTHONDONTWRITEBYTECODE",
        "SINGULARITYENV_PYTHONPATH",
    }
    # apptainer runtime on a host with only `singularity`: that binary, and the prefix it reads
    only = tmp_path / "only-singularity"
    only.mkdir()
    (only / "singularity").symlink_to(FAKES_BIN / "apptainer")
    monkeypatch.setenv("PATH", str(only))
    app = ApptainerRuntime({})
    assert app.binary() == str(only / "singularity")
    assert "SINGULARITYENV_A" in app.exports(spec)
    monkeypatch.setenv("PATH", f"{FAKES_BIN}:{only}")
    assert ApptainerRuntime({}).binary() == str(FAKES_BIN / "apptainer")


def test_task_setting_of_binary_wins() -> None:
    spec = make_spec(apptainer_binary="singularity")  # bare name: resolved on the node's PATH
    assert runtime().command(spec)[0] == "singularity"
    assert all(k.startswith("SINGULARITYENV_") for k in runtime().exports(spec))


def test_odd_values_are_quoted_in_job_script(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    odd = f'it\'s $(touch {canary}); `touch {canary}` "q"\nline2 $HOME \\ , * ?'
    spec = make_spec(work=tmp_path, env={"ODD": odd}, bundle=None)
    Path(spec.job_dir).mkdir(parents=True)
    script = jobscript.render(spec, ["/usr/bin/env", "-0"], exports=runtime().exports(spec))
    Path(spec.script_path).write_text(script)
    proc = subprocess.run(["bash", spec.script_path], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    env = dict(item.split(b"=", 1) for item in proc.stdout.split(b"\0") if b"=" in item)
    assert env[b"APPTAINERENV_ODD"].decode() == odd
    assert not canary.exists()


def test_bad_env_names_and_home_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"Fit_a_1.*not valid shell names"):
        runtime().exports(make_spec(env={"BAD-NAME": "1"}))
    with pytest.raises(ConfigError, match="HOME"):
        runtime().preflight(make_spec(env={"HOME": "/x"}, image="docker://x"))


# -- preflight -------------------------------------------------------------------------------------------------
@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def test_preflight_missing_sif_names_task_path_and_fix(work: Path) -> None:
    with pytest.raises(ConfigError) as info:
        runtime().preflight(make_spec(work, image="missing.sif"))
    text = str(info.value)
    assert "Fit_a_1" in text and str(work / "missing.sif") in text and "apptainer build" in text


def test_preflight_not_a_sif(work: Path) -> None:
    (work / "fake.sif").write_bytes(b"#!/usr/bin/env run-singularity\n" + b"\0" * 40)  # header, no magic
    with pytest.raises(ConfigError, match=r"not a SIF file.*SIF_MAGIC"):
        runtime().preflight(make_spec(work, image="fake.sif"))


def test_preflight_empty_dir(work: Path) -> None:
    (work / "sandbox").mkdir()
    with pytest.raises(ConfigError, match="without /bin or /usr"):
        runtime().preflight(make_spec(work, image="sandbox"))


def test_preflight_unreadable(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "a.sif").write_bytes(SIF_HEAD)
    (work / "a.sif").chmod(0)
    if os.geteuid() == 0:  # root reads every file: let access() answer as for an ordinary user
        import containerbatch.runtimes.apptainer as apptainer_runtime

        monkeypatch.setattr(apptainer_runtime.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="cannot be read"):
        runtime().preflight(make_spec(work, image="a.sif"))


def test_preflight_accepts_sif_sandbox_and_uris(work: Path) -> None:
    (work / "ok.sif").write_bytes(SIF_HEAD)
    (work / "root" / "usr").mkdir(parents=True)
    rt = runtime()
    for image in (
        "ok.sif",
        str(work / "ok.sif"),
        "root",
        "docker://python:3.11",
        "docker-daemon:cb-demo:latest",
        "oras://ghcr.io/x/y:1",
        "library://alpine",
    ):
        rt.preflight(make_spec(work, image=image))
    assert rt.command(make_spec(work, image="ok.sif"))[-5] == str(work / "ok.sif")  # relative to working_dir
    assert rt.command(make_spec(work, image="docker://python:3.11"))[-5] == "docker://python:3.11"


def test_preflight_refuses_unbindable_paths(tmp_path: Path) -> None:
    work = tmp_path / "a,b"
    work.mkdir()
    (work / "ok.sif").write_bytes(SIF_HEAD)
    with pytest.raises(ConfigError, match=r"cannot bind .*a,b"):
        runtime().preflight(make_spec(work, image="ok.sif"))


# -- image cache ----------------------------------------------------------------------------------------------------
FAKE_PULL = f"""#!{sys.executable}
import os, sys, time
with open(os.environ["PULL_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] not in ("pull", "build") or os.environ.get("PULL_FAIL"):
    sys.stderr.write("FATAL:   While making image from oci registry: manifest unknown\\n")
    sys.exit(255)
time.sleep(float(os.environ.get("PULL_SLEEP", "0.3")))
with open(sys.argv[2], "wb") as out:
    out.write({SIF_HEAD!r})
"""


@pytest.fixture
def fake_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `apptainer` on PATH that only pulls: writes a file with SIF magic and logs every call."""
    bin_dir = tmp_path / "pullbin"
    bin_dir.mkdir()
    script = bin_dir / "apptainer"
    script.write_text(FAKE_PULL)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "pull.log"
    log.touch()
    monkeypatch.setenv("PULL_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def test_one_pull_for_many_tasks_and_threads(work: Path, fake_pull: Path) -> None:
    rt = ApptainerRuntime({})
    specs = [make_spec(work, image="docker://python:3.11-slim", image_cache="cache") for _ in range(12)]
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda s=s: results.append(rt.prepare_image(s))) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = str(work / "cache" / images.cache_name("docker://python:3.11-slim"))
    assert results == [expected] * 12
    calls = fake_pull.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("pull ") and calls[0].endswith(" docker://python:3.11-slim")
    assert images.image_format(expected) == "sif"
    # every job runs the cached file; no partial files are left behind
    assert rt.command(specs[0])[-5] == expected
    assert sorted(p.name for p in (work / "cache").iterdir()) == [Path(expected).name, Path(expected).name + ".lock"]


def test_concurrent_submitters_pull_once(work: Path, fake_pull: Path) -> None:
    code = (
        "import sys; from containerbatch.images import ensure_cached; "
        "print(ensure_cached('apptainer', 'oras://ghcr.io/x/y:1', sys.argv[1]))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(work / "cache")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(4)
    ]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1 and len(fake_pull.read_text().splitlines()) == 1


def test_daemon_images_are_built_and_local_images_not_touched(work: Path, fake_pull: Path) -> None:
    rt = ApptainerRuntime({})
    assert rt.prepare_image(make_spec(work, image="docker-daemon:cb-demo:latest", image_cache="c")) is not None
    assert fake_pull.read_text().split()[0] == "build"
    (work / "ok.sif").write_bytes(SIF_HEAD)
    assert rt.prepare_image(make_spec(work, image="ok.sif", image_cache="c")) is None
    assert rt.prepare_image(make_spec(work, image="docker://a:1")) is None  # no cache: apptainer pulls per job
    assert len(fake_pull.read_text().splitlines()) == 1


def test_failed_pull_is_config_error_with_stderr(work: Path, fake_pull: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULL_FAIL", "1")
    with pytest.raises(ConfigError, match=r"(?s)could not convert docker://nope:1.*manifest unknown") as info:
        ApptainerRuntime({}).prepare_image(make_spec(work, image="docker://nope:1", image_cache="cache"))
    assert "Fit_a_1" in str(info.value)
    assert [p.suffix for p in (work / "cache").iterdir()] == [".lock"]


def test_pull_timeout_is_config_error(work: Path, fake_pull: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULL_SLEEP", "5")
    with pytest.raises(ConfigError, match="longer than"):
        images.ensure_cached("apptainer", "docker://slow:1", work / "cache", timeout=0.5)


# -- end to end through the apptainer test double -----------------------------------------------------------------
WORKFLOW = """
import os, platform, luigi
class Where(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/where.txt")
    def run(self):
        with self.output().open("w") as f:
            f.write(platform.python_version() + " " + os.environ.get("APPTAINER_CONTAINER", ""))
"""


def _pull_then_exec_bin(tmp_path: Path) -> Path:
    """`apptainer` = the fake pull for `pull`, the apptainer test double for everything else."""
    bin_dir = tmp_path / "wrapbin"
    bin_dir.mkdir()
    (bin_dir / "pull.py").write_text(FAKE_PULL)
    wrapper = bin_dir / "apptainer"
    wrapper.write_text(
        f'#!/bin/bash\nif [ "$1" = pull ]; then exec {sys.executable} {bin_dir / "pull.py"} "$@"; fi\n'
        f'exec {FAKES_BIN / "apptainer"} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


@pytest.mark.apptainer
def test_cached_sif_runs_in_every_job(tmp_path: Path, rootfs: Path) -> None:
    """With image_cache, a docker:// image is pulled once before submission and jobs run the SIF."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "wf.py").write_text(WORKFLOW)
    (work / "settings.json").write_text('{"image_cache": "sifs"}')
    bin_dir = _pull_then_exec_bin(tmp_path)
    log = tmp_path / "pull.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PULL_LOG": str(log), "CB_FAKE_APPTAINER_SIF_ROOT": str(rootfs)}
    proc = run_cli(
        ["run", "wf.py", "Where", "--runtime", "apptainer", "--image", "docker://cb-demo:latest"], cwd=work, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sif = work / "sifs" / images.cache_name("docker://cb-demo:latest")
    version, container = (work / "results" / "where.txt").read_text().split()
    assert version == "3.11.2" and container == str(sif)
    assert len(log.read_text().splitlines()) == 1
