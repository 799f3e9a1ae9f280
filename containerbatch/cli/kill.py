"""``containerbatch kill``: cancel jobs of a run, one cancel call per scheduler."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from containerbatch import plugins
from containerbatch.cli.common import EXIT_FAILED, EXIT_OK, err, out
from containerbatch.cli.display import FINAL_STATES, print_json
from containerbatch.cli.logs import find_task
from containerbatch.cli.status import STATE_DIR_HELP, fail, open_journal, pick_run, submitter_alive
from containerbatch.errors import ConfigError, SchedulerError
from containerbatch.journal import AttemptRow, Journal

CANCEL_REASON = "cancelled by containerbatch kill"


def active_attempts(journal: Journal, run_id: str) -> list[AttemptRow]:
    """Attempts of the run that have a job and have not ended."""
    return [r for r in journal.attempts(run_id) if r.job_id and r.state not in FINAL_STATES]


def stop_submitter(record: dict[str, Any], wait: float = 15.0) -> bool:
    """SIGTERM the run's submitting process on this host (it cancels its own jobs); True if it was running."""
    if submitter_alive(record) is not True:
        return False
    pid = int(record["pid"])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if cmdline and b"containerbatch" not in cmdline:
        return False  # the pid was reused by something else
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    except PermissionError:
        fail(
            f"the submitter of run {record.get('run_id')} (pid {pid}) belongs to another user; ask them, or an "
            "administrator, to stop it"
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return True


def cancel(journal: Journal, rows: list[AttemptRow]) -> tuple[list[AttemptRow], list[dict[str, Any]]]:
    """Cancel ``rows`` with one ``kill`` call per scheduler; record them as cancelled."""
    from containerbatch.settings import SettingsResolver

    try:
        values = SettingsResolver().values()
    except ConfigError as exc:
        fail(str(exc))
    by_scheduler: dict[str, list[AttemptRow]] = {}
    for row in rows:
        by_scheduler.setdefault(row.scheduler, []).append(row)
    done: list[AttemptRow] = []
    errors: list[dict[str, Any]] = []
    for name, group in sorted(by_scheduler.items()):
        try:
            scheduler = plugins.schedulers.get(name)({**values, "batch_system": name})
        except ConfigError as exc:
            errors.append({"scheduler": name, "job_ids": [r.job_id for r in group], "error": str(exc)})
            continue
        for row in group:  # jobs of another process (the local scheduler kills by pid)
            scheduler.attach(row.job_id, str(Path(row.job_dir) / "job.sh"))
        for row in group:  # how the job script itself marks a cancelled job: its end is no failure of the task
            try:
                (Path(row.job_dir) / "cancelled").touch()
            except OSError:
                pass
        ids = [str(r.job_id) for r in group]
        try:
            scheduler.kill(ids)
        except SchedulerError as exc:
            errors.append({"scheduler": name, "job_ids": ids, "error": str(exc)})
            continue
        now = time.time()
        for row in group:
            try:
                journal.update(row.task_id, row.attempt, state="cancelled", reason=CANCEL_REASON, ended=now)
            except sqlite3.Error as exc:  # another user's journal, read-only for us
                errors.append({"scheduler": name, "job_ids": [row.job_id], "error": f"journal {journal.path}: {exc}"})
                continue
            done.append(row)
    return done, errors


def register(app: typer.Typer) -> None:
    @app.command()
    def kill(
        tasks: list[str] = typer.Argument(None, help="Tasks to cancel: ids, or unique prefixes as for `logs`."),
        all_jobs: bool = typer.Option(
            False,
            "--all",
            help="Cancel every unfinished job of the run and stop its submitter (when it runs on this host).",
        ),
        run: str = typer.Option(None, "--run", help="Run id or unique prefix (default: the newest run)."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
        state_dir: str = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    ) -> None:
        """Cancel jobs of a run and record them as cancelled in the journal.

        Exit code 0 when every chosen job was cancelled (or none was left), 1 when a scheduler refused,
        2 on a usage error (no TASK and no --all, unknown or ambiguous TASK).
        """
        if not tasks and not all_jobs:
            fail("name the tasks to cancel, or pass --all for every unfinished job of the run")
        if tasks and all_jobs:
            fail("give either TASK names or --all, not both")
        journal = open_journal(state_dir)
        try:
            record = pick_run(journal, run)
            run_id = record["run_id"]
            stopped = False
            before: list[AttemptRow] = []
            if all_jobs:
                before = active_attempts(journal, run_id)
                stopped = stop_submitter(record)  # it cancels its own jobs as it stops
                chosen = active_attempts(journal, run_id)
            else:
                wanted: set[tuple[str, int]] = set()
                for query in tasks:
                    attempts = find_task(journal, query, run_id)
                    wanted.update((r.task_id, r.attempt) for r in attempts)
                chosen = [r for r in active_attempts(journal, run_id) if (r.task_id, r.attempt) in wanted]
            cancelled, errors = cancel(journal, chosen) if chosen else ([], [])
            ours = {(r.task_id, r.attempt) for r in cancelled}
            for row in before:  # cancelled by the stopped submitter
                now_row = journal.attempt(row.task_id, row.attempt)
                if (row.task_id, row.attempt) not in ours and now_row is not None and now_row.state == "cancelled":
                    cancelled.append(now_row)
            if as_json:
                print_json(
                    {
                        "run_id": run_id,
                        "submitter_stopped": stopped,
                        "errors": errors,
                        "cancelled": [
                            {"task_id": r.task_id, "attempt": r.attempt, "scheduler": r.scheduler, "job_id": r.job_id}
                            for r in cancelled
                        ],
                    }
                )
            else:
                if stopped:
                    out.print(f"stopped the submitter of run {run_id} (pid {record['pid']})", highlight=False)
                if cancelled:
                    table = Table(title=f"cancelled in run {run_id}", title_justify="left", header_style="bold")
                    for column in ("task id", "attempt", "scheduler", "job id"):
                        table.add_column(column)
                    for row in cancelled:
                        table.add_row(row.task_id, str(row.attempt), row.scheduler, row.job_id or "")
                    out.print(table)
                elif not errors:
                    out.print(
                        f"nothing to cancel: no unfinished job of the chosen tasks in run {run_id}", highlight=False
                    )
                for error in errors:
                    err.print(
                        f"[bold red]could not cancel[/] {error['scheduler']} jobs "
                        f"{', '.join(map(str, error['job_ids']))}: {error['error']}",
                        highlight=False,
                    )
            raise typer.Exit(EXIT_FAILED if errors else EXIT_OK)
        finally:
            journal.close()
