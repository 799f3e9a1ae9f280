"""The job folder: its file names, and the one reader of what a node writes into it.

Everything a node leaves in its job folder is untrusted (the image, the task's code and the node may be
hostile).  The submit side believes about an attempt what it wrote itself (the spec, the output list, the
outputs that were absent at submission: kept in memory and in the journal, never read back from the job
folder) and, from the node, only

* ``result.json`` through :func:`read_result`: a size-limited regular file (never through a link, never a
  FIFO), checked against a schema into a :class:`Result`; anything else raises :class:`BadResult`, which
  the worker records as the attempt's failure with reason ``bad_result``;
* small files (exit code, ``oom_killed``, done-markers) through :func:`read_small`, which never blocks and
  never follows a link;
* dynamic dependencies through :func:`accept_new_deps`: only tasks of modules the submitter had imported
  before the attempt started; a module the node made is never imported.

The node-side runner (:mod:`containerbatch.runner`) writes these files; it cannot import this module (it
imports only the standard library and luigi), so the names are repeated there.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

__all__ = [
    "CANCELLED",
    "CONTAINER_ENV",
    "ENV_FILE",
    "EXIT_CODE",
    "OOM_KILLED",
    "REFUSED",
    "RESULT",
    "TASK",
    "BadResult",
    "Dependency",
    "Result",
    "accept_new_deps",
    "current_umask",
    "output_paths",
    "parse_result",
    "read_result",
    "read_small",
    "safe_folder",
    "write_file",
    "write_private",
]

#: what the submit side writes for the runner (a copy: the submit side never reads it back)
TASK = "task.json"
#: what the runner writes: how the task ended
RESULT = "result.json"
#: written by job.sh: the container command's exit code
EXIT_CODE = "exit_code"
#: written by job.sh after a Docker/Podman container: ``true`` when the engine killed it for memory
OOM_KILLED = "oom_killed"
#: written by job.sh when it was told to stop
CANCELLED = "cancelled"
#: the job's environment as shell exports (mode 0600), sourced by job.sh
ENV_FILE = "env.sh"
#: the container's environment for ``docker run --env-file`` (mode 0600)
CONTAINER_ENV = "container.env"
#: the members of a staged job's output archive that were refused, one line each
REFUSED = "stage-out-refused.txt"

#: the largest result.json read; a bigger one is a bad result
MAX_RESULT_BYTES = 16 * 1024 * 1024
#: dynamic dependencies one result may name
MAX_NEW_DEPS = 100_000
_STATUSES = ("success", "new_deps", "failure", "error")


class BadResult(Exception):
    """The node's result file is not a valid result (or names what it may not); the message says why."""


@dataclass(frozen=True)
class Dependency:
    """A dynamic dependency as the node named it: module, task family, string parameters."""

    module: str
    family: str
    params: Mapping[str, str]

    def as_tuple(self) -> tuple[str, str, dict[str, str]]:
        return self.module, self.family, dict(self.params)


@dataclass(frozen=True)
class Result:
    """A validated ``result.json``.

    Parameters
    ----------
    status:
        ``success``, ``new_deps`` (the task yielded requirements that are not complete), ``failure`` (the
        task raised) or ``error`` (the task could not be rebuilt on the node).
    started, finished:
        Seconds since the epoch, when given.
    exception:
        ``repr`` of the exception of a failure or error.
    new_deps:
        The requirements a ``new_deps`` result yielded (not yet accepted: see :func:`accept_new_deps`).
    host:
        Where the runner ran.
    """

    status: str
    started: float | None = None
    finished: float | None = None
    exception: str = ""
    new_deps: tuple[Dependency, ...] = ()
    host: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The fields failure classification reads."""
        return {"status": self.status, "exception": self.exception, "started": self.started}


def output_paths(task: Any) -> list[str]:
    """Local paths of a task's declared outputs (``luigi.LocalTarget``), computed on the submit side."""
    import luigi
    from luigi.task import flatten

    paths = []
    for target in flatten(task.output()):
        path = getattr(target, "path", None)
        if isinstance(path, str) and isinstance(target, luigi.LocalTarget):
            paths.append(os.path.abspath(path))
    return paths


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic dance (not thread-safe, so only as a fallback)
    os.umask(mask)
    return mask


