"""Shared CLI pieces: loading a workflow file, building the task, consoles."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import luigi
from luigi.cmdline_parser import CmdlineParser
from rich.console import Console

from containerbatch.errors import ConfigError

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def load_workflow(path: str) -> Any:
    """Import a workflow file by path, under its file name, so its tasks register with luigi."""
    file = Path(path).resolve()
    if not file.is_file():
        raise ConfigError(f"workflow file {path} does not exist")
    name = file.stem if file.stem.isidentifier() else "containerbatch_workflow"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(file):
        return sys.modules[name]
    sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the workflow's own code; SystemExit/KeyboardInterrupt pass
        del sys.modules[name]
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise ConfigError(
            f"the workflow file {path} does not import: {type(exc).__name__}: {exc} "
            f"({where.filename}, line {where.lineno}); run `python3 {path}` to see the whole traceback"
        ) from None
    return module


def build_task(workflow: str, task_args: list[str]) -> luigi.Task:
    """``Task --param value …`` → a task object, parsed by luigi's own command-line parser."""
    load_workflow(workflow)
    if not task_args or task_args[0].startswith("-"):
        raise ConfigError(
            "name the task to run after the workflow file, e.g. `containerbatch run workflow.py Fit --sample a`"
        )
    from luigi.task_register import Register, TaskClassException

    try:
        Register.get_task_cls(task_args[0])
    except TaskClassException as exc:
        raise ConfigError(f"{exc}") from None
    try:
        with CmdlineParser.global_instance(task_args) as parser:
            return parser.get_task_obj()
    except SystemExit:
        raise ConfigError(f"bad task parameters {' '.join(task_args[1:])!r}; see the message above") from None


#: the format of log records on the console
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _NotSummarised(logging.Filter):
    """Drops task-failure records while the run's end summary will explain them (once, not twice)."""

    active = False

    def filter(self, record: logging.LogRecord) -> bool:
        from containerbatch.runlog import FAILURE_ATTR

        return not (self.active and getattr(record, FAILURE_ATTR, False))


summarised = _NotSummarised()


def setup_console_logging(level: int = logging.WARNING) -> logging.Handler:
    """The command's console log: one stderr handler on the root logger at ``level`` (called once per command).

    Warnings and errors by default; ``-v`` shows INFO, ``--log-level DEBUG``
    everything.  luigi's own log goes to the run's log file (see
    :mod:`containerbatch.runlog`), and to this console only at ``level``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_containerbatch_console", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._containerbatch_console = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(level)
    handler.addFilter(summarised)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def log_level(verbose: bool, level: str | None) -> int:
    """``-v`` → INFO; ``--log-level NAME`` → that level; neither → WARNING."""
    if level:
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise ConfigError(f"--log-level {level!r} is not a level; use DEBUG, INFO, WARNING or ERROR")
        return value
    return logging.INFO if verbose else logging.WARNING
