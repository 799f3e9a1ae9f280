"""``containerbatch logs``: a task's stdout or stderr, by task id or ``Family(param=value)``."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import typer

from containerbatch import jobfiles
from containerbatch.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, err
from containerbatch.cli.display import FINAL_STATES, print_json
from containerbatch.cli.status import STATE_DIR_HELP, fail, open_journal
from containerbatch.journal import AttemptRow, Journal

_CALL = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*\((.*?)\)?\s*$", re.S)


def task_label(row: AttemptRow) -> str:
    """``Fit(sample=1)``: the family and parameters as the user writes them."""
    return f"{row.task_family}({', '.join(f'{k}={v}' for k, v in sorted(row.params.items()))})"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def matches(query: str, row: AttemptRow) -> bool:
    """Whether ``query`` names the task of ``row``.

    ``query`` is a task id or a prefix of one (``Fit_1``), or a family with some
    of its parameters (``Fit(sample=1)``, ``Fit(sample=1`` …).
    """
    if row.task_id.startswith(query):
        return True
    call = _CALL.match(query)
    if call is None:
        return False
    family, args = call.group(1), call.group(2).strip()
    if family != row.task_family and not row.task_family.endswith("." + family):
        return False
    for part in filter(None, (p.strip() for p in args.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            return False
        if row.params.get(name.strip()) != _unquote(value):
            return False
    return True


def find_task(journal: Journal, query: str, run_id: str | None = None) -> list[AttemptRow]:
    """Every attempt of the one task ``query`` names; exit 2 listing the candidates when it names several."""
    rows = journal.attempts(run_id)
    exact = [r for r in rows if r.task_id == query]
    hits = exact or [r for r in rows if matches(query, r)]
    task_ids = sorted({r.task_id for r in hits})
    if not task_ids:
        fail(
            f"no task {query!r} in {journal.path}"
            + (f" (run {run_id})" if run_id else "")
            + "; `containerbatch status` lists the tasks"
        )
    if len(task_ids) > 1:
        labels = {r.task_id: task_label(r) for r in hits}
        err.print(f"[bold red]error:[/] {query!r} names {len(task_ids)} tasks; say which one:", highlight=False)
        for task_id in task_ids:
            err.print(f"  {task_id}  {labels[task_id]}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE)
    return [r for r in hits if r.task_id == task_ids[0]]


def _read_log(path: Path) -> str:
    """A job's log, read without following a link and without blocking on a FIFO put in its place."""
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    handle = jobfiles.open_node_file(path)
    if handle is None:
        fail(f"{path} is not a regular file (a link or a pipe the job put there); not reading it")
    with handle:
        return handle.read().decode(errors="replace")


def pick_attempt(attempts: list[AttemptRow], number: int | None) -> AttemptRow:
    if number is None:
        return max(attempts, key=lambda r: (r.attempt, r.submitted or 0.0))
    chosen = [r for r in attempts if r.attempt == number]
    if not chosen:
        have = ", ".join(str(a) for a in sorted({r.attempt for r in attempts}))
        fail(f"{attempts[0].task_id} has no attempt {number}; it has attempt(s) {have}")
    return max(chosen, key=lambda r: r.submitted or 0.0)


def _ended(journal: Journal, row: AttemptRow) -> bool:
    fresh = journal.attempt(row.task_id, row.attempt) or row
    return fresh.state in FINAL_STATES or Path(fresh.marker_path).exists()


def register(app: typer.Typer) -> None:
    @app.command()
    def logs(
        task: str = typer.Argument(..., help="Task id, or a unique prefix of it or of Family(param=value, …)."),
        attempt: int = typer.Option(None, "--attempt", min=1, help="Which attempt (default: the newest)."),
        follow: bool = typer.Option(
            False, "--follow", "-f", help="Keep printing as the log grows, until the job ends (Ctrl-C stops)."
        ),
        stderr: bool = typer.Option(False, "--stderr", help="The job's stderr instead of its stdout."),
        run: str = typer.Option(None, "--run", help="Only tasks of this run id."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout (with --follow: one chunk per line)."),
        state_dir: str = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    ) -> None:
        """Print a task's log (its job's stdout, or stderr with --stderr).

        Exit code 0, or 2 when the task is unknown or the name fits several tasks (they are listed).
        """
        journal = open_journal(state_dir)
        try:
            row = pick_attempt(find_task(journal, task, run), attempt)
            stream = "stderr" if stderr else "stdout"
            path = Path(row.job_dir) / stream
            if not row.job_id and row.reason == "submit_error" and not path.exists():
                # refused by the batch system: no job, no log; what the submit command said instead
                path, stream = Path(row.job_dir) / "submit.log", "submit.log"
                err.print(
                    f"{row.task_id} attempt {row.attempt} was never submitted (the batch system refused it); "
                    f"what the submit command printed ({path}):",
                    markup=False,
                    highlight=False,
                )
                follow = False
            if not follow:
                try:
                    text = _read_log(path)
                except FileNotFoundError:
                    fail(
                        f"{path} does not exist (yet): the job of {row.task_id} attempt {row.attempt} has written "
                        "nothing; `containerbatch status` shows its state",
                        EXIT_USAGE,
                    )
                if as_json:
                    print_json(
                        {
                            "task_id": row.task_id,
                            "attempt": row.attempt,
                            "stream": stream,
                            "path": str(path),
                            "state": row.state,
                            "text": text,
                        }
                    )
                else:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                raise typer.Exit(EXIT_OK)
            _follow(journal, row, path, stream, as_json)
        finally:
            journal.close()


def _follow(journal: Journal, row: AttemptRow, path: Path, stream: str, as_json: bool, poll: float = 0.25) -> None:
    offset = 0
    try:
        while True:
            done = _ended(journal, row)  # read before the file: the last bytes come before the end mark
            chunk = b""
            handle = jobfiles.open_node_file(path)  # written on the node: no links, no FIFOs
            if handle is not None:
                try:
                    with handle:
                        handle.seek(offset)
                        chunk = handle.read()
                except OSError:
                    chunk = b""
            if chunk:
                offset += len(chunk)
                text = chunk.decode(errors="replace")
                if as_json:
                    sys.stdout.write(
                        json.dumps({"task_id": row.task_id, "attempt": row.attempt, "stream": stream, "text": text})
                        + "\n"
                    )
                else:
                    sys.stdout.write(text)
                sys.stdout.flush()
            elif done:
                break
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(EXIT_OK)
