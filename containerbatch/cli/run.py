"""``containerbatch run`` and ``containerbatch show``."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import replace
from typing import Any

import typer
from luigi.cmdline_parser import CmdlineParser

from containerbatch import jobscript, settings
from containerbatch.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    build_task,
    err,
    log_level,
    out,
    setup_console_logging,
    summarised,
)
from containerbatch.runlog import log_path_of
from containerbatch.spec import SCRATCH

TASK_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
#: luigi options that name a central scheduler (luigid) instead of the local one
CENTRAL_SCHEDULER = ("--scheduler-host", "--scheduler-port", "--scheduler-url")


def luigi_options(task_args: list[str]) -> dict[str, Any]:
    """What process() must know of luigi's options: a central scheduler named on the command line means no
    local scheduler (luigi reads the address itself)."""
    named = {arg.split("=", 1)[0] for arg in task_args}
    if named & set(CENTRAL_SCHEDULER) and "--local-scheduler" not in named:
        return {"local_scheduler": False}
    return {}


def _apply_overrides(image: str | None, runtime: str | None, batch_system: str | None) -> None:
    """Command-line choices apply to tasks that do not name their own (below task attributes)."""
    if image:
        settings.set_setting("image", image)
    if runtime:
        settings.set_setting("runtime", runtime)
    if batch_system:
        settings.set_setting("batch_system", batch_system)


def run_summary(run_ctx: Any, ok: bool) -> dict[str, Any]:
    """What ran where, for scripts: the last attempt of every task this run handled.

    A task that never ran (a requirement failed) is listed with outcome ``NOT_RUN``; nothing ends "waiting".
    """
    tasks = []
    for proc in {id(p): p for p in run_ctx.processes.values()}.values():
        spec = proc.spec
        last = proc.failures[-1] if proc.failures and proc.outcome != "DONE" else None
        tasks.append(
            {
                "task_id": spec.task_id,
                "attempt": spec.attempt,
                "outcome": proc.outcome or "UNFINISHED",
                "reasons": [f.reason.value for f in proc.failures],
                "reason": last.reason.value if last else None,
                "exit_code": last.exit_code if last else None,
                "message": getattr(proc, "explanation", "") or None,
                "batch_system": spec.batch_system,
                "job_id": proc.job_id,
                "runtime": spec.runtime,
                "image": spec.image,
                "job_dir": spec.job_dir,
            }
        )
    handled = {t["task_id"] for t in tasks}
    for spec in getattr(run_ctx, "planned", []) or []:
        if spec.task_id not in handled:
            handled.add(spec.task_id)
            tasks.append(
                {
                    "task_id": spec.task_id,
                    "attempt": None,
                    "outcome": "NOT_RUN",
                    "reasons": [],
                    "reason": None,
                    "exit_code": None,
                    "message": "not run: a task it requires failed",
                    "batch_system": spec.batch_system,
                    "job_id": None,
                    "runtime": spec.runtime,
                    "image": spec.image,
                    "job_dir": None,
                }
            )
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["outcome"]] = counts.get(task["outcome"], 0) + 1
    return {
        "run_id": run_ctx.run_id,
        "ok": ok,
        "counts": counts,
        "log": str(log_path_of(run_ctx)),
        "tasks": sorted(tasks, key=lambda t: t["task_id"]),
    }


def register(app: typer.Typer) -> None:
    @app.command(context_settings=TASK_ARGS)
    def run(
        ctx: typer.Context,
        workflow: str = typer.Argument(..., help="The workflow file (Python, defines luigi tasks)."),
        image: str = typer.Option(None, "--image", help="Image for every task that names none."),
        runtime: str = typer.Option(None, "--runtime", help="docker, podman, apptainer, singularity or host."),
        batch_system: str = typer.Option(None, "--batch-system", help="local, slurm, lsf or htcondor."),
        workers: int = typer.Option(1, "--workers", min=1, help="Jobs in flight at once."),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Live display of the jobs (a line per change when not a terminal)."
        ),
        as_json: bool = typer.Option(False, "--json", help="At the end, one JSON document of the run on stdout."),
        verbose: bool = typer.Option(
            False, "--verbose", "-v", help="Also show containerbatch's and luigi's INFO log on the console."
        ),
        log_level_name: str = typer.Option(
            None,
            "--log-level",
            help="Console log level (DEBUG, INFO, WARNING, ERROR); DEBUG also writes luigi's DEBUG lines to the "
            "run's log file.",
        ),
    ) -> None:
        """Run TASK (with its --parameters) and everything it needs.

        The console shows progress and, at the end, every failure explained; the full log of luigi and
        containerbatch is in <state_dir>/runs/<run id>/run.log.
        """
        from containerbatch.cli.display import ProgressDisplay, final_summary
        from containerbatch.run import Run
        from containerbatch.worker import process

        setup_console_logging(log_level(verbose, log_level_name))
        _apply_overrides(image, runtime, batch_system)
        task = build_task(workflow, list(ctx.args))
        run_ctx = Run()
        log_file = str(log_path_of(run_ctx))
        summarised.active = True  # failures are explained once, in the end summary
        started = time.time()
        kwargs = luigi_options(list(ctx.args))
        try:
            # luigi's own options after the task (--worker-keep-alive, --scheduler-host ...) stay in force
            # while luigi builds: its config classes read them from the active command-line parser
            with CmdlineParser.global_instance(list(ctx.args)):
                if progress and not as_json:
                    with ProgressDisplay(run_ctx, console=out, log_path=log_file):
                        ok = process([task], workers=workers, run=run_ctx, **kwargs)
                else:
                    ok = process([task], workers=workers, run=run_ctx, **kwargs)
                    # --json: stdout is the document; the summary goes to stderr
                    display = ProgressDisplay(run_ctx, console=err if as_json else out, live=False)
                    display.started = started
                    final_summary(run_ctx, display.console, display=display, log_path=log_file)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            summarised.active = False
        if as_json:
            out.print_json(json.dumps(run_summary(run_ctx, ok)))
        raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)

    @app.command(context_settings=TASK_ARGS)
    def show(
        ctx: typer.Context,
        workflow: str = typer.Argument(..., help="The workflow file."),
        image: str = typer.Option(None, "--image"),
        runtime: str = typer.Option(None, "--runtime"),
        batch_system: str = typer.Option(None, "--batch-system"),
        attempt: int = typer.Option(1, "--attempt", min=1),
        as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    ) -> None:
        """Print the exact job script, submit command and container command, without running anything."""
        from containerbatch.bundle import bundle_dir, wanted
        from containerbatch.run import Run

        _apply_overrides(image, runtime, batch_system)
        task = build_task(workflow, list(ctx.args))
        run = Run()
        try:
            spec = run.spec_for(task, attempt=attempt, with_bundle=False)
            values = spec.settings
            if wanted(values["bundle"], spec.runtime, values["image_has_luigi"]):
                spec = replace(spec, bundle_dir=bundle_dir(spec.state_dir))  # the path it will have; nothing built
            script, command, submit_file = run.render(spec)
            shown_command = jobscript.join(command)  # a staged job's scratch folder as "$cb_scratch"
            # JSON: the placeholder for the node's scratch folder as the variable HTCondor sets
            command = [arg.replace(SCRATCH, "$_CONDOR_SCRATCH_DIR") for arg in command]
            scheduler = run.scheduler(dict(spec.settings))
            submit_argv = scheduler.submit_argv(spec)
            from containerbatch.batching import show_blocks

            batch_blocks = show_blocks(run, spec)  # arrays, tasks_per_job
        finally:
            run.poller.stop()
        if as_json:
            doc = {
                "task_id": spec.task_id,
                "batch_system": spec.batch_system,
                "runtime": spec.runtime,
                "image": spec.image,
                "job_dir": spec.job_dir,
                "submit_command": submit_argv,
                "submit_file": submit_file,
                "job_script": script,
                "container_command": command,
                "batch_scripts": [{"title": title, "text": body} for title, body in batch_blocks],
            }
            out.print_json(json.dumps(doc))
            return
        text = [
            f"# job directory: {spec.job_dir}",
            "# submit command:",
            shlex.join(submit_argv),
        ]
        if submit_file is not None:
            text += [f"# submit file ({scheduler.submit_file_name}):", submit_file]
        text += [f"# job script ({spec.script_path}):", script, "# container command:"]
        if spec.staged:
            text.append("# (no shared filesystem: $cb_scratch is the job's scratch folder, $_CONDOR_SCRATCH_DIR)")
        text.append(shown_command)
        for title, body in batch_blocks:
            text += [f"# {title}:", body] if body else [f"# {title}"]
        out.rule(f"{spec.task_id}: {spec.batch_system} / {spec.runtime} / {spec.image}")
        for block in text:
            out.print(block, markup=False, highlight=False, soft_wrap=True)
        err.print("[dim]nothing was submitted[/]")
