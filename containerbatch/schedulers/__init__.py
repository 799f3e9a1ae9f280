"""Batch systems: one module per scheduler, registered through entry points."""

from containerbatch.schedulers.base import CommandResult, Scheduler, run_command

__all__ = ["CommandResult", "Scheduler", "run_command"]
