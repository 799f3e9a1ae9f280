"""Plugin registry: schedulers and runtimes come from entry points.

The built-ins register through the same entry points (see pyproject.toml).
Load errors are kept per plugin and shown by ``containerbatch doctor``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from containerbatch.errors import ConfigError

log = logging.getLogger(__name__)

# Used only when containerbatch runs from a source tree that was never
# installed (no entry points in the environment).
_BUILTIN: dict[str, dict[str, str]] = {
    "containerbatch.schedulers": {
        "local": "containerbatch.schedulers.local:LocalScheduler",
        "slurm": "containerbatch.schedulers.slurm:SlurmScheduler",
        "lsf": "containerbatch.schedulers.lsf:LSFScheduler",
        "htcondor": "containerbatch.schedulers.htcondor:HTCondorScheduler",
    },
    "containerbatch.runtimes": {
        "host": "containerbatch.runtimes.host:HostRuntime",
        "docker": "containerbatch.runtimes.docker:DockerRuntime",
        "podman": "containerbatch.runtimes.docker:PodmanRuntime",
        "apptainer": "containerbatch.runtimes.apptainer:ApptainerRuntime",
        "singularity": "containerbatch.runtimes.apptainer:SingularityRuntime",
    },
}


@dataclass
class Registry:
    """The plugins of one entry-point group, loaded lazily, errors kept."""

    group: str
    kind: str
    _targets: dict[str, str] = field(default_factory=dict)
    _loaded: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def _discover(self) -> dict[str, str]:
        if not self._targets:
            found = {ep.name: ep.value for ep in entry_points(group=self.group)}
            if "local" not in found and "host" not in found:
                log.debug("no %s entry points installed; using the built-in table", self.group)
                found = {**_BUILTIN[self.group], **found}
            self._targets = found
        return self._targets

    def names(self) -> list[str]:
        return sorted(self._discover())

    def get(self, name: str) -> Any:
        """The plugin class for ``name``; ConfigError if unknown or broken."""
        if name in self._loaded:
            return self._loaded[name]
        targets = self._discover()
        if name not in targets:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}",
                setting="batch_system" if self.kind == "scheduler" else "runtime",
            )
        module_name, _, attr = targets[name].partition(":")
        try:
            module = __import__(module_name, fromlist=[attr])
            plugin = getattr(module, attr)
        except Exception as exc:  # a broken plugin must not take the others down
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"{self.kind} plugin {name!r} ({targets[name]}) failed to load: {exc}") from exc
        self._loaded[name] = plugin
        return plugin

    def load_all(self) -> dict[str, Any]:
        result = {}
        for name in self.names():
            try:
                result[name] = self.get(name)
            except ConfigError:
                pass
        return result


schedulers = Registry("containerbatch.schedulers", "scheduler")
runtimes = Registry("containerbatch.runtimes", "runtime")
