"""Image helpers for Apptainer/Singularity: image kinds, SIF checks, the image cache, recipe conversion.

The image cache turns a remote image (``docker://``, ``oras://``, ``library://``,
``shub://``, ``docker-daemon:``) into one local SIF file *before* anything is
submitted, so that a thousand jobs read one file instead of asking a registry a
thousand times.  Several submitters may share a cache folder: an exclusive
``flock`` per image makes the second one wait for the first one's file
instead of building it again, and the file appears under its final name only
when complete (written next to it, then renamed).

The pull itself runs ``apptainer pull DEST URI`` (``apptainer build DEST
docker-daemon:…`` for images in the local Docker engine) as an argument list
with a timeout.  spython's ``Client.pull`` is not used for it: the client
always runs a binary named ``singularity`` (``Client._init_command``) and so
misses an Apptainer installation without the compatibility link, runs without
a timeout, and reports a failed pull only by a missing file.  spython is used
where it fits: the Dockerfile → Singularity recipe conversion
(:func:`convert_dockerfile`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import subprocess
from pathlib import Path

from containerbatch.errors import ConfigError
from containerbatch.runlog import activity

log = logging.getLogger(__name__)

SIF_LAUNCH = b"#!/usr/bin/env run-singularity\n"
SIF_MAGIC = b"SIF_MAGIC"
SIF_MAGIC_OFFSET = 32
SQUASHFS_MAGIC = b"hsqs"
#: URI schemes apptainer fetches from a registry or library.
REMOTE_SCHEMES = ("docker://", "oras://", "library://", "shub://", "http://", "https://")
#: Images apptainer reads from the local Docker engine.
DAEMON_PREFIX = "docker-daemon:"
#: Images apptainer reads from a ``docker save`` tar file (no engine or registry needed).
ARCHIVE_PREFIX = "docker-archive:"
DEFAULT_PULL_TIMEOUT = 3600.0


def is_remote(image: str) -> bool:
    """Whether ``image`` is fetched by apptainer (a URI, or an image of the Docker engine), not a local path.

    >>> is_remote("docker://python:3.11"), is_remote("docker-daemon:cb-demo:latest"), is_remote("analysis.sif")
    (True, True, False)
    """
    return image.startswith(REMOTE_SCHEMES) or image.startswith((DAEMON_PREFIX, ARCHIVE_PREFIX))


def sif_header_ok(head: bytes) -> bool:
    """Whether the first bytes of a file are a SIF header (launch line, then ``SIF_MAGIC`` at offset 32).

    >>> sif_header_ok(SIF_LAUNCH.ljust(32, b"\\0") + SIF_MAGIC + b"\\0")
    True
    >>> sif_header_ok(b"PK\\x03\\x04")
    False
    """
    return head.startswith(SIF_LAUNCH) and head[SIF_MAGIC_OFFSET : SIF_MAGIC_OFFSET + len(SIF_MAGIC)] == SIF_MAGIC


def image_format(path: str | os.PathLike[str]) -> str | None:
    """``"sif"``, ``"squashfs"`` or ``"sandbox"`` for a local image apptainer can run, else None.

    Raises
    ------
    OSError
        When the path cannot be read.
    """
    p = Path(path)
    if p.is_dir():
        return "sandbox" if (p / "bin").is_dir() or (p / "usr").is_dir() else None
    with open(p, "rb") as handle:
        head = handle.read(64)
    if sif_header_ok(head):
        return "sif"
    if head.startswith(SQUASHFS_MAGIC):  # a bare squashfs image (Singularity 2.4+ format)
        return "squashfs"
    return None


def cache_name(uri: str) -> str:
    """File name of the cached SIF for ``uri``: readable, file-system safe, and unique (a digest of the URI).

    >>> cache_name("docker://python:3.11-slim")
    'docker_python_3.11-slim-140b2cc249.sif'
    """
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri.replace("://", "_")).strip("._")[:80]
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return f"{readable}-{digest}.sif"


def cache_path(cache_dir: str | os.PathLike[str], uri: str) -> Path:
    """Where the cached SIF for ``uri`` lives in ``cache_dir`` (absolute; nothing is created)."""
    return Path(cache_dir).expanduser().resolve() / cache_name(uri)


def conversion_argv(binary: str, dest: str, uri: str) -> list[str]:
    """``apptainer pull DEST URI``, or ``apptainer build DEST docker-daemon:…`` / ``docker-archive:…`` (pull
    reads neither the engine nor a tar file)."""
    if uri.startswith((DAEMON_PREFIX, ARCHIVE_PREFIX)):
        return [binary, "build", dest, uri]
    return [binary, "pull", dest, uri]


def ensure_cached(
    binary: str,
    uri: str,
    cache_dir: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_PULL_TIMEOUT,
    task: str | None = None,
) -> Path:
    """Return the local SIF for ``uri`` in ``cache_dir``, converting it first if it is not there yet.

    Safe for concurrent callers (threads and processes, on one host or on a
    shared file system with working ``flock``): one converts, the others wait
    for the lock and then find the file.

    Raises
    ------
    ConfigError
        When the cache folder cannot be used or the conversion fails; the
        message carries the command and its error output.
    """
    dest = cache_path(cache_dir, uri)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock_handle = open(dest.with_name(dest.name + ".lock"), "a")
    except OSError as exc:
        raise ConfigError(
            f"cannot use the image cache {dest.parent}: {exc}; fix the folder's permissions or choose another one",
            setting="image_cache",
            task=task,
        ) from None
    with lock_handle:
        fcntl.flock(lock_handle.fileno(), fcntl.LOCK_EX)
        if _valid_sif(dest):
            log.debug("image %s is cached as %s", uri, dest)
            return dest
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        argv = conversion_argv(binary, str(partial), uri)
        log.info("converting %s to %s (once, before submission): %s", uri, dest, " ".join(argv))
        try:
            partial.unlink(missing_ok=True)
            with activity(log, f"converting {uri} to a SIF in {dest.parent} (once, before submission)"):
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise ConfigError(
                f"converting {uri} took longer than {timeout:.0f} s ({' '.join(argv)}); convert it "
                f"by hand (`{' '.join(conversion_argv(binary, str(dest), uri))}`) and try again",
                setting="image",
                task=task,
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot run {binary}: {exc}", setting="apptainer_binary", task=task) from None
        if proc.returncode != 0 or not _valid_sif(partial):
            partial.unlink(missing_ok=True)
            detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
            why = f"exit code {proc.returncode}" if proc.returncode else "it wrote no SIF file"
            raise ConfigError(
                f"could not convert {uri} to a SIF ({why}): {' '.join(argv)}\n{detail}\n"
                "Check the image name and your registry access "
                f"(`{binary} pull` it by hand to see the error)",
                setting="image",
                task=task,
            )
        os.replace(partial, dest)
        log.info("cached %s as %s", uri, dest)
        return dest


def _valid_sif(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return sif_header_ok(handle.read(64))
    except OSError:
        return False


def convert_dockerfile(
    dockerfile: str | os.PathLike[str], *, bootstrap: str = "docker", base_archive: str | None = None
) -> str:
    """Translate a Dockerfile into an Apptainer/Singularity definition file (offline, with spython).

    Parameters
    ----------
    dockerfile:
        Path of the Dockerfile.
    bootstrap:
        ``docker`` (the base image comes from a registry) or ``docker-daemon``
        (from the local Docker engine, for images that were never pushed) or ``docker-archive`` (from
        ``base_archive``, a ``docker save`` tar file: needs neither an engine nor a registry).
    base_archive:
        The tar file of the base image, for ``docker-archive`` (the Dockerfile's ``FROM`` names the image it holds).

    Returns
    -------
    str
        The text of the definition file, ending in a newline.

    Raises
    ------
    ConfigError
        When the Dockerfile does not exist or spython cannot read it.
    """
    from spython.main.parse.parsers import DockerParser
    from spython.main.parse.writers import SingularityWriter

    path = Path(dockerfile)
    if not path.is_file():
        raise ConfigError(f"Dockerfile {path} does not exist")
    if bootstrap not in ("docker", "docker-daemon", "docker-archive"):
        raise ConfigError(f"bootstrap must be docker, docker-daemon or docker-archive, not {bootstrap!r}")
    if (bootstrap == "docker-archive") != (base_archive is not None):
        raise ConfigError("bootstrap docker-archive needs the base image's tar file (--base-archive), and only it")
    if base_archive is not None and ("\n" in base_archive or not Path(base_archive).is_file()):
        raise ConfigError(
            f"base image archive {base_archive!r} is not a file; make it with `docker save -o FILE IMAGE`"
        )
    try:
        recipe = DockerParser(str(path)).recipe
        text = str(SingularityWriter(recipe).convert())
    except (SystemExit, Exception) as exc:  # spython calls sys.exit on some parse errors
        raise ConfigError(f"spython could not convert {path}: {exc!r}") from None
    if bootstrap != "docker":
        text = re.sub(r"^Bootstrap: docker$", f"Bootstrap: {bootstrap}", text, count=0, flags=re.MULTILINE)
    if base_archive is not None:
        archive = str(Path(base_archive).resolve())
        text = re.sub(r"^From: .*$", lambda _m: f"From: {archive}", text, count=1, flags=re.MULTILINE)
    return text if text.endswith("\n") else text + "\n"
