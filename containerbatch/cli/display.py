"""Pure formatters, the live progress display and the end summary of ``containerbatch run``.

:class:`ProgressDisplay` takes a :class:`containerbatch.run.Run` and shows,
while luigi works, how many tasks are in each state.  On a terminal it is a
``rich.live.Live``: counts per state, a progress bar with an ETA, and a table
of what is running, failed or retrying with a reason column, as high as the
terminal allows (many tasks are shown as one row per task family).  When
stdout is not a terminal it prints one line per state change instead, or, for
runs of more than ``progress_threshold`` tasks, one summary line every
``progress_interval`` seconds (failures and retries still get a line each)::

    with ProgressDisplay(run):
        ok = process([task], workers=workers, run=run)

When the block ends, :func:`final_summary` prints the counts, the wall time
and for every failed task its reason, exit code, the scheduler's words, its
log and the last lines of it, then where to look next.

The display only reads: ``run.processes`` (the
:class:`~containerbatch.run.AttemptRecord` of every submitted attempt: ``spec``,
``job_id``, ``reported``, ``outcome``, ``failures``, ``explanation``,
``submitted_at``, ``ended_at``, ``resubmit_at``), ``run.poller.get(key)`` (what
the poller last saw) and, when present, ``run.planned`` (the specs preflight
found to be run).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from containerbatch import jobfiles
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
    "not run": "dim",
}

_QUEUED_NATIVE_INITIAL = "submitted"  # the poller's JobStatus before the first answer
#: failed tasks whose details the end summary prints (the rest: `containerbatch status`)
SUMMARY_FAILURES = 10
#: lines of a failed task's log in the end summary
SUMMARY_TAIL = 10

log = logging.getLogger(__name__)


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


def counts_line(counts: dict[str, int], only_present: bool = False) -> Text:
    """``waiting 3  running 2  done 10 …`` with every state's colour (``only_present``: the states in ``counts``)."""
    text = Text()
    for state in PROGRESS_STATES:
        if only_present and state not in counts:
            continue
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


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str, limit: int = 4000) -> str:
    """Text from a job or a scheduler, safe to print: no control characters (terminal escapes), at most ``limit``."""
    text = _UNPRINTABLE.sub("?", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, width: int = 120) -> str:
    """The first non-empty line of ``text``, cut to ``width``."""
    first = next((ln.strip() for ln in clean(text).splitlines() if ln.strip()), "")
    return first if len(first) <= width else first[: width - 1] + "…"


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
    reason: str = ""  # why it failed or is retried: "task_error: the task raised ValueError(...)"


@dataclass(frozen=True)
class Snapshot:
    """What the run looks like at one moment."""

    run_id: str
    taken: float
    counts: dict[str, int]
    views: tuple[TaskView, ...]
    started: float = 0.0  # when the display began (for the ETA)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.counts.get("done", 0) + self.counts.get("failed", 0)

    def eta(self) -> float | None:
        """Seconds until every task has ended, at the pace so far (None: no pace yet)."""
        if not self.finished or not self.started or self.finished >= self.total or self.taken - self.started < 1:
            return None
        pace = (self.taken - self.started) / self.finished
        return pace * (self.total - self.finished)


def _outcome_from_result(path: str) -> str:
    try:
        result = jobfiles.read_result(path)  # written on the node: validated
    except jobfiles.BadResult:
        return "failed"
    status = result.status if result is not None else ""
    return {"success": "done", "new_deps": "waiting"}.get(status, "failed")


def failure_reason(proc: Any) -> str:
    """``reason: first line of the detail`` of a process's last failure, or ``""``."""
    failures = getattr(proc, "failures", None) or []
    if not failures:
        return ""
    last = failures[-1]
    reason = getattr(last.reason, "value", str(last.reason))
    detail = one_line(last.detail, 200)
    if reason == "submit_error":
        detail = _scheduler_words(last.detail) or detail
    return f"{reason}: {detail}" if detail else reason


def _scheduler_words(detail: str) -> str:
    """The ``stderr:`` part of a SchedulerError message (what the scheduler itself said)."""
    for line in str(detail).splitlines():
        if line.strip().startswith("stderr:"):
            return one_line(line.strip()[len("stderr:") :], 200)
    return ""


