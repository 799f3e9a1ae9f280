"""``containerbatch report``: a self-contained HTML page of a run: timeline, statistics, failures.

The page needs no network: CSS, the data (JSON) and the script that draws the
SVG timeline are inline.  Each attempt is one bar per scheduler lane, from
``submitted`` (queued part, pale) over ``started`` to ``ended`` (coloured by
state); an attempt that has not ended reaches to the time the report was made.
The times are the job's own (the journal records the end the job reported).

Below the timeline: per task family the number of tasks and attempts, median
and longest run time, median and longest queue wait, and failures by reason;
then every failed attempt with its exception text (or, for a refused
submission, the scheduler's words) and the last lines of its log.  Text that
comes from jobs is escaped: it is shown, never interpreted.
"""

from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path
from typing import Any

import typer

from containerbatch import jobfiles
from containerbatch.cli.common import EXIT_OK, out
from containerbatch.cli.display import FAILED_STATES, fmt_elapsed, fmt_time, print_json
from containerbatch.cli.status import (
    STATE_DIR_HELP,
    clean,
    exit_code_for,
    open_journal,
    pick_run,
    row_json,
    submit_words,
    task_exception,
)

#: failed attempts the page details (the rest: `containerbatch status`)
MAX_FAILURES = 50
#: lines of a failed attempt's log on the page
TAIL_LINES = 15

COLORS = {
    "done": "#2e9d4b",
    "failed": "#d23c3c",
    "cancelled": "#a04bc8",
    "lost": "#e07b20",
    "new_deps": "#3c78d2",
    "submitted": "#27a4c6",
    "running": "#e0b020",
    "queued": "#27a4c6",
    "unknown": "#8c8c8c",
}

_CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 16px 24px;
       color: #1d1d1f; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 22px 0 6px; }
.meta { color: #666; margin-bottom: 10px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
            vertical-align: -2px; }
