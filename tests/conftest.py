"""Shared fixtures.

Live engines (Docker, Podman, Slurm, the containerised Slurm 24.11, Grid Engine) and the apptainer test double are
required when the environment variable CI is set: a missing one fails the
test instead of skipping it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKES_BIN = ROOT / "tests" / "fakes" / "bin"
DEMO_IMAGE = "cb-demo:latest"
IN_CI = bool(os.environ.get("CI"))


def _ok(argv: list[str], timeout: float = 30) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-500:]


@functools.cache
def docker_ready() -> tuple[bool, str]:
    ok, why = _ok(["/usr/bin/docker", "info"]) if os.path.exists("/usr/bin/docker") else (False, "no /usr/bin/docker")
    if ok:
        ok, why = _ok(["/usr/bin/docker", "image", "inspect", DEMO_IMAGE])
        why = why if ok else f"image {DEMO_IMAGE} missing: run ci/docker/setup.sh"
    return ok, why


@functools.cache
def podman_ready() -> tuple[bool, str]:
    if not shutil.which("podman"):
        return False, "podman not installed"
    return _ok(["podman", "image", "exists", DEMO_IMAGE], timeout=60)


@functools.cache
def slurm_ready() -> tuple[bool, str]:
    if not shutil.which("sinfo"):
        return False, "slurm client not installed: run ci/slurm/setup.sh"
    ok, out = _ok(["sinfo", "-h", "-o", "%t"])
    return ok and bool(out) and "down" not in out, out


def slurm24_bin() -> Path:
    """The folder of the containerised Slurm 24.11 cluster's tools (``bash ci/slurm/run.sh up`` writes it):
    CB_SLURM24_BIN, else ci/slurm/bin-trixie."""
    configured = os.environ.get("CB_SLURM24_BIN")
    return Path(configured) if configured else ROOT / "ci" / "slurm" / "bin-trixie"


@functools.cache
def slurm24_ready() -> tuple[bool, str]:
    """The Slurm 24.11 cluster of ci/slurm/run.sh (Debian trixie in a container) answers and its node is up."""
    folder = slurm24_bin()
    if not (folder / "sinfo").exists():
        return False, f"no {folder}/sinfo: run `bash ci/slurm/run.sh up` (or set CB_SLURM24_BIN)"
    ok, version = _ok([str(folder / "sinfo"), "-V"])
    if not ok or not version.startswith("slurm") or " 24.11" not in version:
        return False, f"{folder}/sinfo -V: {version!r} (expected Slurm 24.11)"
    ok, out = _ok([str(folder / "sinfo"), "-h", "-o", "%t"])
    return ok and bool(out) and "down" not in out, f"{version}: {out}"


@functools.cache
def apptainer_fake_ready() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "the apptainer test double needs root (mount namespaces)"
    if not shutil.which("unshare"):
        return False, "unshare missing"
    return True, ""


@functools.cache
def sge_ready() -> tuple[bool, str]:
    """The one-node Grid Engine of ci/sge answers through its wrappers and its queue takes jobs."""
    if not os.path.exists("/usr/bin/docker"):
        return False, "no /usr/bin/docker (the Grid Engine cell runs in a container: bash ci/sge/setup.sh)"
    ok, out = _ok([str(ROOT / "ci" / "sge" / "bin" / "qstat"), "-f", "-q", "all.q"])
    if not ok or "all.q@" not in out:
        return False, f"Grid Engine not up (bash ci/sge/setup.sh): {out}"
    return True, out


def htcondor_bin() -> Path | None:
    """The folder of the live pool's tools (``ci/htcondor/run.sh up`` writes it): CB_HTCONDOR_BIN, else
    ci/htcondor/bin when it exists."""
    configured = os.environ.get("CB_HTCONDOR_BIN")
    if configured:
        return Path(configured)
    default = ROOT / "ci" / "htcondor" / "bin"
    return default if (default / "condor_submit").exists() else None


def htcondor_live_wanted() -> bool:
    """Live HTCondor/Apptainer tests run with CI set (then a missing pool fails), CB_HTCONDOR_LIVE=1, or a pool."""
    return IN_CI or os.environ.get("CB_HTCONDOR_LIVE") == "1" or htcondor_bin() is not None


def live_env() -> dict[str, str]:
    """The environment for commands against the live pool: its bin folder first on PATH."""
    folder = htcondor_bin()
    path = os.environ["PATH"]
    return {**os.environ, "PATH": f"{folder}:{path}" if folder else path}


@functools.cache
def htcondor_ready() -> tuple[bool, str]:
    folder = htcondor_bin()
    if folder is None:
        return False, "no pool: run `bash ci/htcondor/run.sh up` (or set CB_HTCONDOR_BIN)"
    argv = [str(folder / "condor_status"), "-af", "Name", "HasSingularity", "HasSIF"]
    for _ in range(10):  # a busy machine: the collector may not answer at once
        ok, out = _ok(argv, timeout=60)
        if ok and "true true" in out:
            return True, out
        time.sleep(3)
    return False, out


@functools.cache
def apptainer_real_ready() -> tuple[bool, str]:
    folder = htcondor_bin()
    if folder is None:
        return False, "no pool (its apptainer runs the real Apptainer tests): run `bash ci/htcondor/run.sh up`"
    return _ok([str(folder / "apptainer"), "--version"], timeout=60)


READY = {
    "docker": docker_ready,
    "podman": podman_ready,
    "slurm": slurm_ready,
    "slurm24": slurm24_ready,
    "apptainer": apptainer_fake_ready,
    "sge": sge_ready,
    "htcondor_live": htcondor_ready,
    "apptainer_live": apptainer_real_ready,
}


def require(name: str) -> None:
    ok, why = READY[name]()
    if not ok:
        message = f"{name} is not available: {why}"
        if IN_CI:
            pytest.fail(message + " (required because CI is set)", pytrace=False)
        pytest.skip(message)


def _is_live(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(m) is not None for m in ("htcondor_live", "apptainer_live"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests against the real HTCondor pool and its Apptainer run with CI set, with CB_HTCONDOR_LIVE=1, or
    when ``ci/htcondor/run.sh up`` made the pool's tools (ci/htcondor/bin, CB_HTCONDOR_BIN); else deselected."""
    if htcondor_live_wanted():
        return
    live = [item for item in items if _is_live(item)]
    if live:
        config.hook.pytest_deselected(items=live)
        items[:] = [item for item in items if not _is_live(item)]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in READY:
        if item.get_closest_marker(name) is not None:
            require(name)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory with no settings in force."""
    from containerbatch import settings

    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("CONTAINERBATCH_"):
            monkeypatch.delenv(key)
    saved = dict(settings._set_settings)
    settings._set_settings.clear()
    yield tmp_path
    settings._set_settings.clear()
    settings._set_settings.update(saved)


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The debootstrap root used as image everywhere (built by ci/rootfs.sh, cached under /tmp)."""
    out = subprocess.run(["bash", str(ROOT / "ci" / "rootfs.sh")], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"ci/rootfs.sh failed:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def fake_schedulers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/fakes/bin first on PATH, with a fresh shared state folder."""
    state = tmp_path / "fake-state"
    state.mkdir()
    monkeypatch.setenv("CB_FAKE_STATE", str(state))
    monkeypatch.setenv("PATH", f"{FAKES_BIN}:{os.environ['PATH']}")
    return state


def run_cli(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``containerbatch ARGS`` in a subprocess (a fresh luigi registry each time)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "containerbatch", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def live_sif() -> Path:
    """analysis.sif: images/demo's recipe built by the pool's real Apptainer (cb-demo:latest as a docker-archive).

    Cached under /tmp/cb-cache-condor by the digest of the recipe and the base image; rebuilt when absent."""
    import fcntl
    import hashlib

    require("apptainer_live")
    env = live_env()
    cache = Path(os.environ.get("CB_CACHE_DIR_CONDOR", "/tmp/cb-cache-condor"))
    cache.mkdir(parents=True, exist_ok=True)
    image_id = subprocess.run(
        ["/usr/bin/docker", "image", "inspect", "-f", "{{.Id}}", DEMO_IMAGE], capture_output=True, text=True
    ).stdout.strip()
    if not image_id:
        pytest.fail(f"{DEMO_IMAGE} is missing: run ci/docker/setup.sh", pytrace=False)
    dockerfile = ROOT / "images" / "demo" / "Dockerfile"
    digest = hashlib.sha256((image_id + dockerfile.read_text()).encode()).hexdigest()[:12]
    sif = cache / f"analysis-{digest}.sif"
    with open(cache / "analysis.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if sif.is_file():
            return sif
        archive = cache / f"cb-demo-{digest}.tar"
        subprocess.run(["/usr/bin/docker", "save", "-o", str(archive), DEMO_IMAGE], check=True, timeout=300)
        recipe = cache / f"analysis-{digest}.def"
        convert = [sys.executable, "-m", "containerbatch", "image", "convert", str(dockerfile)]
        convert += ["--base-archive", str(archive), "-o", str(recipe), "--force"]
        out = subprocess.run(convert, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        partial = sif.with_suffix(".partial.sif")
        build = ["apptainer", "build", "--force", "--fakeroot", str(partial), str(recipe)]
        out = subprocess.run(build, capture_output=True, text=True, env=env, cwd=cache, timeout=1200)
        if out.returncode != 0:
            pytest.fail(f"{' '.join(build)} failed:\n{out.stderr[-3000:]}", pytrace=False)
        partial.rename(sif)
        archive.unlink()
    return sif