def safe_folder(path: str, base: str) -> str:
    """Make the folder ``path`` (under ``base``, a folder the submit side made) without following a link:
    every component below ``base`` must be a real folder, or is created. A node that left a link in the
    job folder's place (to ``/etc``, say) makes this an OSError instead of a write elsewhere.

    Returns the folder's path.
    """
    target = os.path.abspath(path)
    start = os.path.abspath(base)
    if target != start and not target.startswith(start.rstrip("/") + "/"):
        start = os.path.dirname(target)  # not under base: at least its last component is checked
    root = os.path.realpath(start)
    os.makedirs(root, exist_ok=True)
    here = root
    for part in [p for p in target[len(start) :].split("/") if p]:
        here = os.path.join(here, part)
        try:
            os.mkdir(here)
        except FileExistsError:
            pass
        info = os.lstat(here)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ELOOP, f"{here} is a link or not a folder; containerbatch does not write through it")
    return here


def write_file(path: str, text: str, mode: int = 0o666) -> None:
    """Write ``text`` to ``path`` through a new temporary file renamed over it: a link at ``path`` is replaced,
    never followed. ``mode`` is masked by the umask."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_private(path: str, text: str) -> None:
    """Write ``text`` to a new file only the user can read (0600), replacing ``path`` atomically."""
    write_file(path, text, 0o600)


def read_small(path: str, limit: int = 4096) -> str | None:
    """The text of a small regular file the node wrote; None when absent, a link, not a regular file, or bigger
    than ``limit`` bytes. Never blocks (a FIFO in its place is refused) and never follows a link."""
    handle = open_node_file(path)
    if handle is None:
        return None
    try:
        with handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    return data.decode("utf-8", errors="replace")


def open_node_file(path: str | os.PathLike[str]) -> BinaryIO | None:
    """A file the node wrote, opened for reading only when it is a regular file: never through a link, never
    blocking on a FIFO in its place. None when absent or refused; the caller closes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def tail_text(path: str | os.PathLike[str], lines: int = 20, window: int = 16384) -> str:
    """The last ``lines`` of a log the job wrote (see :func:`open_node_file`), decoded with replacement."""
    handle = open_node_file(path)
    if handle is None:
        return ""
    try:
        with handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - window))
            return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def read_result(path: str, task_id: str | None = None, attempt: int | None = None) -> Result | None:
    """Read and validate the result file at ``path``; None when there is none.

    Raises
    ------
    BadResult
        When a file is there but is not a valid result of ``task_id`` (attempt ``attempt``): a link, not a
        regular file, too big, not JSON, or against the schema.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadResult(f"{path} is a symbolic link; the runner writes a plain file") from None
        raise BadResult(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadResult(f"{path} is not a regular file")
        if info.st_size > MAX_RESULT_BYTES:
            raise BadResult(f"{path} is {info.st_size} bytes, more than the {MAX_RESULT_BYTES} a result may have")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if sum(len(c) for c in chunks) > MAX_RESULT_BYTES:
                raise BadResult(f"{path} grew beyond {MAX_RESULT_BYTES} bytes while it was read")
    except OSError as exc:
        raise BadResult(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadResult(f"{path} is not JSON: {str(exc)[:200]}") from None
    return parse_result(data, task_id=task_id, attempt=attempt, where=path)


def _text(data: Mapping[str, Any], key: str, where: str, limit: int = 1 << 20) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadResult(f"{where}: {key!r} must be a string, not {type(value).__name__}")
    return value[:limit]


def _time(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadResult(f"{where}: {key!r} must be a number of seconds since the epoch, not {value!r:.60}")
    if not 0 <= value < 1e11:  # before the year 5138
        raise BadResult(f"{where}: {key!r} is out of range ({value!r})")
    return float(value)


def parse_result(data: Any, *, task_id: str | None = None, attempt: int | None = None, where: str = RESULT) -> Result:
    """Check decoded JSON against the result schema; raise :class:`BadResult` with the reason."""
    if not isinstance(data, dict):
        raise BadResult(f"{where}: a result is a JSON object, not {type(data).__name__}")
    status = data.get("status")
    if status not in _STATUSES:
        raise BadResult(f"{where}: 'status' must be one of {', '.join(_STATUSES)}, not {status!r:.60}")
    if task_id is not None and data.get("task_id") != task_id:
        raise BadResult(f"{where}: it is the result of {data.get('task_id')!r:.200}, not of {task_id}")
    if attempt is not None and "attempt" in data and data["attempt"] != attempt:
        raise BadResult(f"{where}: it is the result of attempt {data['attempt']!r:.20}, not of attempt {attempt}")
    raw_deps = data.get("new_deps") or []
    if not isinstance(raw_deps, list) or len(raw_deps) > MAX_NEW_DEPS:
        raise BadResult(f"{where}: 'new_deps' must be a list (of at most {MAX_NEW_DEPS})")
    deps = []
    for item in raw_deps:
        if not (isinstance(item, list) and len(item) == 3):
            raise BadResult(f"{where}: each of 'new_deps' is [module, family, {{param: value}}], not {item!r:.100}")
        module, family, params = item
        if not (isinstance(module, str) and isinstance(family, str) and isinstance(params, dict)):
            raise BadResult(f"{where}: each of 'new_deps' is [module, family, {{param: value}}], not {item!r:.100}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise BadResult(f"{where}: parameters of {family!r:.100} in 'new_deps' must be strings")
        deps.append(Dependency(module, family, dict(params)))
    if status == "new_deps" and not deps:
        raise BadResult(f"{where}: status 'new_deps' without dependencies")
    return Result(
        status=status,
        started=_time(data, "started", where),
        finished=_time(data, "finished", where),
        exception=_text(data, "exception", where, 10_000),
        new_deps=tuple(deps) if status == "new_deps" else (),
        host=_text(data, "host", where, 256),
    )


def accept_new_deps(deps: tuple[Dependency, ...], imported: Collection[str]) -> list[tuple[str, str, dict[str, str]]]:
    """The dynamic dependencies a node named, as luigi takes them, if every one is acceptable.

    A dependency is accepted only as a task of a module in ``imported`` (the names in ``sys.modules`` before
    the attempt started) whose class is registered with luigi under that family, and whose parameters parse;
    nothing is imported.

    Raises
    ------
    BadResult
        Naming the first dependency that is not acceptable.
    """
    import sys

    from luigi.task_register import Register, TaskClassException

    accepted = []
    for dep in deps:
        if dep.module not in imported or dep.module not in sys.modules:
            raise BadResult(
                f"a dynamic dependency names module {dep.module!r:.200}, which the submitter had not imported "
                "before the attempt started; containerbatch never imports a module a node names"
            )
        try:
            cls = Register.get_task_cls(dep.family)
        except TaskClassException:
            raise BadResult(f"a dynamic dependency names task family {dep.family!r:.200}, which is not known") from None
        if cls.__module__ != dep.module and not (dep.module == "__main__" or cls.__module__ == "__main__"):
            raise BadResult(
                f"a dynamic dependency names {dep.family!r:.200} in module {dep.module!r:.200}, but that task is "
                f"defined in {cls.__module__}"
            )
        try:
            cls.from_str_params(dict(dep.params))
        except Exception as exc:  # noqa: BLE001 - whatever a parameter's parser raises
            raise BadResult(f"a dynamic dependency {dep.family}({dep.params!r:.200}) cannot be built: {exc}") from None
        accepted.append((cls.__module__, dep.family, dict(dep.params)))
    return accepted
