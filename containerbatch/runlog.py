"""Where the log of a run goes: one file under the run's folder, nothing twice.

:func:`process` (and so ``containerbatch run``) wraps luigi's work in
:func:`run_logging`: every record of luigi (``luigi``, ``luigi-interface``) and
of containerbatch at ``file_level`` and above is written to
``<state_dir>/runs/<run_id>/run.log``.  luigi's records no longer reach any
other handler, except those at or above the level their logger had before
(what the program's own logging set up would have shown), which are handed on
to the root logger's handlers exactly once.  The same holds for
containerbatch's own records: the program sees what it saw before.  Nothing is configured globally: handlers,
levels and ``propagate`` are put back when the run ends.

luigi's own console set-up (a DEBUG handler on ``luigi-interface``) is skipped
unless the caller asked luigi for a logging configuration (``log_level``,
``logging_conf_file`` or ``no_configure_logging`` passed to ``luigi.build``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: the loggers luigi writes to
LUIGI_LOGGERS = ("luigi", "luigi-interface")
#: containerbatch's own logger (its records propagate as usual)
OWN_LOGGER = "containerbatch"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: a record carrying this attribute (``extra={FAILURE_ATTR: True}``) is a task failure the run's summary repeats
FAILURE_ATTR = "containerbatch_task_failure"

#: options of ``luigi.build`` that mean the caller configures luigi's logging
LUIGI_LOGGING_OPTIONS = ("no_configure_logging", "logging_conf_file", "log_level")


def run_log_path(state_dir: str | Path, run_id: str) -> Path:
    """The log file of run ``run_id``: ``<state_dir>/runs/<run_id>/run.log``."""
    return Path(state_dir) / "runs" / run_id / "run.log"


class _LazyFileHandler(logging.FileHandler):
    failed = False  # the file could not be written (a full disk): the run goes on, its log stops

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        """A run log that cannot be written (ENOSPC, a folder gone) stops, with one line on stderr, instead of
        a logging traceback per record."""
        import sys

        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"containerbatch: cannot write the run log {self.baseFilename} ({error}); it stops here\n")


# -- long operations (image conversions, pulls): progress for whoever shows it ------------------------------

#: callbacks ``(event, key, text, started)`` with event "start" or "end"; a display registers one
ACTIVITY_LISTENERS: list[Any] = []


@contextmanager
def activity(logger: logging.Logger, text: str) -> Iterator[None]:
    """Mark a long operation (``converting docker://x to a SIF``): logged at INFO, and shown as it runs.

    Every callable in :data:`ACTIVITY_LISTENERS` is called with ``("start",
    key, text, started)`` before and ``("end", key, text, started)`` after the
    block (also when it raises); a listener's error never disturbs the
    operation.
    """
    import time

    started = time.time()
    key = f"{id(text)}-{started}"
    logger.info("%s ...", text)
    _notify("start", key, text, started)
    try:
        yield
    finally:
        _notify("end", key, text, started)
        logger.info("%s: took %.1f s", text, time.time() - started)


def _notify(event: str, key: str, text: str, started: float) -> None:
    for listener in list(ACTIVITY_LISTENERS):
        try:
            listener(event, key, text, started)
        except Exception:  # noqa: BLE001 - showing progress must never break the operation
            logging.getLogger(__name__).debug("activity listener failed", exc_info=True)


class _Forward(logging.Handler):
    """Hands records at or above its level to the root logger's handlers (once, as propagation would)."""

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if root.handlers:
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        elif logging.lastResort is not None and record.levelno >= logging.lastResort.level:
            logging.lastResort.handle(record)


@contextmanager
def run_logging(path: str | Path, file_level: int = logging.INFO) -> Iterator[Path]:
    """Write luigi's and containerbatch's log to ``path`` while the block runs.

    Parameters
    ----------
    path:
        The run's log file (appended to; its folder is created).
    file_level:
        The lowest level written to the file.  When the program shows more
        than that on its console (root logger at DEBUG, say), the file gets
        that much too.

    Yields
    ------
    Path
        ``path``.
    """
    file = Path(path)
    shown = logging.getLogger().getEffectiveLevel()
    level = min(file_level, shown)
    handler = _LazyFileHandler(file, encoding="utf-8", delay=True)  # no file (nor folder) until a record comes
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    saved: list[tuple[logging.Logger, int, bool, list[logging.Handler]]] = []
    for name in (OWN_LOGGER, *LUIGI_LOGGERS):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, list(logger.handlers)))
        logger.addHandler(handler)
        if logger.handlers[:-1]:
            continue  # the program (or luigi's own set-up) gave this logger handlers: leave them as they are
        before = logger.getEffectiveLevel()
        # into the file from `level` on; to the program's handlers only what they would have seen before
        logger.propagate = False
        logger.addHandler(_Forward(level=before))
        logger.setLevel(min(before, level))
    try:
        yield file
    finally:
        for logger, old_level, propagate, handlers in saved:
            for extra in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(extra)
            logger.setLevel(old_level)
            logger.propagate = propagate
        handler.close()


@contextmanager
def without_luigi_console_logging(build_kwargs: dict[str, object]) -> Iterator[None]:
    """Keep ``luigi.build`` from adding its own DEBUG console handler while the block runs.

    Left to luigi when the caller asked it for a logging configuration
    (``log_level``/``logging_conf_file`` among ``build_kwargs``, or a
    ``[logging]`` section / ``logging_conf_file`` / ``no_configure_logging``
    in luigi's configuration).  luigi's flag is put back afterwards, so a later
    plain ``luigi.build`` of the program behaves as it would have.
    """
    from luigi.configuration import get_config
    from luigi.setup_logging import InterfaceLogging

    asked = any(k in build_kwargs for k in LUIGI_LOGGING_OPTIONS)
    try:
        config = get_config()
        asked = asked or config.has_section("logging")
        asked = asked or any(config.has_option("core", option) for option in LUIGI_LOGGING_OPTIONS)
    except Exception:  # a configuration parser without these methods (toml): luigi decides
        asked = True
    if asked or not hasattr(InterfaceLogging, "_configured"):
        yield
        return
    before = InterfaceLogging._configured
    InterfaceLogging._configured = True
    try:
        yield
    finally:
        InterfaceLogging._configured = before


def log_path_of(run: Any) -> Path:
    """The log file of a :class:`containerbatch.run.Run` (its state_dir setting, relative to working_dir)."""
    import os

    resolver = run.resolver
    working = resolver.resolve("working_dir").value or os.getcwd()
    return run_log_path(Path(working) / resolver.resolve("state_dir").value, str(run.run_id))
