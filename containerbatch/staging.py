"""Jobs without a shared filesystem (HTCondor ``transfer_files``): one archive in, one archive out.

On the submit host, :func:`pack_inputs` writes ``<job_dir>/stage-in.tar.gz`` holding, at their
absolute paths (without the leading ``/``):

* the job directory (task.json, job.sh),
* of the workflow's folder only the workflow module, the modules the submitter imported from it and
  ``settings.json`` (not what else lies there; never hidden folders, virtual environments or the
  result/log/state folders),
* the bundle (luigi and the runner), when the job uses one,
* the task's inputs: the local files and folders its requirements produced,
* the extra paths given as a list in ``transfer_files`` (as in b2luigi).

HTCondor sends the archive to the node; job.sh unpacks it under ``$_CONDOR_SCRATCH_DIR/cb_root`` and the
container runtime binds those folders at the submit-side paths, so the task sees the paths it would see
on a shared filesystem.  When the container ends, job.sh packs what the job wrote (files newer than a
stamp taken before the run) into ``stage-out.tar.gz``; HTCondor brings it back into the job directory,
then the done-marker.  :func:`unpack_outputs` extracts it on the submit host; the archive is the node's,
so only the task's declared outputs and its own job folder may come back, never through a link.
"""

from __future__ import annotations

import logging
import os
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import luigi
from luigi.task import flatten

from containerbatch import jobfiles
from containerbatch.errors import ConfigError
from containerbatch.jobscript import STAGE_IN, STAGE_OUT
from containerbatch.spec import JobSpec

log = logging.getLogger(__name__)

#: folders never sent from the workflow's folder
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", ".containerbatch"}
#: files sent from the workflow's folder
_SOURCE_SUFFIXES = (".py",)
_SOURCE_NAMES = ("settings.json",)


def extra_paths(spec: JobSpec) -> list[str]:
    """The paths listed in ``transfer_files`` (a list), absolute; ConfigError for a missing one."""
    value = spec.settings.get("transfer_files")
    if not isinstance(value, (list, tuple)):
        return []
    paths = []
    for item in value:
        path = os.path.abspath(os.path.join(spec.working_dir, os.path.expanduser(str(item))))
        if not os.path.exists(path):
            raise ConfigError(
                f"transfer_files lists {item!r}, which does not exist (looked for {path}); create it or drop it "
                "from the list",
                setting="transfer_files",
                task=spec.task_id,
            )
        paths.append(path)
    return paths


def _local_paths(targets: object) -> list[str]:
    paths = []
    for target in flatten(targets):
        path = getattr(target, "path", None)
        if isinstance(target, luigi.LocalTarget) and isinstance(path, str) and os.path.exists(path):
            paths.append(os.path.abspath(path))
    return paths


def dynamic_requirements(spec: JobSpec) -> list[luigi.Task]:
    """Tasks an earlier attempt of this task yielded (``new_deps`` in its result.json).

    A task that yields requirements runs again once they are done; on the node it must find their
    outputs, or it would yield them again and again.
    """
    import sys

    from luigi.task_register import load_task

    tasks = []
    for path in sorted(Path(spec.job_dir).parent.glob(f"attempt-*/{jobfiles.RESULT}")):
        try:
            # untrusted like every result: only tasks of modules already imported, nothing imported here
            result = jobfiles.read_result(str(path), task_id=spec.task_id)
            deps = jobfiles.accept_new_deps(result.new_deps, frozenset(sys.modules)) if result else []
        except jobfiles.BadResult as exc:
            log.warning("%s: ignoring the dynamic dependencies in %s: %s", spec.task_id, path, exc)
            continue
        for module, family, params in deps:
            try:
                tasks.append(load_task(module, family, params))
            except Exception as exc:  # noqa: BLE001 - a dependency that cannot be rebuilt is not sent
                log.warning("%s: cannot rebuild dynamic dependency %s(%s): %s", spec.task_id, family, params, exc)
    return tasks


def input_paths(task: luigi.Task, spec: JobSpec | None = None) -> list[str]:
    """Local paths that exist of the task's inputs: its requirements' outputs, and those of the
    requirements an earlier attempt yielded."""
    paths = _local_paths(task.input())
    for dep in dynamic_requirements(spec) if spec is not None else []:
        paths += _local_paths(dep.output())
    return paths


