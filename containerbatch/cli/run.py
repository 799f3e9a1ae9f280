"""``containerbatch run`` and ``containerbatch show``."""

from __future__ import annotations

import shlex

import typer

from containerbatch import settings
from containerbatch.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, build_task, err, out
from containerbatch.errors import ConfigError

TASK_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _apply_overrides(image: str | None, runtime: str | None, batch_system: str | None) -> None:
    """Command-line choices apply to tasks that do not name their own (below task attributes)."""
    if image:
        settings.set_setting("image", image)
    if runtime:
        settings.set_setting("runtime", runtime)
    if batch_system:
        settings.set_setting("batch_system", batch_system)


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
    ) -> None:
        """Run TASK (with its --parameters) and everything it needs."""
        from containerbatch.cli.display import ProgressDisplay
        from containerbatch.worker import Run, process

        _apply_overrides(image, runtime, batch_system)
        task = build_task(workflow, list(ctx.args))
        run_ctx = Run()
        try:
            if progress:
                with ProgressDisplay(run_ctx, console=out):
                    ok = process([task], workers=workers, run=run_ctx)
            else:
                ok = process([task], workers=workers, run=run_ctx)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)

    @app.command(context_settings=TASK_ARGS)
    def show(
        ctx: typer.Context,
        workflow: str = typer.Argument(..., help="The workflow file."),
        image: str = typer.Option(None, "--image"),
        runtime: str = typer.Option(None, "--runtime"),
        batch_system: str = typer.Option(None, "--batch-system"),
        attempt: int = typer.Option(1, "--attempt", min=1),
    ) -> None:
        """Print the exact job script, submit command and container command, without running anything."""
        from containerbatch.worker import Run

        _apply_overrides(image, runtime, batch_system)
        task = build_task(workflow, list(ctx.args))
        run = Run()
        try:
            spec = run.spec_for(task, attempt=attempt, with_bundle=False)
            bundle_mode = spec.settings["bundle"]
            if (
                bundle_mode != "never"
                and spec.runtime != "host"
                and not (bundle_mode == "auto" and spec.settings["image_has_luigi"])
            ):
                from dataclasses import replace
                from pathlib import Path

                from containerbatch.bundle import bundle_key

                spec = replace(spec, bundle_dir=str(Path(spec.state_dir) / "bundle" / bundle_key()))
            script, command, submit_file = run.render(spec)
            scheduler = run.scheduler(dict(spec.settings))
            submit_argv = scheduler.submit_argv(spec)
        except ConfigError:
            raise
        finally:
            run.poller.stop()
        out.rule(f"{spec.task_id}: {spec.batch_system} / {spec.runtime} / {spec.image}")
        out.print(f"# job directory: {spec.job_dir}", markup=False, highlight=False)
        out.print("# submit command:", markup=False, highlight=False)
        out.print(shlex.join(submit_argv), markup=False, highlight=False, soft_wrap=True)
        if submit_file is not None:
            out.print(f"# submit file ({scheduler.submit_file_name}):", markup=False, highlight=False)
            out.print(submit_file, markup=False, highlight=False, soft_wrap=True)
        out.print(f"# job script ({spec.script_path}):", markup=False, highlight=False)
        out.print(script, markup=False, highlight=False, soft_wrap=True)
        out.print("# container command:", markup=False, highlight=False)
        out.print(shlex.join(command), markup=False, highlight=False, soft_wrap=True)
        err.print("[dim]nothing was submitted[/]")
