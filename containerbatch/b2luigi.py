"""b2luigi with containerbatch's batch mode: change one import.

.. code-block:: python

    import containerbatch.b2luigi as b2luigi   # was: import b2luigi

Everything b2luigi exports (tasks, parameters, targets, ``requires``,
``inherits``, ``on_temporary_files``, ``dispatch``, ...) is b2luigi's own and
behaves as there.  Only three functions differ:

* :func:`process` runs exactly like b2luigi's (local run, ``--dry-run``,
  ``--show-output``, ``--test``, ``--remove``, ``--remove-only`` are b2luigi's
  own and submit nothing), except that ``--batch`` (or ``batch=True``) submits
  every task through containerbatch: a batch job, in its container image if
  it names one.  The settings in force when ``process()`` is called (settings
  files, ``set_setting`` calls in the main block) and the script's command
  line go to the node, which applies them before it imports the workflow.
* :func:`set_setting` / :func:`clear_setting` reach both b2luigi and
  containerbatch.
* :func:`get_setting` is b2luigi's, falling back to containerbatch's default
  for containerbatch's own settings.

b2luigi must be installed on the submit host (``pip install
'containerbatch[b2luigi]'``); the image needs nothing but ``python3``: b2luigi
travels to the node in the runner bundle.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Iterable
from typing import Any

try:
    import b2luigi as _b2luigi
    from b2luigi import *  # noqa: F403  (b2luigi's whole namespace, luigi's included)
    from b2luigi.core import settings as _b2settings
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"containerbatch.b2luigi needs b2luigi ({_exc}): pip install 'containerbatch[b2luigi]' on the submit host "
        "(the runner bundle brings it to the node)"
    ) from _exc

import luigi

from containerbatch import settings as _cbsettings
from containerbatch.errors import ConfigError
from containerbatch.settings import b2luigi_snapshot as settings_snapshot

log = logging.getLogger(__name__)

__version__ = getattr(_b2luigi, "__version__", "")
__all__ = [name for name in dir(_b2luigi) if not name.startswith("_")] + [
    "check_grouping",
    "settings_snapshot",
]

#: arguments of b2luigi's process() that make it do something other than run the tasks; none submits
_NON_SUBMITTING = ("show_output", "dry_run", "test", "remove", "remove_only", "batch_runner", "progress_tui")
#: the same, as attributes of b2luigi's parsed command line
_NON_SUBMITTING_CLI = ("show_output", "dry_run", "test", "remove", "remove_only", "batch_runner", "tui")

_has_run = False


def __getattr__(name: str) -> Any:
    # anything b2luigi has that the star import left out (private helpers); never module dunders such as
    # __path__, which would make this module look like b2luigi's package
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_b2luigi, name)


def set_setting(key: str, value: Any) -> None:
    """Set a setting for b2luigi and for containerbatch (as ``b2luigi.set_setting``)."""
    _b2settings.set_setting(key, value)
    _cbsettings.set_setting(key, value)


def clear_setting(key: str) -> None:
    """Forget a setting in b2luigi and in containerbatch."""
    _b2settings.clear_setting(key)
    _cbsettings.clear_setting(key)


def get_setting(key: str, default: Any = None, task: Any = None, deprecated_keys: list[str] | None = None) -> Any:
    """b2luigi's ``get_setting(key, default=None, task=None)``.

    A containerbatch setting that is set nowhere gives containerbatch's default instead of b2luigi's
    ``ValueError``.
    """
    try:
        return _b2settings.get_setting(key, default=default, task=task, deprecated_keys=deprecated_keys)
    except ValueError:
        if _cbsettings.is_setting(key):
            return _cbsettings.get_setting(key, task=task)
        raise


def check_grouping(tasks: Iterable[luigi.Task]) -> None:
    """Refuse b2luigi's parameter grouping before anything is submitted (see ``worker.check_grouping``)."""
    from containerbatch.worker import check_grouping as check  # the submit side only: not on the node

    check(tasks)