svg.timeline { display: block; border: 1px solid #e3e3e3; background: #fcfcfc; }
svg text { font-size: 11px; fill: #333; } svg .axis text { fill: #777; } svg .grid { stroke: #ececec; }
table { border-collapse: collapse; margin-top: 8px; }
td, th { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; } td.num { text-align: right; }
section.failure { border-left: 3px solid #d23c3c; padding: 2px 10px; margin: 10px 0; }
section.failure h3 { font-size: 13px; margin: 4px 0; }
pre { background: #f6f6f6; padding: 6px 8px; margin: 4px 0; white-space: pre-wrap; font-size: 12px; }
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cb-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var root = document.getElementById("timelines");
  var rows = data.attempts;
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function fmt(s) {
    if (s < 60) { return s.toFixed(s < 10 ? 1 : 0) + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m" + ("0" + Math.floor(s % 60)).slice(-2) + "s"; }
    return Math.floor(s / 3600) + "h" + ("0" + Math.floor((s % 3600) / 60)).slice(-2) + "m";
  }
  var t0 = Infinity, t1 = -Infinity;
  rows.forEach(function (r) {
    r.begin = r.submitted || r.started || data.generated;
    r.run_from = r.started || null;
    r.end = r.ended || data.generated;
    t0 = Math.min(t0, r.begin); t1 = Math.max(t1, r.end);
  });
  if (!rows.length) { root.textContent = "This run has no attempts."; return; }
  if (t1 <= t0) { t1 = t0 + 1; }
  var label = 260, width = Math.max(700, Math.min(1600, window.innerWidth - 60)), plot = width - label - 20;
  var rowH = 18, top = 24;
  function x(t) { return label + (t - t0) / (t1 - t0) * plot; }
  var lanes = {};
  rows.forEach(function (r) { (lanes[r.scheduler] = lanes[r.scheduler] || []).push(r); });
  Object.keys(lanes).sort().forEach(function (name) {
    var lane = lanes[name].slice().sort(function (a, b) { return a.begin - b.begin || a.attempt - b.attempt; });
    var h2 = document.createElement("h2");
    h2.textContent = "scheduler " + name + " (" + lane.length + " attempts)";
    root.appendChild(h2);
    var height = top + lane.length * rowH + 8;
    var svg = el("svg", {"class": "timeline", "width": width, "height": height, "data-scheduler": name}, root);
    var axis = el("g", {"class": "axis"}, svg);
    var span = t1 - t0;
    var steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200];
    var step = steps.find(function (s) { return span / s <= 10; }) || 86400;
    for (var k = 0; k * step <= span + 1e-9; k++) {
      var t = k * step;
      el("line", {"class": "grid", "x1": x(t0 + t), "x2": x(t0 + t), "y1": top - 6, "y2": height}, axis);
      el("text", {"x": x(t0 + t), "y": 12, "text-anchor": "middle"}, axis).textContent = "+" + fmt(t);
    }
    lane.forEach(function (r, i) {
      var y = top + i * rowH;
      var g = el("g", {"data-task": r.task_id, "data-attempt": r.attempt, "data-state": r.state}, svg);
      g.setAttribute("class", "attempt");
      var color = data.colors[r.state] || "#8c8c8c";
      var tip = r.task_id + " attempt " + r.attempt + " — " + r.state + (r.reason ? " (" + r.reason + ")" : "") +
        "\njob " + (r.job_id || "?") + " on " + r.scheduler + ", image " + (r.image || "none") +
        "\nqueued " + fmt((r.run_from || r.end) - r.begin) + (r.run_from ? ", ran " + fmt(r.end - r.run_from) : "");
      el("title", {}, g).textContent = tip;
      var name = el("text", {"x": label - 6, "y": y + 12, "text-anchor": "end"}, g);
      name.textContent = (r.task_id.length > 38 ? r.task_id.slice(0, 37) + "…" : r.task_id) + " #" + r.attempt;
      if (!r.run_from && r.ended) {  // ended, start not recorded: the whole span, dashed
        el("rect", {"class": "ran start-unknown", "x": x(r.begin), "y": y + 2, "height": rowH - 4, "rx": 2,
                    "width": Math.max(2, x(r.end) - x(r.begin)), "fill": color, "fill-opacity": 0.6,
                    "stroke": color, "stroke-dasharray": "3 2"}, g);
        return;
      }
      var runFrom = r.run_from || r.end;
      if (runFrom > r.begin) {
        el("rect", {"class": "queued", "x": x(r.begin), "y": y + 3, "height": rowH - 6, "rx": 2,
                    "width": Math.max(1, x(runFrom) - x(r.begin)), "fill": color, "fill-opacity": 0.3}, g);
      }
      if (r.run_from) {
        el("rect", {"class": "ran", "x": x(r.run_from), "y": y + 2, "height": rowH - 4, "rx": 2,
                    "width": Math.max(2, x(r.end) - x(r.run_from)), "fill": color}, g);
      }
    });
  });
  document.body.setAttribute("data-drawn", String(rows.length));
})();
"""


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no ``</script>``, no HTML comment openers."""
    text = json.dumps(data, default=str, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _durations(rows: list[Any]) -> tuple[list[float], list[float]]:
    """Run times (started→ended) and queue waits (submitted→started) of ended attempts, from the job's own times."""
    ran, waited = [], []
    for row in rows:
        if row.started and row.ended and row.ended >= row.started:
            ran.append(row.ended - row.started)
        if row.submitted and row.started and row.started >= row.submitted:
            waited.append(row.started - row.submitted)
    return ran, waited


def family_stats(rows: list[Any]) -> list[dict[str, Any]]:
    """Per task family: tasks, attempts, states, median/max run time and queue wait, failures by reason."""
    families: dict[str, list[Any]] = {}
    for row in rows:
        families.setdefault(row.task_family, []).append(row)
    stats = []
    for family, members in sorted(families.items()):
        ran, waited = _durations(members)
        reasons: dict[str, int] = {}
        for row in members:
            if row.state in FAILED_STATES:
                key = row.reason or row.state
                reasons[key] = reasons.get(key, 0) + 1
        latest: dict[str, Any] = {}
        for row in members:
            if row.task_id not in latest or latest[row.task_id].attempt <= row.attempt:
                latest[row.task_id] = row
        stats.append(
            {
                "family": family,
                "tasks": len(latest),
                "attempts": len(members),
                "done": sum(1 for r in latest.values() if r.state == "done"),
                "failed": sum(1 for r in latest.values() if r.state in FAILED_STATES),
                "run_median": statistics.median(ran) if ran else None,
                "run_max": max(ran) if ran else None,
                "wait_median": statistics.median(waited) if waited else None,
                "wait_max": max(waited) if waited else None,
                "failures": dict(sorted(reasons.items())),
            }
        )
    return stats


def _tail(path: Path, lines: int) -> str:
    return clean(jobfiles.tail_text(path, lines), 8000)


def failure_details(rows: list[Any]) -> list[dict[str, Any]]:
    """Every failed attempt: reason, exit code, exception text or the scheduler's words, last log lines."""
    details = []
    for row in rows:
        if row.state not in FAILED_STATES:
            continue
        folder = Path(row.job_dir)
        if row.reason == "submit_error":
            text, tail, log = submit_words(row.job_dir), "", folder / "submit.log"
        else:
            stderr = folder / "stderr"
            text, log = task_exception(row.job_dir), stderr
            tail = _tail(stderr, TAIL_LINES) or _tail(folder / "stdout", TAIL_LINES)
        details.append(
            {
                "task_id": row.task_id,
                "attempt": row.attempt,
                "job_id": row.job_id,
                "scheduler": row.scheduler,
                "state": row.state,
                "reason": row.reason,
                "exit_code": row.exit_code,
                "exception": text,
                "log": str(log),
                "tail": tail,
            }
        )
    return details


def _stats_html(stats: list[dict[str, Any]]) -> str:
    esc = html.escape

    def num(value: Any) -> str:
        return f"<td class=num>{esc(fmt_elapsed(value)) if value is not None else ''}</td>"

    body = "".join(
        f'<tr data-family="{esc(s["family"])}"><td>{esc(s["family"])}</td><td class=num>{s["tasks"]}</td>'
        f"<td class=num>{s['attempts']}</td><td class=num>{s['done']}</td><td class=num>{s['failed']}</td>"
        + num(s["run_median"])
        + num(s["run_max"])
        + num(s["wait_median"])
        + num(s["wait_max"])
        + f"<td>{esc(', '.join(f'{k} {v}' for k, v in s['failures'].items()))}</td></tr>"
        for s in stats
    )
    return (
        '<table id="family-stats"><thead><tr><th>family</th><th>tasks</th><th>attempts</th><th>done</th>'
        "<th>failed</th><th>median run</th><th>max run</th><th>median queue wait</th><th>max queue wait</th>"
        f"<th>failures by reason</th></tr></thead><tbody>{body}</tbody></table>"
    )


def _failures_html(details: list[dict[str, Any]]) -> str:
    esc = html.escape
    if not details:
        return "<p>No attempt failed.</p>"
    parts = []
    for d in details[:MAX_FAILURES]:
        job = f"job {d['job_id']}" if d["job_id"] else "never got a job id"
        words = "the scheduler said" if d["reason"] == "submit_error" else "exception"
        parts.append(
            f'<section class="failure" data-task="{esc(d["task_id"])}" data-attempt="{d["attempt"]}">'
            f"<h3>{esc(d['task_id'])} attempt {d['attempt']} — {esc(d['reason'] or d['state'])}"
            f"{', exit code ' + esc(str(d['exit_code'])) if d['exit_code'] is not None else ''}"
            f" ({esc(d['scheduler'])}, {esc(job)})</h3>"
            + (f'<div>{words}:</div><pre class="exception">{esc(d["exception"])}</pre>' if d["exception"] else "")
            + f"<div>log: <code>{esc(d['log'])}</code></div>"
            + (f'<pre class="tail">{esc(d["tail"])}</pre>' if d["tail"] else "")
            + "</section>"
        )
    if len(details) > MAX_FAILURES:
        parts.append(
            f"<p>… and {len(details) - MAX_FAILURES} more failed attempts: <code>containerbatch status</code></p>"
        )
    return "".join(parts)


def render_html(record: dict[str, Any], rows: list[Any], now: float | None = None) -> str:
    """The report page of run ``record`` with attempts ``rows`` (AttemptRow), as one string."""
    now = time.time() if now is None else now
    attempts = [row_json(r, now) for r in rows]
    data = {"run": record, "generated": now, "colors": COLORS, "attempts": attempts}
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[attempt["state"]] = counts.get(attempt["state"], 0) + 1
    legend = "".join(
        f'<span><i style="background:{color}"></i>{html.escape(state)}</span>'
        for state, color in COLORS.items()
        if state in counts or state in ("done", "failed")
    )
    esc = html.escape
    table_rows = "".join(
        f"<tr><td>{esc(a['task_id'])}</td><td class=num>{a['attempt']}</td><td>{esc(a['scheduler'])}</td>"
        f"<td>{esc(a['job_id'] or '')}</td><td>{esc(a['state'])}</td><td>{esc(a['reason'] or '')}</td>"
        f"<td>{esc(a['image'] or '')}</td><td>{esc(fmt_time(a['submitted']))}</td>"
        f"<td>{esc(fmt_time(a['started']))}</td><td>{esc(fmt_time(a['ended']))}</td></tr>"
        for a in attempts
    )
    summary = ", ".join(f"{esc(state)} {count}" for state, count in sorted(counts.items()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>containerbatch run {esc(record["run_id"])}</title>
<style>{_CSS}</style></head>
<body>
<h1>containerbatch run {esc(record["run_id"])}</h1>
<div class="meta">started {esc(fmt_time(record.get("started")))}{
        ", ended " + esc(fmt_time(record["ended"])) if record.get("ended") else ", not ended"
    } on {esc(str(record.get("host") or "?"))} —
{len(attempts)} attempt(s): {summary or "none"} — report made {esc(fmt_time(now))}</div>
<div class="legend">{legend}
<span style="color:#777">(pale: waiting in the queue; dashed: start time not recorded)</span></div>
<div id="timelines"><noscript>The timeline needs JavaScript; the table below has the same data.</noscript></div>
<h2>per task family</h2>
{_stats_html(family_stats(rows))}
<h2>failed attempts</h2>
<div id="failures">{_failures_html(failure_details(rows))}</div>
<h2>attempts</h2>
<table><thead><tr><th>task id</th><th>attempt</th><th>scheduler</th><th>job id</th><th>state</th><th>reason</th>
<th>image</th><th>submitted</th><th>started</th><th>ended</th></tr></thead><tbody>{table_rows}</tbody></table>
<script type="application/json" id="cb-data">{_script_json(data)}</script>
<script>{_JS}</script>
</body></html>
"""


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        run: str = typer.Argument(None, help="Run id or a unique prefix of it (default: the newest run)."),
        output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML file to write."),
        as_json: bool = typer.Option(False, "--json", help="Print where the report went, as JSON."),
        state_dir: str = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
    ) -> None:
        """Write a self-contained HTML timeline of every attempt of a run, per scheduler.

        Exit code 0 when written and no task failed, 1 when written and some task failed, 2 on a usage error.
        """
        journal = open_journal(state_dir)
        try:
            record = pick_run(journal, run)
            rows = journal.attempts(record["run_id"])
        finally:
            journal.close()
        output.write_text(render_html(record, rows), encoding="utf-8")
        if as_json:
            print_json({"run_id": record["run_id"], "path": str(output.resolve()), "attempts": len(rows)})
        else:
            out.print(f"wrote {output} ({len(rows)} attempts of run {record['run_id']})", highlight=False)
        code = exit_code_for(rows)
        raise typer.Exit(code if code else EXIT_OK)
