"""Runtimes ``apptainer`` and ``singularity``: ``apptainer exec --cleanenv --bind … --pwd DIR IMAGE python3 -m …``.

Images: a SIF file, a sandbox directory, or a URI apptainer understands
(``docker://``, ``docker-daemon:``, ``oras://``, ``library://``).  Local images
are checked before anything is submitted; with the setting ``image_cache`` a
remote image is converted once to a local SIF (:func:`prepare_image`) and every
job runs that file.

The task's environment reaches the container as ``APPTAINERENV_NAME=value``
(``SINGULARITYENV_`` for a ``singularity`` binary) exported by the job script,
not as ``--env NAME=value``: apptainer splits ``--env`` on commas, so a value
with a comma (a ``PYTHONPATH``-like list, a JSON string) would be cut, and the
values would show in ``ps`` on a shared node.  The prefixed variables are read
by every Apptainer and SingularityCE version and pass ``--cleanenv``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from containerbatch import images
from containerbatch.errors import ConfigError
from containerbatch.runtimes.base import Runtime
from containerbatch.spec import JobSpec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INSTALL = "https://apptainer.org/docs/admin/main/installation.html"


class ApptainerRuntime(Runtime):
    """Apptainer (or, when only that is installed, Singularity)."""

    name = "apptainer"
    binaries: ClassVar[tuple[str, ...]] = ("apptainer", "singularity")
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    binary_setting: ClassVar[str] = "apptainer_binary"
    START_FAILURES: ClassVar[Mapping[int, str]] = {
        **Runtime.START_FAILURES,
        255: "apptainer failed before the runner started: image not usable, python3 not found in it, or a bind "
        "failed; see stderr",
    }
    #: claimed for runtime auto: SIF files, sandbox folders and the URIs apptainer pulls
    _URIS = ("oras://", "library://", "shub://", "docker-daemon:", "docker://")

    @classmethod
    def claim_image(cls, image: str) -> int:
        if image.endswith(".sif") or image.startswith(cls._URIS):
            return 10
        if image.startswith(("/", "./", "../")) and Path(image).is_dir():
            return 10
        return 0

    def binary(self) -> str | None:
        return self._configured(self.settings) or super().binary()

    @staticmethod
    def _configured(settings: Mapping[str, object]) -> str | None:
        value = settings.get("apptainer_binary")
        return value if isinstance(value, str) and value else None

    def client(self, spec: JobSpec) -> str:
        """The binary the job script runs: the task's ``apptainer_binary``, else the one found on PATH."""
        return self._configured(spec.settings) or self.binary() or self.binaries[0]

    def env_prefix(self, spec: JobSpec) -> str:
        """``SINGULARITYENV_`` for a binary named singularity (all SingularityCE reads), else ``APPTAINERENV_``."""
        return "SINGULARITYENV_" if Path(self.node_client(spec)).name.startswith("singularity") else "APPTAINERENV_"

    def missing_message(self) -> str:
        return (
            f"none of {', '.join(self.binaries)} on PATH: install Apptainer ({_INSTALL}), load its "
            "module in the shell you submit from, or set apptainer_binary"
        )

    # -- images -----------------------------------------------------------------
    def image_path(self, spec: JobSpec) -> str:
        """What ``exec`` gets: the cached SIF of a remote image, an absolute local path, or the URI itself."""
        image = spec.image or ""
        if images.is_remote(image):
            cache = self._cache_dir(spec)
            return str(images.cache_path(cache, image)) if cache else image
        return str(Path(spec.working_dir, os.path.expanduser(image)).resolve())

    @staticmethod
    def _cache_dir(spec: JobSpec) -> Path | None:
        cache = spec.settings.get("image_cache")
        return Path(spec.working_dir, os.path.expanduser(str(cache))) if cache else None

    def preflight(self, spec: JobSpec) -> None:
        """Check environment names, bind paths and a local image; raise ConfigError before submission."""
        self._check_env(spec)
        for bind in self.binds(spec):
            for folder in (bind.src, bind.dst):
                if "," in folder or ":" in folder:
                    raise ConfigError(
                        f"{self.name} cannot bind {folder!r}: its --bind syntax has no escape for ',' or ':'; rename "
                        "the folder or choose a working_dir/result_dir/log_dir without them",
                        setting="binds",
                        task=spec.task_id,
                    )
        image = spec.image or ""
        if images.is_remote(image):
            return
        path = Path(self.image_path(spec))
        if not path.exists():
            raise ConfigError(
                f"image {image!r} not found (looked for {path}). Build it (`apptainer build {path.name} "
                "docker://NAME:TAG`, or from a definition file: see `containerbatch image convert`), fix the `image` "
                "setting, or name a registry image as docker://NAME:TAG",
                setting="image",
                task=spec.task_id,
            )
        try:
            if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
                raise PermissionError(13, "permission denied")
            kind = images.image_format(path)
        except OSError as exc:
            raise ConfigError(
                f"image {path} cannot be read by this user ({exc.strerror}); fix its permissions (`chmod a+rX {path}`)",
                setting="image",
                task=spec.task_id,
            ) from None
        if kind is None and path.is_dir():
            raise ConfigError(
                f"image {path} is a directory without /bin or /usr, not a sandbox image; point "
                "`image` at the root file system of the sandbox (made by `apptainer build --sandbox`)",
                setting="image",
                task=spec.task_id,
            )
        if kind is None:
            raise ConfigError(
                f"image {path} is not a SIF file (no SIF_MAGIC at offset 32 after the "
                "`#!/usr/bin/env run-singularity` line); was the build or copy interrupted? Rebuild "
                "it with `apptainer build`, or give a Docker image as docker://NAME:TAG",
                setting="image",
                task=spec.task_id,
            )

    def prepare_image(self, spec: JobSpec) -> str | None:
        """Convert a remote image to a SIF in ``image_cache`` once (file-locked); return its path.

        Returns None when there is nothing to prepare (local image, or no ``image_cache``); the job then
        runs :meth:`image_path`.  Call it on the submit host before submitting; it may take minutes the
        first time and returns at once when the SIF is cached.
        """
        image = spec.image or ""
        cache = self._cache_dir(spec)
        if cache is None or not images.is_remote(image):
            return None
        binary = self.client(spec)
        if not shutil.which(binary):
            raise ConfigError(
                f"cannot convert {image}: {binary} is not installed on this host; install Apptainer "
                f"({_INSTALL}) or unset image_cache",
                setting="apptainer_binary",
                task=spec.task_id,
            )
        timeout = float(spec.settings.get("image_pull_timeout") or images.DEFAULT_PULL_TIMEOUT)
        return str(images.ensure_cached(binary, image, cache, timeout=timeout, task=spec.task_id))

    # -- the command --------------------------------------------------------------
    def command(self, spec: JobSpec) -> list[str]:
        settings = spec.settings
        argv = [self.node_client(spec), "exec"]
        if settings.get("apptainer_cleanenv", True):
            argv.append("--cleanenv")
        if settings.get("apptainer_containall"):
            argv.append("--containall")
        if settings.get("apptainer_no_home"):
            argv.append("--no-home")
        if spec.resources.gpus:
            argv.append("--nv")
        for bind in self.binds(spec):
            argv += ["--bind", str(bind)]
        argv += ["--pwd", spec.working_dir]
        argv += list(settings.get("apptainer_extra_args") or [])
        argv += [self.image_path(spec), *spec.runner_argv()]
        return argv

    def exports(self, spec: JobSpec) -> dict[str, str]:
        """The container's environment as ``APPTAINERENV_*`` (or ``SINGULARITYENV_*``) for the job script."""
        self._check_env(spec)
        prefix = self.env_prefix(spec)
        return {prefix + key: value for key, value in self.container_env(spec).items()}

    def _check_env(self, spec: JobSpec) -> None:
        bad = sorted(k for k in spec.env if not _ENV_NAME.match(k))
        if bad:
            raise ConfigError(
                f"environment variable name(s) {bad} are not valid shell names (letters, digits, _)",
                setting="env",
                task=spec.task_id,
            )
        if "HOME" in spec.env:
            raise ConfigError(
                f"{self.name} does not let a job set HOME through the environment; drop it from `env` "
                '(use apptainer_extra_args ["--home", DIR])',
                setting="env",
                task=spec.task_id,
            )


class SingularityRuntime(ApptainerRuntime):
    """SingularityCE / Singularity 3.x: the same command line, binary ``singularity``, ``SINGULARITYENV_``."""

    name = "singularity"
    binaries = ("singularity",)

    @classmethod
    def claim_image(cls, image: str) -> int:
        return min(ApptainerRuntime.claim_image(image), 9)  # the same images; apptainer is preferred