def _skip_dir(path: Path, excluded: set[str]) -> bool:
    return (
        path.name.startswith(".") or path.name in _SKIP_DIRS or (path / "pyvenv.cfg").exists() or str(path) in excluded
    )


def workflow_sources(spec: JobSpec) -> Iterator[str]:
    """What the node needs of the workflow's folder: the workflow module, the modules the submitter imported
    from that folder (as in :func:`containerbatch.jobfiles.accept_new_deps`: what is in ``sys.modules``, never
    everything that lies there), and ``settings.json``.  A module the task imports only inside ``run()`` is
    listed in ``transfer_files``; other files of the folder (data, notes, keys) never travel."""
    import sys

    root = Path(os.path.abspath(spec.module_file)).parent
    excluded = {os.path.abspath(p) for p in (spec.result_dir, spec.log_dir, spec.state_dir)}
    found = {os.path.abspath(spec.module_file)}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file.endswith(_SOURCE_SUFFIXES):
            continue
        path = Path(os.path.abspath(file))
        try:
            parts = path.parent.relative_to(root).parts
        except ValueError:
            continue  # not from the workflow's folder: the image or the bundle has it
        folders = [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]
        if not any(_skip_dir(folder, excluded) for folder in folders) and path.is_file():
            found.add(str(path))
    for name in _SOURCE_NAMES:
        if (root / name).is_file():
            found.add(str(root / name))
    yield from sorted(found)


def _arcname(path: str) -> str:
    return os.path.abspath(path).lstrip("/")


def pack_inputs(spec: JobSpec, task: luigi.Task) -> str:
    """Write ``<job_dir>/stage-in.tar.gz`` for ``task``; returns its path."""
    return _pack(spec, [(spec, task)])


def pack_group_inputs(spec: JobSpec, members: Sequence[tuple[JobSpec, luigi.Task]]) -> str:
    """Write the stage-in archive of a job of several tasks (``spec.job_dir``: the group's folder): the group
    folder, and each member's job folder, inputs and ``transfer_files`` (sources and bundle once)."""
    return _pack(spec, [(spec, None), *members])


def _pack(spec: JobSpec, jobs: Sequence[tuple[JobSpec, luigi.Task | None]]) -> str:
    job_dir = Path(spec.job_dir)
    target = job_dir / STAGE_IN
    tmp = job_dir / (STAGE_IN + ".tmp")
    added: set[str] = set()

    def add(tar: tarfile.TarFile, path: str, recursive: bool = True) -> None:
        name = _arcname(path)
        if name in added:
            return
        added.add(name)
        tar.add(path, arcname=name, recursive=False)
        if recursive and os.path.isdir(path) and not os.path.islink(path):
            for child in sorted(os.listdir(path)):
                add(tar, os.path.join(path, child))

    # the archive holds the job folder's private files (env.sh): as private as they are, never through a link
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=3) as tar:
        for folder in (spec.working_dir, spec.result_dir, spec.log_dir):
            if os.path.isdir(folder):
                add(tar, folder, recursive=False)
        for job_spec, _task in jobs:
            for child in sorted(Path(job_spec.job_dir).iterdir()):
                if child.name not in (STAGE_IN, STAGE_IN + ".tmp", STAGE_OUT):
                    add(tar, str(child))
        for path in workflow_sources(spec):
            add(tar, path)
        if spec.bundle_dir:
            add(tar, spec.bundle_dir)
        for job_spec, task in jobs:
            inputs = input_paths(task, job_spec) if task is not None else []
            for path in [*inputs, *extra_paths(job_spec)]:
                add(tar, path)
    os.replace(tmp, target)
    return str(target)


def allowed_roots(spec: JobSpec, outputs: Iterable[str] = ()) -> list[str]:
    """What a staged job may bring back: its own job folder and the task's declared outputs (files, or
    folders and what is in them), as real paths on the submit host."""
    return [os.path.realpath(p) for p in (spec.job_dir, *outputs)]


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def returned(spec: JobSpec) -> bool:
    """Whether the job's output archive is back in its job directory."""
    return (Path(spec.job_dir) / STAGE_OUT).exists()


