"""Pure formatters and the live progress display of ``containerbatch run``.

:class:`ProgressDisplay` takes a :class:`containerbatch.run.Run` and shows,
while luigi works, how many tasks are in each state and a table of the queued,
running and recently ended jobs.  On a terminal it is a ``rich.live.Live``; when
stdout is not a terminal it prints one line per change instead::

    with ProgressDisplay(run):
        ok = process([task], workers=workers, run=run)

The display only reads: ``run.processes`` (the :class:`JobProcess` of every
submitted attempt), ``run.poller.get(key)`` (what the poller last saw) and,
when present, ``run.planned`` (the specs preflight found to be run),
``JobProcess.outcome`` and ``JobProcess.submitted_at``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from containerbatch.states import ENDED_STATES

#: the states the live display counts, in display order
PROGRESS_STATES = ("waiting", "submitted", "queued", "running", "retrying", "done", "failed", "unknown")
#: journal states after which an attempt changes no more
FINAL_STATES = frozenset({*ENDED_STATES, "lost"})  # the attempt states of containerbatch.states
#: journal states that count as a failed task (exit code 1)
FAILED_STATES = frozenset({"failed", "cancelled", "lost"})

STATE_STYLE = {
    "waiting": "dim",
    "submitted": "cyan",
    "queued": "blue",
    "running": "yellow",
    "retrying": "dark_orange",
    "done": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "lost": "red",
    "unknown": "bright_black",
    "new_deps": "blue",
    "held": "dark_orange",
}

_QUEUED_NATIVE_INITIAL = "submitted"  # the poller's JobStatus before the first answer


def fmt_elapsed(seconds: float | None) -> str:
    """``75`` → ``1m15s``; ``None`` → ``""``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_time(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else ""


def styled_state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def counts_line(counts: dict[str, int]) -> Text:
    """``waiting 3  running 2  done 10 …`` with every state's colour."""
    text = Text()
    for state in PROGRESS_STATES:
        if text:
            text.append("  ")
        count = counts.get(state, 0)
        text.append(f"{state} ", style=STATE_STYLE[state] if count else "dim")
        text.append(str(count), style="bold" if count else "dim")
    return text


def print_json(data: Any) -> None:
    """One JSON document on stdout, for scripts (no rich formatting)."""
    import sys

    sys.stdout.write(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


# -- live progress -------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    """One attempt as the display shows it."""

    key: str
    task_id: str
    family: str
    attempt: int
    scheduler: str
    job_id: str
    image: str
    state: str  # one of PROGRESS_STATES
    detail: str  # the scheduler's own word, or the outcome
    elapsed: float
    ended_at: float | None


@dataclass(frozen=True)
class Snapshot:
    """What the run looks like at one moment."""

    run_id: str
    taken: float
    counts: dict[str, int]
    views: tuple[TaskView, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _outcome_from_result(path: str) -> str:
    try:
        with open(path) as handle:
            status = json.load(handle).get("status")
    except (OSError, ValueError, AttributeError):
        return "failed"
    return {"success": "done", "new_deps": "waiting"}.get(str(status), "failed")


class ProgressDisplay:
    """Counts per state and a table of jobs, refreshed from a Run.

    Parameters
    ----------
    run:
        The :class:`containerbatch.run.Run` being processed.
    console:
        Where to draw; default a new stdout console.
    refresh:
        Seconds between snapshots.
    live:
        Force the rich Live display (True) or the line-per-event mode (False);
        default: Live when the console is a terminal.
    recent:
        Seconds an ended job stays in the table.
    max_rows:
        Most rows in the table (default: fits the terminal).
    """

    def __init__(
        self,
        run: Any,
        console: Console | None = None,
        refresh: float = 0.5,
        live: bool | None = None,
        recent: float = 30.0,
        max_rows: int | None = None,
    ) -> None:
        self.run = run
        self.console = console or Console()
        self.refresh = refresh
        self.live_mode = self.console.is_terminal if live is None else live
        self.recent = recent
        self.max_rows = max_rows
        self._first_seen: dict[str, float] = {}
        self._ended_at: dict[str, float] = {}
        self._outcomes: dict[str, str] = {}
        self._last_label: dict[str, str] = {}
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.last: Snapshot | None = None

    # -- data ------------------------------------------------------------------
    def _state(self, proc: Any, now: float) -> tuple[str, str]:
        key = proc.key
        if proc.reported:
            if key not in self._outcomes:
                outcome = getattr(proc, "outcome", None)
                if outcome is not None:
                    label = {"DONE": "done", "PENDING": "waiting"}.get(str(outcome), "failed")
                else:
                    label = _outcome_from_result(proc.spec.result_path)
                self._outcomes[key] = label
            self._ended_at.setdefault(key, now)
            return self._outcomes[key], self._outcomes[key]
        retry = proc.spec.attempt > 1
        if getattr(proc, "_resubmit_at", None) is not None:  # failed, waiting for its next attempt
            return "retrying", "resubmit pending"
        if not proc.job_id:
            return ("retrying", "submitting (retry)") if retry else ("waiting", "submitting")
        tracked = self.run.poller.get(key)
        if tracked is None or tracked.finished:
            return "running", "ending"
        state = tracked.status.state.value
        native = tracked.status.native or state
        if state in ("pending", "held", "suspended"):
            label = "submitted" if native == _QUEUED_NATIVE_INITIAL else "queued"
        elif state == "running":
            label = "running"
        else:
            label = "unknown"
        if retry and label in ("submitted", "queued", "running"):
            return "retrying", f"{label} (retry)"
        return label, native

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Read the run once; safe to call from any thread."""
        now = time.time() if now is None else now
        processes: dict[str, Any] = dict(self.run.processes)
        views: list[TaskView] = []
        latest: dict[str, TaskView] = {}
        seen: set[int] = set()
        for proc in processes.values():
            if id(proc) in seen:  # one JobProcess may stand under the keys of all its attempts
                continue
            seen.add(id(proc))
            spec = proc.spec
            key = proc.key
            state, detail = self._state(proc, now)
            started = getattr(proc, "submitted_at", None) or self._first_seen.setdefault(key, now)
            ended = self._ended_at.get(key)
            view = TaskView(
                key,
                spec.task_id,
                spec.task_family,
                spec.attempt,
                spec.batch_system,
                proc.job_id or "",
                spec.image or "",
                state,
                detail,
                (ended or now) - started,
                ended,
            )
            views.append(view)
            if spec.task_id not in latest or latest[spec.task_id].attempt <= spec.attempt:
                latest[spec.task_id] = view
        counts = dict.fromkeys(PROGRESS_STATES, 0)
        for view in latest.values():
            counts[view.state] += 1
        planned: Iterable[Any] = getattr(self.run, "planned", None) or ()
        planned_ids = {getattr(p, "task_id", p) for p in planned}
        counts["waiting"] += len(planned_ids - set(latest))
        snap = Snapshot(str(getattr(self.run, "run_id", "")), now, counts, tuple(views))
        self.last = snap
        return snap

    # -- rendering ---------------------------------------------------------------
    def rows(self, snap: Snapshot) -> tuple[list[TaskView], int]:
        """The views the table shows (active first, then recently ended) and how many were left out."""
        active = [v for v in snap.views if v.ended_at is None and v.state != "waiting"]
        active.sort(key=lambda v: -v.elapsed)
        ended = [v for v in snap.views if v.ended_at is not None and snap.taken - v.ended_at <= self.recent]
        ended.sort(key=lambda v: v.ended_at or 0.0, reverse=True)
        limit = self.max_rows or max(5, self.console.size.height - 8)
        chosen = active + ended
        return chosen[:limit], max(0, len(chosen) - limit)

    def render(self, snap: Snapshot) -> RenderableType:
        """The Live renderable of ``snap``: counts line and job table."""
        title = Text.assemble(("containerbatch ", "bold"), (f"run {snap.run_id}  ", "dim"), counts_line(snap.counts))
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        for column in ("task", "attempt", "state", "scheduler", "job id", "image", "elapsed"):
            table.add_column(
                column, no_wrap=column != "task", justify="right" if column in ("attempt", "elapsed") else "left"
            )
        rows, hidden = self.rows(snap)
        for view in rows:
            table.add_row(
                view.task_id,
                str(view.attempt),
                styled_state(view.detail if view.state == "retrying" else view.state),
                view.scheduler,
                view.job_id,
                view.image,
                fmt_elapsed(view.elapsed),
            )
        parts: list[RenderableType] = [title, table]
        if hidden:
            parts.append(Text(f"… and {hidden} more", style="dim"))
        return Group(*parts)

    def events(self, snap: Snapshot) -> list[str]:
        """Lines for every attempt whose state changed since the last call (plain mode)."""
        lines = []
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
        for view in snap.views:
            label = view.detail if view.state == "retrying" else view.state
            if self._last_label.get(view.key) == label:
                continue
            self._last_label[view.key] = label
            where = f"{view.scheduler} job {view.job_id}" if view.job_id else view.scheduler
            took = f" after {fmt_elapsed(view.elapsed)}" if view.ended_at is not None else ""
            lines.append(f"{stamp} {label:<9} {view.task_id} attempt {view.attempt} ({where}){took}")
        return lines

    def summary(self, snap: Snapshot) -> str:
        parts = [f"{state} {snap.counts[state]}" for state in PROGRESS_STATES if snap.counts[state]]
        return f"run {snap.run_id}: " + (", ".join(parts) or "nothing ran")

    # -- driving -------------------------------------------------------------------
    def tick(self) -> Snapshot:
        """Take a snapshot and show it."""
        snap = self.snapshot()
        if self._live is not None:
            self._live.update(self.render(snap), refresh=True)
        else:
            for line in self.events(snap):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return snap

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.tick()
            except Exception:  # a display bug must never stop the run
                logging.getLogger(__name__).debug("progress display failed", exc_info=True)

    def __enter__(self) -> ProgressDisplay:
        if self.live_mode:
            self._live = Live(
                console=self.console, auto_refresh=False, redirect_stdout=True, redirect_stderr=True, transient=False
            )
            self._live.start()
            self._route_logging()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="containerbatch-display", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        snap = self.tick()
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._restore_logging()
        if exc[0] is None or snap.views:  # no summary after a configuration error before any submission
            self.console.print(self.summary(snap), markup=False, highlight=False)

    def _route_logging(self) -> None:
        """Log records print above the Live display, not through it (Live redirects sys.stderr)."""
        import sys

        for name in ("", "luigi", "luigi-interface"):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__):
                    self._streams.append((handler, handler.setStream(sys.stderr)))

    def _restore_logging(self) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._streams.clear()
