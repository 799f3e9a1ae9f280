"""Runtime ``host``: no container, the task runs with the node's Python."""

from __future__ import annotations

import os
from pathlib import Path

import containerbatch
from containerbatch.runtimes.base import Runtime
from containerbatch.spec import JobSpec


class HostRuntime(Runtime):
    """Run the runner directly; the environment is the node's (plus env_script and env)."""

    name = "host"
    #: no engine: only the shell's "not executable" and "not found" mean the runner never started
    START_FAILURES = {code: text for code, text in Runtime.START_FAILURES.items() if code in (126, 127)}

    def available(self) -> tuple[bool, str]:
        return True, "always available (no container)"

    def command(self, spec: JobSpec) -> list[str]:
        return spec.runner_argv()

    def exports(self, spec: JobSpec) -> dict[str, str]:
        env = dict(spec.env)
        # make the runner importable with the node's Python even when
        # containerbatch is not installed there: the package's parent folder
        package_parent = str(Path(containerbatch.__file__).resolve().parent.parent)
        path = spec.bundle_dir or package_parent
        env["PYTHONPATH"] = ":".join(p for p in (path, spec.env.get("PYTHONPATH") or os.environ.get("PYTHONPATH")) if p)
        return env