def unpack_outputs(spec: JobSpec, outputs: Iterable[str] = (), wait: float = 0.0) -> list[str]:
    """Extract ``<job_dir>/stage-out.tar.gz`` at the submit-side paths; returns the files written.

    Only the job's own folder and the task's declared ``outputs`` may come back (the archive is the node's
    and untrusted). A member elsewhere (the workflow file, the journal, another task's files), a link, a
    device, or a path that reaches outside through an existing symbolic link is refused; the refused
    members are logged and listed in ``<job_dir>/stage-out-refused.txt``. Files are created without
    following a link (``O_NOFOLLOW``) and with the user's umask. ``wait`` seconds are granted for the
    archive to arrive (HTCondor may land the done-marker first).
    """
    archive = Path(spec.job_dir) / STAGE_OUT
    deadline = time.monotonic() + wait
    while not archive.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not archive.exists():
        log.warning("%s: no %s came back from the node (see %s/condor.log)", spec.task_id, STAGE_OUT, spec.job_dir)
        return []
    roots = allowed_roots(spec, outputs)
    umask = jobfiles.current_umask()
    written: list[str] = []
    refused: list[str] = []

    def refuse(name: str, why: str) -> None:
        refused.append(f"{name}\t{why}")
        log.warning("%s: refused %r from %s: %s", spec.task_id, name, archive, why)

    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                pure = PurePosixPath(member.name)
                if pure.is_absolute() or ".." in pure.parts or not (member.isfile() or member.isdir()):
                    refuse(member.name, "not a plain file or folder at a relative path")
                    continue
                dest = os.path.normpath("/" + str(pure))
                # resolve every link already on the way: where it would really land must be allowed
                real = os.path.realpath(dest)
                if not _inside(os.path.normpath(dest), roots) and not _inside(real, roots):
                    refuse(member.name, "not the task's declared output nor its job folder")
                    continue
                if not _inside(real, roots):
                    refuse(member.name, f"leads through a symbolic link to {real}, outside the allowed folders")
                    continue
                try:
                    if member.isdir():
                        _makedirs(real, roots, umask)
                        continue
                    _makedirs(os.path.dirname(real), roots, umask)
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    with source:
                        _write_nofollow(real, source, (member.mode & 0o777 & ~umask) | 0o600, member.mtime)
                    written.append(real)
                except OSError as exc:
                    refuse(member.name, f"cannot be written: {exc.strerror or exc}")
    except (OSError, tarfile.TarError, EOFError) as exc:
        log.error("%s: cannot unpack %s: %s", spec.task_id, archive, exc)
        refused.append(f"{archive}\tcannot be unpacked: {exc}")
    if refused:
        listing = Path(spec.job_dir) / jobfiles.REFUSED
        try:
            with open(listing, "a") as handle:
                handle.write("".join(line + "\n" for line in refused))
        except OSError as exc:
            log.error("%s: cannot write %s: %s", spec.task_id, listing, exc)
    log.info("%s: %d file(s) came back from the node, %d refused", spec.task_id, len(written), len(refused))
    return written


def _makedirs(path: str, roots: list[str], umask: int) -> None:
    """Create the folders of ``path`` (already resolved, inside ``roots``), refusing a link on the way."""
    missing = []
    here = path
    while not os.path.lexists(here):
        missing.append(here)
        here = os.path.dirname(here)
    if os.path.islink(here) or not os.path.isdir(here):
        raise OSError(f"{here} is not a folder")
    for folder in reversed(missing):
        os.mkdir(folder, 0o777 & ~umask)
        if os.path.islink(folder):
            raise OSError(f"{folder} became a link")


def _write_nofollow(dest: str, source: Any, mode: int, mtime: float) -> None:
    """Write ``source`` to ``dest`` through a fresh temporary file (``O_EXCL|O_NOFOLLOW``) renamed over it;
    a link at ``dest`` is replaced, never followed."""
    folder = os.path.dirname(dest)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        tmp = f".{os.path.basename(dest)}.cb-tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                os.fchmod(out.fileno(), mode)
                os.utime(out.fileno(), (mtime, mtime))
            os.replace(tmp, os.path.basename(dest), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)
