"""The Runtime contract: availability, image claiming and preflight, argv wrapping, start failures."""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from typing import ClassVar

from containerbatch.settings import Setting
from containerbatch.spec import Bind, JobSpec
from containerbatch.states import Reason

#: exit codes of the job's container command that mean the runner never started
START_FAILURES: Mapping[int, str] = {
    125: "the container engine failed (e.g. no such image)",
    126: "python is not executable in the image",
    127: "python was not found in the image",
}


class Runtime(abc.ABC):
    """A container engine: the contract of a runtime plugin.  Subclasses build argv; they never run jobs.

    A plugin subclasses this, writes :meth:`command`, and registers the class under the entry-point
    group ``containerbatch.runtimes`` with its ``name``.  Every other hook has a default.

    Parameters
    ----------
    settings:
        The resolved settings of the task (binary paths, extra args).

    Class attributes
    ----------------
    name:
        The entry-point name (``runtime`` setting value); checked when the plugin loads.
    binaries:
        Client names looked up on PATH by :meth:`binary`.
    version_args:
        Arguments that make the client print its (or its engine's) version, for :meth:`available`.
    failure_hint:
        Appended to :meth:`available`'s message when the version call fails.
    START_FAILURES:
        Exit codes of the container command → what they mean when the runner never started (an
        ``image_error``); the defaults cover the engine failing (125) and python missing (126, 127).
    SETTINGS:
        Settings the plugin declares (:func:`containerbatch.settings.plugin_setting`), named ``<name>_…``.
    """

    name: ClassVar[str] = ""
    binaries: ClassVar[tuple[str, ...]] = ()
    version_args: ClassVar[tuple[str, ...]] = ()
    #: the setting that names the client's path (docker_binary, apptainer_binary)
    binary_setting: ClassVar[str] = ""
    #: appended when the version call fails
    failure_hint: ClassVar[str] = ""
    START_FAILURES: ClassVar[Mapping[int, str]] = START_FAILURES
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()

    @classmethod
    def claim_image(cls, image: str) -> int:
        """How strongly this runtime claims ``image`` for ``runtime = auto``: 0 not at all, 1 as a fallback
        (``docker`` takes any ``name:tag``), 10 by its form (``.sif``, ``oras://``…).  The strongest claim
        wins; a tie between plugins is an error that asks for the runtime setting."""
        return 0

    @classmethod
    def classify_start_failure(cls, exit_code: int, stderr_tail: str) -> tuple[Reason, str] | None:
        """Whether ``exit_code`` (no result file written) means the container never started the runner."""
        meaning = cls.START_FAILURES.get(exit_code)
        if meaning is None:
            return None
        return Reason.IMAGE_ERROR, f"the container could not start the runner (exit {exit_code}: {meaning})"

    def __init__(self, settings: Mapping[str, object] | None = None) -> None:
        self.settings = dict(settings or {})

    def binary(self) -> str | None:
        """Path of the engine's client on this host, if any."""
        for name in self.binaries:
            found = shutil.which(name)
            if found:
                return found
        return None

    def node_client(self, spec: JobSpec) -> str:
        """The client as the job script calls it on the node, which may be another host.

        ``node_engine_binary`` if set, else the task's ``<engine>_binary`` setting, else the engine's bare name
        (``apptainer``, ``docker``...), looked up on the node's PATH: never this host's absolute path.
        """
        for key in ("node_engine_binary", self.binary_setting):
            value = (spec.settings.get(key) or self.settings.get(key)) if key else None
            if isinstance(value, str) and value:
                return value
        found = self.binary()
        return os.path.basename(found) if found else self.binaries[0]

    def missing_message(self) -> str:
        """What to do when no client is found."""
        return f"none of {', '.join(self.binaries)} on PATH"

    def available(self) -> tuple[bool, str]:
        """Whether the engine is usable here (its client answers with a version), and a line for `doctor`."""
        if not self.binaries:
            return True, f"{self.name}: needs no client"
        binary = self.binary()
        if binary is None:
            return False, self.missing_message()
        if not self.version_args:
            return True, binary
        try:
            out = subprocess.run([binary, *self.version_args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{binary}: {exc}"
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).strip()[:300]
            return False, f"{binary} {' '.join(self.version_args)} fails: {detail}{self.failure_hint}"
        return True, f"{binary} {out.stdout.strip()}"

    def preflight(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Check the image before submission; raise ConfigError naming task and image."""

    def prepare_image(self, spec: JobSpec) -> str | None:
        """Make the image usable on the nodes before the first job (e.g. convert a remote image once into
        ``image_cache``); returns the prepared image's path, or None when nothing was needed."""
        return None

    @abc.abstractmethod
    def command(self, spec: JobSpec) -> list[str]:
        """The argv the job script runs (the container around ``spec.runner_argv()``)."""

    def stop_command(self, spec: JobSpec) -> list[str] | None:
        """An argv that stops the container when the job is cancelled."""
        return None

    def epilogue(self, spec: JobSpec) -> list[tuple[list[str], str | None]]:
        """Commands the job script runs after the container ended: (argv, file for its stdout)."""
        return []

    def exports(self, spec: JobSpec) -> dict[str, str]:
        """Environment variables the job script exports before the command (from a 0600 file it sources)."""
        return {}

    def private_files(self, spec: JobSpec) -> dict[str, str]:
        """Files (name in the job folder → text) the command reads, written mode 0600: e.g. the environment of
        the container, which would show in ``ps`` on the node as arguments."""
        return {}

    # helpers shared by container engines -------------------------------
    @staticmethod
    def binds(spec: JobSpec) -> list[Bind]:
        """Working, result and log folders at the same paths (read-write); then, read-only, the workflow's
        folder (or, when that lies in a read-write folder, the workflow file itself) and the bundle; then
        the user's binds. A read-write folder inside an already bound one is not bound again; the
        read-only binds come after the read-write ones, so that a read-write parent never shadows them.

        A staged job (no shared filesystem) binds the same paths from under its scratch folder."""

        def inside(path: str, binds: list[Bind]) -> bool:
            return any(path == o.src or path.startswith(o.src.rstrip("/") + "/") for o in binds)

        result: list[Bind] = []
        for folder in (spec.working_dir, spec.result_dir, spec.log_dir, spec.job_dir):
            if not inside(folder, result):
                result.append(Bind(folder, folder))
        workflow_dir = os.path.dirname(spec.module_file)
        read_only = [spec.module_file if inside(workflow_dir, result) else workflow_dir]
        if spec.bundle_dir:
            read_only.append(spec.bundle_dir)
        for path in read_only:
            if not any(path == b.src for b in result):
                result.append(Bind(path, path, read_only=True))
        if spec.staged:
            result = [Bind(spec.node_path(b.src), b.dst, b.read_only) for b in result]
        return result + list(spec.binds)

    @staticmethod
    def container_env(spec: JobSpec) -> dict[str, str]:
        env: dict[str, str] = {"PYTHONDONTWRITEBYTECODE": "1"}
        env.update(spec.env)
        if spec.bundle_dir:
            env["PYTHONPATH"] = ":".join(p for p in (spec.bundle_dir, spec.env.get("PYTHONPATH")) if p)
        return env


def bound_folders(spec: JobSpec) -> list[str]:
    """Host folders a job of ``spec`` can write to: the whole filesystem for runtime host, else the binds."""
    if spec.runtime == "host":
        return ["/"]
    return [b.dst for b in Runtime.binds(spec) if not b.read_only]  # paths as the task sees them


def outside_binds(spec: JobSpec, paths: Iterable[str]) -> list[str]:
    """The ``paths`` that lie outside every folder bound writable into the job's container."""
    folders = [f.rstrip("/") + "/" for f in bound_folders(spec)]
    return [p for p in paths if p.startswith("/") and not any((p.rstrip("/") + "/").startswith(f) for f in folders)]