def _call_b2luigi(task_like_elements: Any, arguments: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    accepted = inspect.signature(_b2luigi.process).parameters
    passed = {k: v for k, v in arguments.items() if k in accepted}
    return _b2luigi.process(task_like_elements, **passed, **kwargs)


def process(
    task_like_elements: Any,
    show_output: bool = False,
    dry_run: bool = False,
    test: bool = False,
    batch: bool = False,
    remove: list[str] | None = None,
    remove_only: list[str] | None = None,
    auto_confirm: bool = False,
    keep_tasks: list[str] | None = None,
    ignore_additional_command_line_args: bool = False,
    **kwargs: Any,
) -> Any:
    """b2luigi's ``process``; with ``--batch`` (or ``batch=True``) the tasks run through containerbatch.

    Parameters
    ----------
    task_like_elements:
        A task or a list of tasks.
    show_output, dry_run, test, remove, remove_only, auto_confirm, keep_tasks:
        As in b2luigi, which handles them (and the same command-line flags); nothing is submitted.
    batch:
        Submit through containerbatch (also ``--batch`` on the command line).  Without it the tasks run
        locally, by b2luigi.
    ignore_additional_command_line_args:
        As in b2luigi: tolerate command-line arguments b2luigi does not know.
    kwargs:
        Passed on to ``luigi.build`` (``workers``, ``scheduler_host``, ``log_level``, ...); with
        ``--scheduler-host``/``--scheduler-port`` the tasks go to that central luigi scheduler.

    Returns
    -------
    Any
        What b2luigi's process returns; in batch mode True if every task ended complete.
    """
    global _has_run
    if _has_run:
        raise RuntimeError("You are not allowed to call process twice in your code!")
    _has_run = True
    from b2luigi.cli.arguments import get_cli_arguments

    arguments: dict[str, Any] = {
        "show_output": show_output,
        "dry_run": dry_run,
        "test": test,
        "batch": batch,
        "remove": list(remove or []),
        "remove_only": list(remove_only or []),
        "auto_confirm": auto_confirm,
        "keep_tasks": keep_tasks,
        "ignore_additional_command_line_args": ignore_additional_command_line_args,
    }
    for name in ("batch_runner", "progress_tui"):
        if name in kwargs:
            arguments[name] = kwargs.pop(name)
    cli = get_cli_arguments(ignore_additional_command_line_args=ignore_additional_command_line_args)
    elsewhere = any(arguments.get(n) for n in _NON_SUBMITTING) or any(
        getattr(cli, n, False) for n in _NON_SUBMITTING_CLI
    )
    if elsewhere or not (batch or cli.batch):
        return _call_b2luigi(task_like_elements, arguments, kwargs)
    tasks = task_like_elements if isinstance(task_like_elements, list) else [task_like_elements]
    if getattr(cli, "scheduler_host", "") or getattr(cli, "scheduler_port", 0):
        core = luigi.interface.core()
        kwargs["scheduler_host"] = cli.scheduler_host or core.scheduler_host
        kwargs["scheduler_port"] = int(cli.scheduler_port or core.scheduler_port)
    kwargs.setdefault("log_level", "INFO")
    try:
        return _run_batch(tasks, kwargs)
    except ConfigError as exc:
        print(f"containerbatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_batch(tasks: list[luigi.Task], kwargs: dict[str, Any]) -> bool:
    from containerbatch.run import Run
    from containerbatch.settings import SettingsResolver
    from containerbatch.worker import prepare_b2luigi
    from containerbatch.worker import process as cb_process

    run = Run(SettingsResolver(defaults={"batch_system": "auto"}))
    prepare_b2luigi(run, tasks)
    workers = int(kwargs.pop("workers", 1) or 1)
    return cb_process(tasks, workers=workers, run=run, **kwargs)
