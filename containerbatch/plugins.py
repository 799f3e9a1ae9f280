"""Plugin registry: schedulers and runtimes come from entry points.

The built-ins register through the same entry points (see pyproject.toml).  A plugin is checked
when it loads (:func:`validate`): the target must be a concrete subclass of the contract's base
class whose ``name`` is the entry-point name, with well-formed settings.  Load errors are kept per
plugin and listed by ``containerbatch doctor``; a broken plugin never takes the others down.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
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


def _base_class(group: str) -> type:
    if group == "containerbatch.schedulers":
        from containerbatch.schedulers.base import BaseScheduler

        return BaseScheduler
    from containerbatch.runtimes.base import Runtime

    return Runtime


def validate(plugin: Any, name: str, group: str) -> list[str]:
    """What is wrong with ``plugin`` as the plugin ``name`` of ``group`` (empty: nothing).

    Checked: a class, a subclass of the group's base class, no abstract method left, ``name`` equal
    to the entry-point name, and ``SETTINGS`` a tuple of :class:`~containerbatch.settings.Setting`
    named ``<name>_…`` that do not redefine a core setting.
    """
    from containerbatch.settings import BUILTIN_NAMES, Setting

    base = _base_class(group)
    if not inspect.isclass(plugin):
        return [f"is a {type(plugin).__name__}, not a class (the entry point must name the plugin class)"]
    problems = []
    if not issubclass(plugin, base):
        problems.append(f"{plugin.__qualname__} is not a subclass of {base.__module__}.{base.__qualname__}")
    elif inspect.isabstract(plugin):
        missing = sorted(getattr(plugin, "__abstractmethods__", ()))
        problems.append(f"{plugin.__qualname__} does not implement {', '.join(missing)}")
    declared = getattr(plugin, "name", None)
    if declared != name:
        problems.append(f"{plugin.__qualname__}.name is {declared!r}, but it is registered as {name!r}")
    settings = getattr(plugin, "SETTINGS", ())
    if not isinstance(settings, tuple) or not all(isinstance(s, Setting) for s in settings):
        problems.append("SETTINGS must be a tuple of containerbatch.settings.Setting (see plugin_setting())")
    else:
        for setting in settings:
            if not setting.name.startswith(f"{name}_"):
                problems.append(f"setting {setting.name!r} must be named {name}_… (the plugin's name first)")
            elif setting.name in BUILTIN_NAMES:
                problems.append(f"setting {setting.name!r} is a core setting and cannot be redefined")
    return problems


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
            found: dict[str, str] = {}
            try:
                for ep in entry_points(group=self.group):
                    found.setdefault(ep.name, ep.value)
            except Exception as exc:  # unreadable distribution metadata
                log.warning("cannot read the %s entry points: %s", self.group, exc)
            if "local" not in found and "host" not in found:
                log.debug("no %s entry points installed; using the built-in table", self.group)
                found = {**_BUILTIN[self.group], **found}
            self._targets = found
        return self._targets

    def targets(self) -> dict[str, str]:
        """Entry-point name → ``module:attribute``."""
        return dict(self._discover())

    def names(self) -> list[str]:
        return sorted(self._discover())

    def get(self, name: str) -> Any:
        """The plugin class for ``name``; ConfigError if unknown, broken or not a valid plugin."""
        if name in self._loaded:
            return self._loaded[name]
        targets = self._discover()
        if name not in targets:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}",
                setting="batch_system" if self.kind == "scheduler" else "runtime",
            )
        target = targets[name]
        if name in self.errors:
            raise ConfigError(f"{self.kind} plugin {name!r} ({target}) failed to load: {self.errors[name]}")
        module_name, sep, attr = target.partition(":")
        try:
            if not sep or not module_name or not attr:
                raise ValueError(f"entry point {target!r} is not of the form 'module:Class'")
            module = importlib.import_module(module_name.strip())
            plugin: Any = module
            for part in attr.strip().split("."):
                plugin = getattr(plugin, part)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            raise ConfigError(f"{self.kind} plugin {name!r} ({target}) failed to load: {exc}") from None
        problems = validate(plugin, name, self.group)
        if problems:
            self.errors[name] = "; ".join(problems)
            raise ConfigError(f"{self.kind} plugin {name!r} ({target}) is not a valid plugin: {self.errors[name]}")
        self._loaded[name] = plugin
        return plugin

    def load_all(self) -> dict[str, Any]:
        """Every plugin that loads; the others are in :attr:`errors`."""
        result = {}
        for name in self.names():
            try:
                result[name] = self.get(name)
            except ConfigError:
                pass
        return result

    def reset(self) -> None:
        """Forget what was discovered and loaded (tests that install a plugin at run time)."""
        self._targets.clear()
        self._loaded.clear()
        self.errors.clear()


schedulers = Registry("containerbatch.schedulers", "scheduler")
runtimes = Registry("containerbatch.runtimes", "runtime")

_settings_lock = threading.Lock()
_settings_loaded = False


def load_settings() -> None:
    """Merge the settings every loadable plugin declares (``SETTINGS``) into the one settings table, once.

    Called by :mod:`containerbatch.settings` the first time a name it does not know is looked up, the
    environment or a settings file is checked, or the whole table is listed.
    """
    global _settings_loaded
    with _settings_lock:
        if _settings_loaded:
            return
        _settings_loaded = True
    from containerbatch.settings import register_settings

    for registry in (schedulers, runtimes):
        for name, plugin in registry.load_all().items():
            try:
                register_settings(getattr(plugin, "SETTINGS", ()), f"{registry.kind} plugin {name!r}")
            except ConfigError as exc:
                registry.errors[name] = str(exc)
                registry._loaded.pop(name, None)


def reset() -> None:
    """Forget every discovered plugin and the plugin settings (tests)."""
    global _settings_loaded
    from containerbatch.settings import unregister_plugin_settings

    for registry in (schedulers, runtimes):
        registry.reset()
    with _settings_lock:
        _settings_loaded = False
    unregister_plugin_settings()


def guess_runtime(image: str | None) -> str:
    """The runtime for ``runtime = auto``: host without an image, else the plugin claiming ``image`` most
    strongly (:meth:`~containerbatch.runtimes.base.Runtime.claim_image`); ConfigError when none or two do."""
    if not image:
        return "host"
    claims: dict[str, int] = {}
    for name, plugin in runtimes.load_all().items():
        try:
            strength = int(plugin.claim_image(image))
        except Exception as exc:
            log.warning("runtime plugin %r failed to judge image %r: %s", name, image, exc)
            continue
        if strength > 0:
            claims[name] = strength
    if not claims:
        raise ConfigError(
            f"no runtime claims the image {image!r}; set the runtime setting (one of {', '.join(runtimes.names())})",
            setting="runtime",
        )
    best = max(claims.values())
    winners = sorted(name for name, strength in claims.items() if strength == best)
    if len(winners) > 1:
        raise ConfigError(
            f"runtimes {', '.join(winners)} all claim the image {image!r}; choose one with the runtime setting",
            setting="runtime",
        )
    return winners[0]
