"""The plugin test kit: contract tests a scheduler plugin's suite subclasses, and fake-tool machinery.

::

    # tests/test_contract.py of a plugin
    from containerbatch.testing import SchedulerContract

    class TestMine(SchedulerContract):
        scheduler = "mine"          # the entry-point name

Every test of :class:`SchedulerContract` then runs against the plugin: submit, query in bulk, kill,
re-attach from a fresh instance, every state mapped, failure reasons, hostile values and hostile
output, and three end-to-end runs of the ``containerbatch`` CLI.  Hooks (class attributes and
methods) say where the batch system's commands are (a fake's ``bin`` folder, wrappers) and what it
can show.  :class:`RuntimeContract` does the same for a runtime (``runtime = "mine"``, ``image()``):
valid plugin, well-formed claims and start failures, hostile values, a task run end to end with its
bound input and env setting intact and a failing task reported.  :mod:`containerbatch.testing.fakes`
holds the machinery to write a small fake of a batch system's commands (file-locked state, a call log,
jobs run as real processes).

Needs pytest (the kit is imported by test suites only).  The contract classes are imported on first
use, so a fake's commands (which import :mod:`containerbatch.testing.fakes` at every call) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from containerbatch.testing.contract import Harness, RuntimeContract, SchedulerContract

__all__ = ["Harness", "RuntimeContract", "SchedulerContract"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from containerbatch.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
