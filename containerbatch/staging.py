"""Jobs without a shared filesystem (HTCondor ``transfer_files``): one archive in, one archive out.

On the submit host, :func:`pack_inputs` writes ``<job_dir>/stage-in.tar.gz`` holding, at their
absolute paths (without the leading ``/``):

* the job directory (task.json, job.sh),
* the Python sources of the workflow's folder (``*.py`` and ``settings.json``, without hidden folders,
  ``__pycache__``, virtual environments and the result/log/state folders),
* the bundle (luigi and the runner), when the job uses one,
* the task's inputs: the local files and folders its requirements produced,
* the extra paths given as a list in ``transfer_files`` (as in b2luigi).

HTCondor sends the archive to the node; job.sh unpacks it under ``$_CONDOR_SCRATCH_DIR/cb_root`` and the
container runtime binds those folders at the submit-side paths, so the task sees the paths it would see
on a shared filesystem.  When the container ends, job.sh packs what the job wrote (files newer than a
stamp taken before the run) into ``stage-out.tar.gz``; HTCondor brings it back into the job directory,
then the done-marker.  :func:`unpack_outputs` extracts it on the submit host, refusing every member that
would land outside the task's working, result, log and job folders.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import luigi
from luigi.task import flatten

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
    from luigi.task_register import load_task

    tasks = []
    for result in sorted(Path(spec.job_dir).parent.glob("attempt-*/result.json")):
        try:
            deps = json.loads(result.read_text()).get("new_deps") or []
        except (OSError, ValueError):
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
    """The workflow folder's Python sources (and settings.json), recursively."""
    root = Path(spec.module_file).parent
    excluded = {spec.result_dir, spec.log_dir, spec.state_dir}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not _skip_dir(here / d, excluded))
        for name in sorted(files):
            if name.endswith(_SOURCE_SUFFIXES) or name in _SOURCE_NAMES:
                yield str(here / name)


def _arcname(path: str) -> str:
    return os.path.abspath(path).lstrip("/")


def pack_inputs(spec: JobSpec, task: luigi.Task) -> str:
    """Write ``<job_dir>/stage-in.tar.gz`` for ``task``; returns its path."""
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

    with tarfile.open(tmp, "w:gz", compresslevel=3) as tar:
        for folder in (spec.working_dir, spec.result_dir, spec.log_dir):
            if os.path.isdir(folder):
                add(tar, folder, recursive=False)
        for child in sorted(job_dir.iterdir()):
            if child.name not in (STAGE_IN, STAGE_IN + ".tmp", STAGE_OUT):
                add(tar, str(child))
        for path in workflow_sources(spec):
            add(tar, path)
        if spec.bundle_dir:
            add(tar, spec.bundle_dir)
        for path in [*input_paths(task, spec), *extra_paths(spec)]:
            add(tar, path)
    os.replace(tmp, target)
    return str(target)


def allowed_roots(spec: JobSpec) -> list[str]:
    return [os.path.abspath(p) for p in (spec.working_dir, spec.result_dir, spec.log_dir, spec.job_dir)]


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def returned(spec: JobSpec) -> bool:
    """Whether the job's output archive is back in its job directory."""
    return (Path(spec.job_dir) / STAGE_OUT).exists()


def unpack_outputs(spec: JobSpec, wait: float = 0.0) -> list[str]:
    """Extract ``<job_dir>/stage-out.tar.gz`` at the submit-side paths; returns the files written.

    ``wait`` seconds are granted for the archive to arrive (HTCondor may land the done-marker first).
    A member outside the task's working, result, log and job folders, a link, or a device is refused
    with a warning; nothing else on the submit host is touched.
    """
    archive = Path(spec.job_dir) / STAGE_OUT
    deadline = time.monotonic() + wait
    while not archive.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not archive.exists():
        log.warning("%s: no %s came back from the node (see %s/condor.log)", spec.task_id, STAGE_OUT, spec.job_dir)
        return []
    roots = allowed_roots(spec)
    written = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                pure = PurePosixPath(member.name)
                dest = "/" + str(pure)
                plain = member.isfile() or member.isdir()
                if pure.is_absolute() or ".." in pure.parts or not plain:
                    log.warning(
                        "%s: refused %r from %s (not a plain file or folder)", spec.task_id, member.name, tar.name
                    )
                    continue
                if not _inside(os.path.normpath(dest), roots):
                    log.warning(
                        "%s: refused %s from %s: outside the working, result, log and job folders",
                        spec.task_id,
                        dest,
                        archive,
                    )
                    continue
                member.mode = (member.mode or 0o644) & 0o755 | 0o600
                if member.isdir():
                    os.makedirs(dest, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                tmp = f"{dest}.cb-tmp"
                with source, open(tmp, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                os.chmod(tmp, member.mode)
                os.utime(tmp, (member.mtime, member.mtime))
                os.replace(tmp, dest)
                written.append(dest)
    except (OSError, tarfile.TarError) as exc:
        log.error("%s: cannot unpack %s: %s", spec.task_id, archive, exc)
    log.info("%s: %d file(s) came back from the node", spec.task_id, len(written))
    return written
