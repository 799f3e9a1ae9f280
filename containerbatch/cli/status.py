"""``containerbatch status``: the journal of a run as a table; shared journal helpers."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from containerbatch import jobfiles
from containerbatch.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, err, out
from containerbatch.cli.display import (
    FAILED_STATES,
    FINAL_STATES,
    clean,
    fmt_elapsed,
    fmt_time,
    one_line,
    print_json,
    styled_state,
)
from containerbatch.errors import ConfigError
from containerbatch.journal import AttemptRow, Journal

STATE_DIR_HELP = "Folder of the journal (default: the state_dir setting, relative to the working directory)."


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` on stderr and leave with ``code`` (2: usage or configuration error)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def journal_path(state_dir: str | None = None) -> Path:
    """Where the journal of the working directory is (settings state_dir and working_dir)."""
    if state_dir:
        return Path(state_dir).resolve() / "journal.sqlite"
    from containerbatch.settings import SettingsResolver

    try:
        resolver = SettingsResolver()
        working = resolver.resolve("working_dir").value or os.getcwd()
        folder = resolver.resolve("state_dir").value
    except ConfigError as exc:
        fail(str(exc))
    return (Path(working) / folder).resolve() / "journal.sqlite"


def open_journal(state_dir: str | None = None) -> Journal:
    """The journal, or exit 2 when there is none (never creates one)."""
    path = journal_path(state_dir)
    if not path.is_file():
        fail(
            f"no journal at {path}: nothing has run in this directory yet (`containerbatch run …`), or pass --state-dir"
        )
    return Journal(path)


def pick_run(journal: Journal, run: str | None) -> dict[str, Any]:
    """The run record named by ``run`` (an id or a unique prefix; default the newest)."""
    runs = journal.runs()
    if not runs:
        fail(f"the journal {journal.path} holds no run yet")
    if run is None:
        return runs[-1]
    matches = [r for r in runs if r["run_id"] == run] or [r for r in runs if r["run_id"].startswith(run)]
    if not matches:
        fail(f"no run {run!r} in {journal.path}; runs: {', '.join(r['run_id'] for r in runs[-10:])}")
    if len(matches) > 1:
        fail(f"{run!r} names {len(matches)} runs: {', '.join(r['run_id'] for r in matches)}; give more of the id")
    return matches[0]


def submitter_alive(record: dict[str, Any]) -> bool | None:
    """Whether the run's submitting process still lives (None: another host, cannot tell)."""
    if record.get("ended"):
        return False
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return None
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def elapsed(row: AttemptRow, now: float) -> float | None:
    """Running time of an attempt (queue time until it starts)."""
    begin = row.started or row.submitted
    if begin is None:
        return None
    end = row.ended if row.ended else (None if row.state in FINAL_STATES else now)
    return None if end is None else end - begin


def _read_text(path: Path, limit: int = 65536) -> str:
    handle = jobfiles.open_node_file(path)  # written on the node: no links, no FIFOs
    if handle is None:
        return ""
    try:
        with handle:
            return handle.read(limit).decode(errors="replace")
    except OSError:
        return ""


def submit_words(job_dir: str) -> str:
    """What the submit command printed for a refused attempt (its stderr, else its stdout), from submit.log."""
    text = _read_text(Path(job_dir) / "submit.log")
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("--- ") and line.rstrip().endswith(("---", "(empty)")):
            current = line.split()[1]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    words = "\n".join(sections.get("stderr") or sections.get("stdout") or []).strip()
    return clean(words)


def task_exception(job_dir: str) -> str:
    """The exception a failed task raised, from its result.json (written on the node: validated, shown as text)."""
    try:
        result = jobfiles.read_result(str(Path(job_dir) / "result.json"))
    except jobfiles.BadResult as exc:
        return clean(f"(result refused: {exc})", 2000)
    return clean(result.exception, 2000) if result is not None else ""


def attempt_detail(row: AttemptRow) -> str:
    """One line on why an attempt failed: the scheduler's words for a refused submission, else the exception."""
    if row.state not in FAILED_STATES:
        return ""
    if row.reason == "submit_error":
        return one_line(submit_words(row.job_dir), 300)
    return one_line(task_exception(row.job_dir), 300)


def latest_attempts(rows: list[AttemptRow]) -> dict[str, AttemptRow]:
    """The newest attempt of each task."""
    latest: dict[str, AttemptRow] = {}
    for row in rows:
        if row.task_id not in latest or latest[row.task_id].attempt <= row.attempt:
            latest[row.task_id] = row
    return latest


