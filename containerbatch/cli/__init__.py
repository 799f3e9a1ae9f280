"""The ``containerbatch`` command: one module per command group."""

from __future__ import annotations

import logging
import sys

import typer

from containerbatch.cli import doctor as _doctor
from containerbatch.cli import image as _image
from containerbatch.cli import kill as _kill
from containerbatch.cli import logs as _logs
from containerbatch.cli import report as _report
from containerbatch.cli import run as _run
from containerbatch.cli import status as _status
from containerbatch.cli.common import EXIT_USAGE, err, setup_console_logging
from containerbatch.errors import ConfigError

app = typer.Typer(
    name="containerbatch",
    help="Run luigi workflows as batch jobs (local, Slurm, LSF, HTCondor), each task inside a container image.\n\n"
    "Exit codes: 0 all done, 1 some task failed (or, for doctor, something asked for is broken), "
    "2 usage or configuration error, 130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _module in (_run, _status, _logs, _kill, _doctor, _report, _image):
    _module.register(app)


def main() -> None:
    """Entry point; ConfigError is exit code 2 with the message, no traceback."""
    setup_console_logging(logging.WARNING)  # `run -v` / `--log-level` show more
    try:
        app()
    except ConfigError as exc:
        err.print(f"[bold red]configuration error:[/] {exc}", highlight=False)
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # a full disk, a folder that cannot be written: a message, not a traceback
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(EXIT_USAGE)
