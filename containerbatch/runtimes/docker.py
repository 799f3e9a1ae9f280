"""Runtimes ``docker`` and ``podman``: ``docker run --rm --init -u UID:GID …``.

The container runs as the submitting user, with the working, result and log
folders bound at the same paths, never ``--privileged``, removed after the run.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import ClassVar

from containerbatch.errors import ConfigError
from containerbatch.jobfiles import CONTAINER_ENV
from containerbatch.runtimes.base import Runtime
from containerbatch.spec import JobSpec

log = logging.getLogger(__name__)


class DockerRuntime(Runtime):
    """Docker engine; the image must be present on the node (no registry is assumed)."""

    name = "docker"
    binaries: ClassVar[tuple[str, ...]] = ("docker",)
    version_args: ClassVar[tuple[str, ...]] = ("version", "--format", "{{.Server.Version}}")
    binary_setting: ClassVar[str] = "docker_binary"
    failure_hint: ClassVar[str] = " (the client answers but not the engine: start dockerd)"

    @classmethod
    def claim_image(cls, image: str) -> int:
        """Any image name without a URI scheme, as a fallback (``name:tag``, ``registry/name``)."""
        return 1 if cls.name == "docker" and "://" not in image else 0

    def binary(self) -> str | None:
        configured = self.settings.get("docker_binary")
        if isinstance(configured, str) and configured:
            return configured
        # Debian's docker.io client; another CLI may stand earlier on PATH
        if self.name == "docker" and os.access("/usr/bin/docker", os.X_OK):
            return "/usr/bin/docker"
        return super().binary()

    def client(self) -> str:
        return self.binary() or self.binaries[0]

    def missing_message(self) -> str:
        return f"{self.name} not on PATH: install it (Debian: apt-get install {self.binaries[0]})"

    def preflight(self, spec: JobSpec) -> None:
        self._check_env(spec)
        for bind in self.binds(spec):
            for folder in (bind.src, bind.dst):
                if ":" in folder:
                    raise ConfigError(
                        f"{self.name} cannot bind {folder!r}: its -v syntax has no escape for ':'; rename the "
                        "folder or choose a working_dir/result_dir/log_dir without it",
                        setting="binds",
                        task=spec.task_id,
                    )
        image = spec.image or ""
        self._check_image(spec, image)

    def _check_env(self, spec: JobSpec) -> None:
        for key, value in spec.env.items():
            if "\n" in value or "\r" in value:
                raise ConfigError(
                    f"the value of {key} has a line break, which {self.name}'s --env-file cannot carry (the "
                    "environment travels in a file only you can read, not on the command line); drop the line break",
                    setting="env",
                    task=spec.task_id,
                )

    def _check_image(self, spec: JobSpec, image: str) -> None:
        if image.startswith("docker://"):
            raise ConfigError(
                f"{self.name} takes an image name such as name:tag, not {image!r}", setting="image", task=spec.task_id
            )
        if not self._image_exists(image):
            raise ConfigError(
                f"image {image!r} is not present in {self.name} on this host; build or pull it "
                f"(`{self.name} pull {image}` or `{self.name} build -t {image} …`), or check the name with "
                f"`{self.name} images`",
                setting="image",
                task=spec.task_id,
            )

    def _image_exists(self, image: str) -> bool:
        try:
            import docker  # the SDK; only on the submit host
            from docker.errors import DockerException, ImageNotFound

            try:
                docker.from_env(timeout=30).images.get(image)
                return True
            except ImageNotFound:
                return False
            except DockerException as exc:
                raise ConfigError(
                    f"cannot reach the Docker engine to check image {image!r}: {exc}. "
                    "Is dockerd running? `containerbatch doctor` checks."
                ) from None
        except ImportError:  # pragma: no cover - docker is a dependency
            pass
        return self._cli_image_exists(image)

    def _cli_image_exists(self, image: str) -> bool:
        out = subprocess.run([self.client(), "image", "inspect", image], capture_output=True, text=True, timeout=60)
        return out.returncode == 0

    def run_options(self, spec: JobSpec) -> list[str]:
        return ["--init", "-u", f"{os.getuid()}:{os.getgid()}"]

    def command(self, spec: JobSpec) -> list[str]:
        # no --rm: the job script asks the engine whether it killed the container
        # for memory (State.OOMKilled), then removes it (see epilogue)
        argv = [self.node_client(spec), "run", "--name", spec.container_name, *self.run_options(spec)]
        argv += ["-w", spec.working_dir]
        for bind in self.binds(spec):
            argv += ["-v", f"{bind.src}:{bind.dst}" + (":ro" if bind.read_only else "")]
        # the environment (secrets, maybe) from a file only the user can read, not as arguments visible in ps
        argv += ["--env-file", os.path.join(spec.node_path(spec.job_dir), CONTAINER_ENV)]
        res = spec.resources
        if res.memory_mb:
            argv += ["--memory", f"{res.memory_mb}m"]
        if res.cpus:
            argv += ["--cpus", str(res.cpus)]
        if res.gpus:
            argv += ["--gpus", str(res.gpus)]
        network = spec.settings.get("container_network")
        if network:
            argv += ["--network", str(network)]
        argv += list(spec.settings.get("docker_extra_args") or [])
        argv += [spec.image or "", *spec.runner_argv()]
        return argv

    def private_files(self, spec: JobSpec) -> dict[str, str]:
        """``container.env`` for ``--env-file``: one ``NAME=value`` a line, taken literally by the engine."""
        self._check_env(spec)
        env = {"HOME": "/tmp", **self.container_env(spec)}
        return {CONTAINER_ENV: "".join(f"{key}={value}\n" for key, value in env.items())}

    def stop_command(self, spec: JobSpec) -> list[str]:
        # TERM through --init to the runner, KILL after 10 s
        return [self.node_client(spec), "stop", "--time", "10", spec.container_name]

    def epilogue(self, spec: JobSpec) -> list[tuple[list[str], str | None]]:
        return [
            (
                [self.node_client(spec), "inspect", "--format", "{{.State.OOMKilled}}", spec.container_name],
                os.path.join(spec.node_path(spec.job_dir), "oom_killed"),
            ),
            ([self.node_client(spec), "rm", "--force", spec.container_name], None),
        ]


class PodmanRuntime(DockerRuntime):
    """Podman: the docker command line, with ``--userns=keep-id`` when rootless."""

    name = "podman"
    binaries = ("podman",)
    version_args = ("version", "--format", "{{.Client.Version}}")
    failure_hint = ""

    def _image_exists(self, image: str) -> bool:
        out = subprocess.run([self.client(), "image", "exists", image], capture_output=True, text=True, timeout=60)
        return out.returncode == 0

    def run_options(self, spec: JobSpec) -> list[str]:
        options = super().run_options(spec)
        if os.geteuid() != 0:
            options.append("--userns=keep-id")
        return options
