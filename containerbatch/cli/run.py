"""``containerbatch run`` and ``containerbatch show``."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from typing import Any

import typer

from containerbatch import jobscript, settings
from containerbatch.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, build_task, err, out
from containerbatch.spec import SCRATCH

TASK_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _apply_overrides(image: str | None, runtime: str | None, batch_system: str | None) -> None:
    """Command-line choices apply to tasks that do not name their own (below task attributes)."""
    if image:
        settings.set_setting("image", image)
    if runtime:
        settings.set_setting("runtime", runtime)
    if batch_system:
        settings.set_setting("batch_system", batch_system)


def run_summary(run_ctx: Any, ok: bool) -> dict[str, Any]:
    """What ran where, for scripts: the last attempt of every task this run handled."""
    tasks = []
    for proc in {id(p): p for p in run_ctx.processes.values()}.values():
        spec = proc.spec
        tasks.append(
            {
                "task_id": spec.task_id,
                "attempt": spec.attempt,
                "outcome": proc.outcome,
                "reasons": [f.reason.value for f in proc.failures],
                "batch_system": spec.batch_system,
                "job_id": proc.job_id,
                "runtime": spec.runtime,
                "image": spec.image,
                "job_dir": spec.job_dir,
            }
        )
    return {"run_id": run_ctx.run_id, "ok": ok, "tasks": sorted(tasks, key=lambda t: t["task_id"])}


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
    ) -> None:
        """Run TASK (with its --parameters) and everything it needs."""
        from containerbatch.cli.display import ProgressDisplay
        from containerbatch.run import Run
        from containerbatch.worker import process

        _apply_overrides(image, runtime, batch_system)
        task = build_task(workflow, list(ctx.args))
        run_ctx = Run()
        try:
            if progress and not as_json:
                with ProgressDisplay(run_ctx, console=out):
                    ok = process([task], workers=workers, run=run_ctx)
            else:
                ok = process([task], workers=workers, run=run_ctx)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
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