def row_json(row: AttemptRow, now: float) -> dict[str, Any]:
    data = asdict(row)
    data["elapsed"] = elapsed(row, now)
    data["detail"] = attempt_detail(row) or None
    return data


def run_json(record: dict[str, Any], rows: list[AttemptRow], now: float) -> dict[str, Any]:
    latest = latest_attempts(rows)
    counts: dict[str, int] = {}
    for row in latest.values():
        counts[row.state] = counts.get(row.state, 0) + 1
    return {
        "run": {**record, "submitter_alive": submitter_alive(record)},
        "counts": counts,
        "attempts": [row_json(r, now) for r in rows],
    }


def exit_code_for(rows: list[AttemptRow]) -> int:
    """1 if the newest attempt of some task failed, else 0."""
    return EXIT_FAILED if any(r.state in FAILED_STATES for r in latest_attempts(rows).values()) else EXIT_OK


def status_table(record: dict[str, Any], rows: list[AttemptRow], now: float) -> Table:
    alive = submitter_alive(record)
    where = f"{record.get('host')} pid {record.get('pid')}"
    if record.get("ended"):
        when = f"ended {fmt_time(record['ended'])}"
    elif alive is False:
        when = f"submitter {where} is gone (killed?)"
    else:
        when = f"running ({where})"
    latest = latest_attempts(rows)
    counts: dict[str, int] = {}
    for row in latest.values():
        counts[row.state] = counts.get(row.state, 0) + 1
    summary = ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))
    table = Table(
        title=f"run {record['run_id']}: started {fmt_time(record['started'])}, {when}",
        caption=f"{len(rows)} attempt(s) of {len(latest)} task(s): {summary}",
        header_style="bold",
        title_justify="left",
        caption_justify="left",
    )
    for column in ("task id", "family", "attempt", "scheduler", "job id", "state", "reason", "image", "elapsed"):
        table.add_column(
            column,
            justify="right" if column in ("attempt", "elapsed") else "left",
            overflow="fold" if column in ("task id", "reason") else "ellipsis",
        )
    for row in rows:
        table.add_row(
            row.task_id,
            row.task_family,
            str(row.attempt),
            row.scheduler,
            row.job_id or "",
            styled_state(row.state),
            Text(": ".join(filter(None, [row.reason or "", attempt_detail(row)]))),
            row.image or "",
            fmt_elapsed(elapsed(row, now)),
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def status(
        run: str = typer.Argument(None, help="Run id or a unique prefix of it (default: the newest run)."),
        watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until the run ends (Ctrl-C stops)."),
        interval: float = typer.Option(2.0, "--interval", min=0.1, help="Seconds between refreshes of --watch."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout (with --watch: one document per line)."),
        state_dir: str = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    ) -> None:
        """Tasks and attempts of a run from the journal.

        Exit code 0 when no task failed, 1 when the newest attempt of some task failed, was cancelled or lost,
        2 on a usage error, 130 when interrupted.
        """
        journal = open_journal(state_dir)
        try:
            record = pick_run(journal, run)
            run_id = record["run_id"]

            def read() -> tuple[dict[str, Any], list[AttemptRow]]:
                fresh = next((r for r in journal.runs() if r["run_id"] == run_id), record)
                return fresh, journal.attempts(run_id)

            current, rows = read()
            if not watch:
                if as_json:
                    print_json(run_json(current, rows, time.time()))
                else:
                    out.print(status_table(current, rows, time.time()))
                raise typer.Exit(exit_code_for(rows))
            try:
                if as_json:
                    import json
                    import sys

                    while True:
                        sys.stdout.write(json.dumps(run_json(current, rows, time.time()), default=str) + "\n")
                        sys.stdout.flush()
                        if submitter_alive(current) is False:
                            break
                        time.sleep(interval)
                        current, rows = read()
                else:
                    with Live(status_table(current, rows, time.time()), console=out, auto_refresh=False) as live:
                        while submitter_alive(current) is not False:
                            time.sleep(interval)
                            current, rows = read()
                            live.update(status_table(current, rows, time.time()), refresh=True)
            except KeyboardInterrupt:
                raise typer.Exit(EXIT_INTERRUPTED) from None
            raise typer.Exit(exit_code_for(rows))
        finally:
            journal.close()
