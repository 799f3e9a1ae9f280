"""Tests for the apptainer test double (tests/fakes/bin/apptainer)."""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parent / "bin"
APPTAINER = str(BIN / "apptainer")
SINGULARITY = str(BIN / "singularity")
REPO = Path(__file__).resolve().parents[2]


def _skip_reason():
    if not sys.platform.startswith("linux"):
        return "the apptainer double needs Linux mount namespaces"
    if os.geteuid() != 0:
        return "the apptainer double's tests need root (CAP_SYS_ADMIN for mounts and chroot)"
    if not shutil.which("unshare"):
        return "the unshare binary (util-linux) is not installed"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if r.returncode:
        return "unshare --mount is not permitted here: " + r.stderr.strip()
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


@pytest.fixture(scope="session")
def image():
    """The shared Debian root filesystem, used as a sandbox-directory image."""
    out = (
        subprocess.run(["bash", str(REPO / "ci" / "rootfs.sh")], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert os.path.isfile(os.path.join(out, "usr/bin/python3"))
    return out


def run(*args, prog=APPTAINER, env=None, cwd=None):
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([prog, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=60)


def tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{p} {st.st_mode} {st.st_size} {st.st_mtime_ns} {st.st_uid}\n".encode())
    return h.hexdigest()


def test_version():
    assert run("--version").stdout.strip() == "apptainer version 1.3.4-fake"
    assert run("--version", prog=SINGULARITY).stdout.strip() == "singularity-ce version 4.1.0-fake"


def test_runs_inside_image(image, tmp_path):
    r = run("exec", image, "cat", "/etc/os-release", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bookworm" in r.stdout


def test_singularity_symlink_exec(image):
    assert os.path.islink(SINGULARITY) and os.readlink(SINGULARITY) == "apptainer"
    r = run("exec", image, "python3", "-c", "print(6*7)", prog=SINGULARITY)
    assert (r.returncode, r.stdout.strip()) == (0, "42"), r.stderr


def test_binds_rw_and_ro(image, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "in.txt").write_text("input\n")
    script = (
        "cat /inp/in.txt; echo out > /data/out.txt; "
        "if echo no > /inp/x 2>/dev/null; then echo RO-WRITABLE; else echo ro-refused; fi"
    )
    r = run("exec", "-B", f"{rw}:/data", "--bind", f"{ro}:/inp:ro", image, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["input", "ro-refused"]
    out = rw / "out.txt"
    assert out.read_text() == "out\n"
    assert (out.stat().st_uid, out.stat().st_gid) == (os.getuid(), os.getgid())
    assert not (ro / "x").exists()


def test_comma_separated_binds(image, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    r = run(
        "exec",
        "-B",
        f"{a}:/mnt/a,{b}:/mnt/b:ro",
        image,
        "sh",
        "-c",
        "touch /mnt/a/ok && ! touch /mnt/b/no 2>/dev/null && echo fine",
    )
    assert (r.returncode, r.stdout.strip()) == (0, "fine"), r.stderr
    assert (a / "ok").exists() and not (b / "no").exists()


def test_host_path_dropped_and_cleanenv(image):
    env = {
        "PATH": "/opt/host-only/bin:" + os.environ["PATH"],
        "CB_SECRET": "leak",
        "APPTAINERENV_X": "from-prefix",
        "TERM": "xterm",
    }
    r = run("exec", image, "sh", "-c", 'echo "$PATH|$CB_SECRET|$X"', env=env)
    assert r.stdout.strip() == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|leak|from-prefix"
    r = run("exec", "--cleanenv", image, "env", env=env)
    inside = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert "CB_SECRET" not in inside
    assert inside["X"] == "from-prefix"
    assert inside["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert inside["LANG"] == "C" and inside["TERM"] == "xterm"
    assert not any(k.startswith("APPTAINERENV_") for k in inside)


def test_env_flags_and_singularityenv(image, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROM_FILE=f1\nexport BOTH=file\n")
    r = run(
        "exec",
        "-e",
        "--env",
        "A=1,B=2",
        "--env",
        "BOTH=flag",
        "--env-file",
        str(envfile),
        image,
        "sh",
        "-c",
        'echo "$A $B $FROM_FILE $BOTH $OLD"',
        env={"SINGULARITYENV_OLD": "old"},
    )
    assert r.stdout.strip() == "1 2 f1 flag old", r.stderr
    assert "SINGULARITYENV_OLD is set, but APPTAINERENV_OLD is preferred" in r.stderr


def test_pwd(image, tmp_path):
    r = run("exec", "--pwd", "/usr/share", image, "pwd", cwd=tmp_path)
    assert r.stdout.strip() == "/usr/share"
    r = run("exec", image, "pwd", cwd=tmp_path)  # cwd outside system dirs is bound
    assert r.stdout.strip() == str(tmp_path)


@pytest.mark.parametrize("code", [0, 3, 127])
def test_exit_code_passthrough(image, code):
    assert run("exec", image, "sh", "-c", f"exit {code}").returncode == code


def test_command_not_found(image):
    r = run("exec", image, "no-such-command")
    assert r.returncode == 255  # real apptainer: sylog.Fatalf -> 255
    assert 'FATAL:   "no-such-command": executable file not found in $PATH' in r.stderr


def test_missing_sif(tmp_path):
    sif = tmp_path / "missing.sif"
    r = run("exec", str(sif), "true")
    assert r.returncode == 255
    assert r.stderr.strip() == (
        f"FATAL:   could not open image {sif}: failed to retrieve path "
        f"for {sif}: lstat {sif}: no such file or directory"
    )


def test_not_a_sif(tmp_path):
    bogus = tmp_path / "bogus.sif"
    bogus.write_text("not an image\n")
    r = run("exec", str(bogus), "true")
    assert r.returncode == 255
    assert r.stderr.strip() == f"FATAL:   could not open image {bogus}: image format not recognized"


def test_sif_hook(image, tmp_path):
    sif = tmp_path / "img.sif"
    sif.write_bytes(b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0") + b"SIF_MAGIC\0" + b"\0" * 4096)
    r = run("exec", str(sif), "true")
    assert r.returncode == 255 and "CB_FAKE_APPTAINER_SIF_ROOT" in r.stderr
    r = run("exec", str(sif), "cat", "/etc/debian_version", env={"CB_FAKE_APPTAINER_SIF_ROOT": image})
    assert r.returncode == 0 and r.stdout.strip().startswith("12"), r.stderr


def test_unknown_flag_and_uris(image):
    r = run("exec", "--foo", image, "true")
    assert r.returncode == 255 and r.stderr.startswith("Error: unknown flag: --foo")
    r = run("exec", "docker://debian:12", "true")
    assert r.returncode == 255 and r.stderr.startswith("FATAL:   ") and "cannot pull" in r.stderr
    r = run("build", "x.sif", "docker://debian:12")
    assert r.returncode == 255 and "not supported by the test double" in r.stderr


def test_image_not_modified(image, tmp_path):
    before = tree_digest(image)
    r = run(
        "exec",
        "--writable-tmpfs",
        "-B",
        f"{tmp_path}:/brand/new/dir",
        image,
        "sh",
        "-c",
        "touch /usr/created-inside && ls /brand/new/dir >/dev/null",
    )
    assert r.returncode == 0, r.stderr
    r = run("exec", image, "sh", "-c", "touch /usr/x")
    assert r.returncode != 0 and "Read-only file system" in r.stderr  # read-only root by default
    assert tree_digest(image) == before


def test_contain_hides_host_tmp(image, tmp_path):
    marker = Path("/tmp") / f"cb-fake-marker-{os.getpid()}"
    marker.write_text("x")
    try:
        assert run("exec", image, "test", "-e", str(marker)).returncode == 0
        assert run("exec", "--contain", image, "test", "-e", str(marker)).returncode == 1
    finally:
        marker.unlink()


def test_sigterm_reaches_command(image):
    p = subprocess.Popen(
        [APPTAINER, "exec", image, "sh", "-c", 'trap "exit 42" TERM; echo ready; while :; do sleep 0.1; done'],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 42