class ProgressDisplay:
    """Counts per state, a progress bar and a table of jobs, refreshed from a Run.

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
    interval:
        Plain mode, large runs: seconds between summary lines (default: the
        ``progress_interval`` setting).
    threshold:
        Plain mode: runs of more tasks than this print summary lines instead
        of a line per change (default: the ``progress_threshold`` setting).
    log_path:
        The run's log file, named in the end summary.
    """

    def __init__(
        self,
        run: Any,
        console: Console | None = None,
        refresh: float = 0.5,
        live: bool | None = None,
        recent: float = 30.0,
        max_rows: int | None = None,
        interval: float | None = None,
        threshold: int | None = None,
        log_path: str | None = None,
    ) -> None:
        self.run = run
        self.console = console or Console()
        self.refresh = refresh
        self.live_mode = self.console.is_terminal if live is None else live
        self.recent = recent
        self.max_rows = max_rows
        self.interval = interval if interval is not None else _setting(run, "progress_interval", 30.0)
        self.threshold = threshold if threshold is not None else int(_setting(run, "progress_threshold", 50))
        self.log_path = log_path
        self.started = time.time()
        self._first_seen: dict[str, float] = {}
        self._ended_at: dict[str, float] = {}
        self._outcomes: dict[str, str] = {}
        self._last_label: dict[str, str] = {}
        self._last_summary = 0.0
        self._final = False  # the last frame: no ETA
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.last: Snapshot | None = None
        #: long operations under way (image conversions): key -> (text, started, last reported)
        self.activities: dict[str, list[Any]] = {}
        self._activity_lock = threading.Lock()
        self._tick_lock = threading.RLock()

    # -- long operations -----------------------------------------------------------
    def on_activity(self, event: str, key: str, text: str, started: float) -> None:
        """Listener of :func:`containerbatch.runlog.activity`: show a long operation while it runs."""
        now = time.time()
        with self._activity_lock:
            if event == "start":
                self.activities[key] = [text, started, now]
            else:
                self.activities.pop(key, None)
        if self._live is None:  # plain mode: a line when it starts and when it ends
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            took = fmt_elapsed(now - started)
            line = f"{stamp} {text} ..." if event == "start" else f"{stamp} {text}: done in {took}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.tick()

    def _activity_lines(self, now: float, every: float | None = None) -> list[str]:
        """``converting … (1m05s)`` for each operation under way; with ``every``: only those not told for so long."""
        lines = []
        with self._activity_lock:
            for entry in self.activities.values():
                text, started, told = entry
                if every is not None and now - told < every:
                    continue
                entry[2] = now
                lines.append(f"{text} ({fmt_elapsed(now - started)} so far)")
        return lines

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
            # elapsed stops when the job itself ended (its result), else when it was reported
            self._ended_at.setdefault(key, getattr(proc, "ended_at", None) or now)
            return self._outcomes[key], self._outcomes[key]
        retry = proc.spec.attempt > 1
        if getattr(proc, "resubmit_at", None) is not None:  # failed, waiting for its next attempt
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
            reason = failure_reason(proc) if state in ("failed", "retrying") else ""
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
                max(0.0, (ended or now) - started),
                ended,
                reason,
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
        snap = Snapshot(str(getattr(self.run, "run_id", "")), now, counts, tuple(views), self.started)
        self.last = snap
        return snap

    # -- rendering ---------------------------------------------------------------
    def _limit(self) -> int:
        return self.max_rows or max(5, self.console.size.height - 7)

    def rows(self, snap: Snapshot) -> tuple[list[TaskView], int]:
        """The views the table shows and how many were left out.

        First what needs attention (failed and retrying, newest first), then
        what is active (longest first), then what ended recently.
        """
        failed = [v for v in snap.views if v.state == "failed" and v.ended_at is not None]
        failed.sort(key=lambda v: v.ended_at or 0.0, reverse=True)
        retrying = [v for v in snap.views if v.state == "retrying"]
        active = [v for v in snap.views if v.ended_at is None and v.state not in ("waiting", "retrying")]
        active.sort(key=lambda v: -v.elapsed)
        ended = [
            v
            for v in snap.views
            if v.ended_at is not None and v.state != "failed" and snap.taken - v.ended_at <= self.recent
        ]
        ended.sort(key=lambda v: v.ended_at or 0.0, reverse=True)
        chosen = failed + retrying + active + ended
        limit = self._limit()
        return chosen[:limit], max(0, len(chosen) - limit)

    def families(self, snap: Snapshot) -> list[tuple[str, dict[str, int]]]:
        """Counts per state of the newest attempt of each task, per task family (largest first)."""
        latest: dict[str, TaskView] = {}
        for view in snap.views:
            if view.task_id not in latest or latest[view.task_id].attempt <= view.attempt:
                latest[view.task_id] = view
        per: dict[str, dict[str, int]] = {}
        for view in latest.values():
            family = per.setdefault(view.family, dict.fromkeys(PROGRESS_STATES, 0))
            family[view.state] += 1
        planned: Iterable[Any] = getattr(self.run, "planned", None) or ()
        for spec in planned:
            task_id = getattr(spec, "task_id", None)
            if task_id is not None and task_id not in latest:
                name = str(getattr(spec, "task_family", None) or task_id.split("_")[0])
                per.setdefault(name, dict.fromkeys(PROGRESS_STATES, 0))["waiting"] += 1
        return sorted(per.items(), key=lambda item: (-sum(item[1].values()), item[0]))

    def header(self, snap: Snapshot) -> RenderableType:
        """Title, counts, progress bar with ETA."""
        counts = counts_line(snap.counts)
        if len(counts) + len(snap.run_id) + 20 > self.console.width:  # narrow terminal: the states with tasks
            counts = counts_line({k: v for k, v in snap.counts.items() if v}, only_present=True)
        title = Text.assemble(("containerbatch ", "bold"), (f"run {snap.run_id}  ", "dim"), counts)
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column()
        eta = None if self._final else snap.eta()
        done_text = f"{snap.finished}/{snap.total} ended"
        timing = f"elapsed {fmt_elapsed(snap.taken - snap.started)}" + (f"  ETA {fmt_elapsed(eta)}" if eta else "")
        bar.add_row(
            ProgressBar(total=max(1, snap.total), completed=snap.finished, width=40),
            Text(f"{done_text}  {timing}", style="dim"),
        )
        return Group(title, bar)

    def render(self, snap: Snapshot) -> RenderableType:
        """The Live renderable of ``snap``: header and a table no higher than the terminal."""
        limit = self._limit()
        rows, hidden = self.rows(snap)
        parts: list[RenderableType] = [self.header(snap)]
        for line in self._activity_lines(snap.taken):
            parts.append(Spinner("dots", text=Text(line, style="cyan")))
        families = self.families(snap)
        if hidden and len(families) > 0:
            # too many to list: one row per family, then the failures and retries that fit
            fam = Table(box=None, pad_edge=False, header_style="bold", expand=False)
            fam.add_column("family", no_wrap=True)
            fam.add_column("tasks", justify="right")
            for state in PROGRESS_STATES:
                fam.add_column(state, justify="right", style=STATE_STYLE[state])
            shown_families = families[: max(1, limit // 3)]
            for name, counts in shown_families:
                fam.add_row(
                    name, str(sum(counts.values())), *[str(counts[s]) if counts[s] else "" for s in PROGRESS_STATES]
                )
            parts.append(fam)
            if len(families) > len(shown_families):
                parts.append(Text(f"… and {len(families) - len(shown_families)} more families", style="dim"))
            room = max(2, limit - len(shown_families) - 2)
            rows, hidden = rows[:room], hidden + max(0, len(rows) - room)
        cells = [
            (
                view.task_id,
                str(view.attempt),
                view.detail if view.state == "retrying" else view.state,
                view.scheduler,
                view.job_id,
                view.image,
                fmt_elapsed(view.elapsed),
                view.reason,
            )
            for view in rows
        ]
        columns = ("task", "attempt", "state", "scheduler", "job id", "image", "elapsed", "reason")
        # a column nobody fills (image with runtime host, reason when nothing failed) is left out; the others
        # keep their width and the reason column is cut to what is left
        keep = [i for i, name in enumerate(columns) if name in ("task", "state") or any(c[i] for c in cells)]
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        for i in keep:
            name = columns[i]
            widest = max([len(name), *(len(c[i]) for c in cells)])
            table.add_column(
                name,
                no_wrap=True,
                overflow="ellipsis",
                min_width=None if name == "reason" else min(widest, 40),
                max_width=60 if name == "task" else None,
                justify="right" if name in ("attempt", "elapsed") else "left",
            )
        for view, row in zip(rows, cells, strict=True):
            values: list[RenderableType] = []
            for i in keep:
                if columns[i] == "state":
                    values.append(styled_state(row[i]))
                elif columns[i] == "reason":
                    values.append(Text(row[i], style="red" if view.state == "failed" else ""))
                else:
                    values.append(row[i])
            table.add_row(*values)
        parts.append(table)
        if hidden:
            parts.append(Text(f"… and {hidden} more (`containerbatch status` lists every attempt)", style="dim"))
        return Group(*parts)

    def _event_line(self, view: TaskView, stamp: str) -> str:
        label = view.detail if view.state == "retrying" else view.state
        where = f"{view.scheduler} job {view.job_id}" if view.job_id else view.scheduler
        took = f" after {fmt_elapsed(view.elapsed)}" if view.ended_at is not None else ""
        why = f": {view.reason}" if view.reason else ""
        return f"{stamp} {label:<9} {view.task_id} attempt {view.attempt} ({where}){took}{why}"

    def events(self, snap: Snapshot) -> list[str]:
        """Lines for every attempt whose state changed since the last call (plain mode)."""
        lines = []
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
        for view in snap.views:
            label = view.detail if view.state == "retrying" else view.state
            if self._last_label.get(view.key) == label:
                continue
            self._last_label[view.key] = label
            lines.append(self._event_line(view, stamp))
        return lines

    def summary(self, snap: Snapshot, final: bool = False) -> str:
        """The run's last line: counts and wall time; when ``final``, tasks still waiting are ``not run``."""
        counts = dict(snap.counts)
        ended = final
        parts = []
        for state in PROGRESS_STATES:
            if counts[state] and not (state == "waiting" and ended):
                parts.append(f"{state} {counts[state]}")
        if ended and counts["waiting"]:  # luigi ran what it could: the rest needs a task that failed
            parts.append(f"not run {counts['waiting']}")
        wall = f" in {fmt_elapsed(snap.taken - snap.started)}" if snap.started else ""
        return f"run {snap.run_id}: " + (", ".join(parts) or "nothing ran") + wall

    # -- driving -------------------------------------------------------------------
    def tick(self, final: bool = False) -> Snapshot:
        """Take a snapshot and show it (one at a time: the display's thread and an activity's may both ask)."""
        with self._tick_lock:
            snap = self.snapshot()
            if self._live is not None:
                self._live.update(self.render(snap), refresh=True)
            else:
                for line in self._plain(snap, final):
                    self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return snap

    def _plain(self, snap: Snapshot, final: bool) -> list[str]:
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
        lines = [f"{stamp} {line}" for line in self._activity_lines(snap.taken, every=self.interval)]
        if snap.total <= self.threshold:
            return lines + self.events(snap)
        for view in snap.views:  # failures and retries: a line each, even in large runs
            label = view.detail if view.state == "retrying" else view.state
            if self._last_label.get(view.key) == label:
                continue
            self._last_label[view.key] = label
            if view.state in ("failed", "retrying"):
                lines.append(self._event_line(view, stamp))
        if final or snap.taken - self._last_summary >= self.interval:
            self._last_summary = snap.taken
            eta = snap.eta()
            lines.append(
                f"{stamp} progress  {snap.finished}/{snap.total} ended: "
                + ", ".join(f"{s} {snap.counts[s]}" for s in PROGRESS_STATES if snap.counts[s])
                + (f"; ETA {fmt_elapsed(eta)}" if eta else "")
            )
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.tick()
            except Exception:  # a display bug must never stop the run
                log.debug("progress display failed", exc_info=True)

    def __enter__(self) -> ProgressDisplay:
        from containerbatch.runlog import ACTIVITY_LISTENERS

        self.started = time.time()
        ACTIVITY_LISTENERS.append(self.on_activity)
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
        from containerbatch.runlog import ACTIVITY_LISTENERS

        if self.on_activity in ACTIVITY_LISTENERS:
            ACTIVITY_LISTENERS.remove(self.on_activity)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._final = True
        snap = self.tick(final=True)
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._restore_logging()
        if exc[0] is None or snap.views:  # no summary after a configuration error before any submission
            final_summary(self.run, self.console, snap=snap, display=self, log_path=self.log_path)

    def _route_logging(self) -> None:
        """Log records print above the Live display, not through it (Live redirects sys.stderr)."""
        import sys

        for name in ("", "luigi", "luigi-interface", "containerbatch"):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__):
                    self._streams.append((handler, handler.setStream(sys.stderr)))

    def _restore_logging(self) -> None:
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._streams.clear()


def _setting(run: Any, name: str, default: float) -> float:
    resolver = getattr(run, "resolver", None)
    if resolver is None:
        return default
    try:
        value = resolver.resolve(name).value
    except Exception:  # an older settings table without the name
        return default
    return float(value) if value is not None else default


# -- the end of a run ----------------------------------------------------------------


def _tail(path: str, lines: int) -> list[str]:
    return clean(jobfiles.tail_text(path, lines), 16384).splitlines()  # written on the node: no links, no FIFOs


def _failed_procs(run: Any) -> list[Any]:
    seen: set[int] = set()
    failed = []
    for proc in list(getattr(run, "processes", {}).values()):
        if id(proc) in seen:
            continue
        seen.add(id(proc))
        if getattr(proc, "reported", False) and str(getattr(proc, "outcome", "")) == "FAILED":
            failed.append(proc)
    return sorted(failed, key=lambda p: (getattr(p, "ended_at", None) or 0.0, p.spec.task_id))


def failure_block(proc: Any, tail_lines: int = SUMMARY_TAIL) -> list[str]:
    """What the end summary says about one failed task: reason, exit code, the scheduler's words, log, tail."""
    spec = proc.spec
    failures = getattr(proc, "failures", None) or []
    last = failures[-1] if failures else None
    reason = getattr(getattr(last, "reason", None), "value", "failed") if last else "failed"
    code = getattr(last, "exit_code", None)
    where = f"{spec.batch_system} job {proc.job_id}" if proc.job_id else f"{spec.batch_system}, never got a job id"
    exit_text = f", exit code {code}" if code is not None else ""
    lines = [f"FAILED {spec.task_id} (attempt {spec.attempt}, {where}): {reason}{exit_text}"]
    detail = clean(str(getattr(last, "detail", "") or "")).strip()
    for line in detail.splitlines()[:12]:
        lines.append(f"  {line.strip()}")
    if len(failures) > 1:
        history = ", ".join(f"{i + 1}: {getattr(f.reason, 'value', f.reason)}" for i, f in enumerate(failures))
        lines.append(f"  attempts: {history}")
    if reason == "submit_error":
        submit_log = os.path.join(spec.job_dir, "submit.log")
        if os.path.exists(submit_log):
            lines.append(f"  submit log: {submit_log}")
        return lines
    stderr, stdout = getattr(spec, "stderr_path", ""), getattr(spec, "stdout_path", "")
    tail, which = _tail(stderr, tail_lines), stderr
    if not tail:
        tail, which = _tail(stdout, tail_lines), stdout
    lines.append(f"  log: {which or stderr}")
    if tail:
        lines.append(f"  last lines of {os.path.basename(which)}:")
        lines.extend(f"  | {ln}" for ln in tail)
    return lines


def final_summary(
    run: Any,
    console: Console,
    snap: Snapshot | None = None,
    display: ProgressDisplay | None = None,
    log_path: str | None = None,
) -> None:
    """Print the end of a run: its last line, each failed task explained, and where to look next."""
    display = display or ProgressDisplay(run, console=console, live=False)
    if snap is None:
        snap = display.snapshot()
    failed = _failed_procs(run)
    text: list[str] = []
    if failed:
        text.append("")
        # the same refusal of the scheduler for many tasks is told once
        same: dict[str, list[str]] = {}
        told = 0
        for proc in failed:
            words = failure_reason(proc)
            if words.startswith("submit_error") and words in same:
                same[words].append(proc.spec.task_id)
                continue
            if told >= SUMMARY_FAILURES:
                continue
            same[words] = []
            told += 1
            block = failure_block(proc)
            text.extend(block)
            text.append("")
        for others in same.values():
            if others:
                text.append(
                    f"refused with the same words for {len(others)} more task(s): {', '.join(others[:5])}"
                    + (" …" if len(others) > 5 else "")
                )
        untold = len(failed) - told - sum(len(o) for o in same.values())
        if untold > 0:
            text.append(f"… and {untold} more failed tasks: `containerbatch status` lists them")
        if text[-1] != "":
            text.append("")
    text.append(display.summary(snap, final=True))
    run_id = snap.run_id
    if failed:
        with_log = [p for p in failed if p.job_id]
        text.append("next:")
        if with_log:
            text.append(f"  containerbatch logs {with_log[0].spec.task_id} --stderr   (the log of a failed task)")
        else:
            text.append(f"  containerbatch logs {failed[0].spec.task_id}   (what the batch system said)")
        text.append(f"  containerbatch status {run_id}   (every attempt, with reasons)")
        text.append(f"  containerbatch report {run_id}   (HTML timeline and statistics)")
    if log_path:
        text.append(f"run log (luigi and containerbatch): {log_path}")
    for line in text:
        style = "bold red" if line.startswith("FAILED ") else None
        console.print(line, markup=False, highlight=False, soft_wrap=True, style=style)
