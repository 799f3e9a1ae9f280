"""containerbatch: run every luigi task as a batch job inside a container image.

The package is imported on batch nodes too (by the runner, and by workflow
files that ``import containerbatch``), where only the standard library and
luigi may be present: everything heavier is imported lazily, on first use.
"""

from __future__ import annotations

from typing import Any

from containerbatch.errors import (
    ConfigError,
    ContainerBatchError,
    JobFailedError,
    SchedulerError,
    StatusQueryError,
    SubmitError,
)
from containerbatch.settings import clear_setting, get_setting, set_setting
from containerbatch.states import JobState, JobStatus

__version__ = "0.1.0"

_LAZY = {"process": "containerbatch.worker", "Run": "containerbatch.run", "BatchWorker": "containerbatch.worker"}

__all__ = [
    "ConfigError",
    "ContainerBatchError",
    "JobFailedError",
    "JobState",
    "JobStatus",
    "SchedulerError",
    "StatusQueryError",
    "SubmitError",
    "clear_setting",
    "get_setting",
    "process",
    "set_setting",
    "Run",
    "BatchWorker",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'containerbatch' has no attribute {name!r}")
