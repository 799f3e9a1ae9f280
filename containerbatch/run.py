"""A run: what every job of one ``process()`` call shares.

Settings, the scheduler and runtime plugins, the one poller, the journals,
the runner bundle; preflight (every task checked before anything is
submitted), reconciling the journal with jobs that ended while no submitter
watched, and cancelling everything at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import luigi
from luigi.task import flatten

from containerbatch import jobfiles, jobscript, plugins
from containerbatch.errors import ConfigError, ContainerBatchError, SchedulerError
from containerbatch.jobfiles import ENV_FILE
from containerbatch.journal import Journal
from containerbatch.poller import Poller
from containerbatch.resubmit import Failure
from containerbatch.runtimes.base import Runtime, outside_binds
from containerbatch.schedulers.base import Scheduler
from containerbatch.settings import SettingsResolver
from containerbatch.spec import JobSpec, build_spec
from containerbatch.states import ACTIVE_STATES, AttemptState, Reason

log = logging.getLogger(__name__)


@dataclass(eq=False)
class AttemptRecord:
    """The run's plain record of one task's attempt in flight (the worker keeps it current; when the task is
    resubmitted the same record moves on to the next attempt).  Cancel, the live display and ``run --json``
    read only this, never the worker's process object."""

    spec: JobSpec
    scheduler: Scheduler
    journal: Journal
    job_id: str | None = None
    #: the outcome went to luigi (``outcome``: DONE, FAILED or PENDING; ``explanation``: what was said)
    reported: bool = False
    outcome: str | None = None
    explanation: str = ""
    cancelled: bool = False
    failures: list[Failure] = field(default_factory=list)
    submitted_at: float | None = None
    #: when the job itself ended (its result, else its marker)
    ended_at: float | None = None
    #: failed, the next attempt goes out at this time
    resubmit_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.spec.task_id}#{self.spec.attempt}"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Run:
    """Everything a run shares: settings, plugins, poller, journal, bundle."""

    def __init__(self, resolver: SettingsResolver | None = None, run_id: str | None = None) -> None:
        self.resolver = resolver or SettingsResolver()
        self.run_id = run_id or new_run_id()
        self.poller = Poller()
        self._schedulers: dict[tuple[str, str], Scheduler] = {}
        self._runtimes: dict[str, Runtime] = {}
        self._journals: dict[str, Journal] = {}
        self._bundles: dict[str, str] = {}
        self._checked_images: set[tuple[str, str | None]] = set()
        self._lock = threading.RLock()
        self.processes: dict[str, AttemptRecord] = {}  # the record of every attempt, by key
        self.planned: list[JobSpec] = []  # tasks that will run, from preflight (for progress displays)
        self.processes_configured = False  # poller set from the settings of the first job
        self.cancelled_total = 0
        #: per scheduler (id): until when (monotonic) not to ask it why a job ended, after it failed to answer
        self.why_silent_until: dict[int, float] = {}
        #: written into every task.json; the runner applies it before importing the workflow
        self.node_context: dict[str, Any] = {"argv": list(sys.argv)}
        self.dynamic_rounds: dict[str, tuple[int, int]] = {}  # task id -> (rounds, rounds with deps complete here)
        self._warned_outside: set[str] = set()
        #: (journal, batch system) → submission key → job ids found under it: asked once per run (worker._adopt)
        self.found_jobs: dict[tuple[str, str], dict[str, list[str]] | None] = {}
        from containerbatch.batching import Batcher

        self.batcher = Batcher(self)  # arrays, tasks_per_job, submit_rate, canary

    # -- plugins -------------------------------------------------------------
    def scheduler(self, values: dict[str, Any]) -> Scheduler:
        name = values["batch_system"]
        key = (
            name,
            json.dumps(
                {k: v for k, v in values.items() if k.startswith(name) or k == "command_timeout"},
                sort_keys=True,
                default=str,
            ),
        )
        with self._lock:
            if key not in self._schedulers:
                self._schedulers[key] = plugins.schedulers.get(name)(values)
            return self._schedulers[key]

    def runtime(self, name: str, values: dict[str, Any]) -> Runtime:
        """The runtime ``name`` with the settings of ``values`` (one per distinct set: a task's own
        docker_binary, apptainer_binary… are its own)."""
        key = json.dumps([name, {k: v for k, v in values.items() if _runtime_setting(k)}], sort_keys=True, default=str)
        with self._lock:
            if key not in self._runtimes:
                self._runtimes[key] = plugins.runtimes.get(name)(values)
            return self._runtimes[key]

    def journal(self, state_dir: str) -> Journal:
        with self._lock:
            if state_dir not in self._journals:
                journal = self._journals[state_dir] = Journal(Path(state_dir) / "journal.sqlite")
                journal.start_run(self.run_id, sys.argv, os.getpid(), socket.gethostname())
            return self._journals[state_dir]

    def bundle(self, values: dict[str, Any], runtime: str, state_dir: str) -> str | None:
        from containerbatch.bundle import ensure_bundle, wanted

        if not wanted(values["bundle"], runtime, values["image_has_luigi"]):
            return None
        with self._lock:
            if state_dir not in self._bundles:
                self._bundles[state_dir] = ensure_bundle(state_dir)
            return self._bundles[state_dir]

    # -- specs ---------------------------------------------------------------
    def spec_for(self, task: luigi.Task, attempt: int = 1, with_bundle: bool = True) -> JobSpec:
        values = self.resolver.values(task)
        spec = build_spec(task, values, self.run_id, attempt)
        if with_bundle:
            bundle = self.bundle(values, spec.runtime, spec.state_dir)
            if bundle:
                from dataclasses import replace

                spec = replace(spec, bundle_dir=bundle)
        return spec

    def render(
        self, spec: JobSpec, before_finish: Sequence[str] = (), stage_out_from: str | None = None
    ) -> tuple[str, list[str], str | None]:
        """(job script, container argv, submit file) for ``spec``; ``before_finish``, ``stage_out_from``: see
        jobscript.render."""
        scheduler = self.scheduler(dict(spec.settings))
        if scheduler.runs_container(spec):
            # the batch system starts the container (HTCondor container universe,
            # +SingularityImage): job.sh runs the runner inside it as it is
            runtime: Runtime = _InsideContainer(dict(spec.settings))
        else:
            runtime = self.runtime(spec.runtime, dict(spec.settings))
        command = runtime.command(spec)
        script = jobscript.render(
            spec,
            command,
            directives=scheduler.directives(spec),
            stop_command=runtime.stop_command(spec),
            exports=runtime.exports(spec),
            epilogue=runtime.epilogue(spec),
            env_file=os.path.join(spec.node_path(spec.job_dir), ENV_FILE),
            before_finish=before_finish,
            inside_image=scheduler.runs_container(spec),
            stage_out_from=stage_out_from,
        )
        return script, command, scheduler.submit_file(spec)

    def private_files(self, spec: JobSpec) -> dict[str, str]:
        """The files of ``spec``'s job folder that only the user may read (0600): the environment job.sh
        sources, and what the runtime reads (Docker's --env-file)."""
        scheduler = self.scheduler(dict(spec.settings))
        runtime: Runtime
        if scheduler.runs_container(spec):
            runtime = _InsideContainer(dict(spec.settings))
        else:
            runtime = self.runtime(spec.runtime, dict(spec.settings))
        files = dict(runtime.private_files(spec))
        exports = runtime.exports(spec)
        if exports:
            files[ENV_FILE] = jobscript.render_env(exports)
        return files

    def preflight(self, tasks: Iterable[luigi.Task]) -> list[JobSpec]:
        """Validate settings, images and schedulers of every task that will run; raise ConfigError."""
        specs = []
        for task in walk(tasks):
            if _is_external(task):
                continue
            spec = self.spec_for(task, with_bundle=False)  # settings and resources are valid
            try:
                outputs = jobfiles.output_paths(task)
                self.reconcile(spec, outputs)
            except ContainerBatchError:
                raise
            except Exception as exc:  # noqa: BLE001 - the workflow's own code: output() raised
                raise ConfigError(
                    f"{type(exc).__name__} in output() of {task.task_id}: {exc}; fix the workflow "
                    "(nothing was submitted)",
                    task=task.task_id,
                ) from exc
            try:
                complete = task.complete()
            except Exception as exc:  # noqa: BLE001 - luigi reports the task as failed, cleanly; nothing submitted
                log.error("%s: complete() raised %s: %s", spec.task_id, type(exc).__name__, exc)
                continue
            if complete:
                continue
            self._warn_outside_binds(task, spec)
            scheduler = self.scheduler(dict(spec.settings))
            ok, detail = scheduler.available()
            if not ok:
                raise ConfigError(
                    f"batch system {spec.batch_system!r} cannot be used here: {detail}",
                    setting="batch_system",
                    task=spec.task_id,
                )
            scheduler.check(spec)
            runtime = self.runtime(spec.runtime, dict(spec.settings))
            if scheduler.runs_container(spec):
                continue  # the engine is the batch system's business, on its nodes
            if (spec.runtime, spec.image) not in self._checked_images:
                ok, detail = runtime.available()
                if not ok:
                    raise ConfigError(
                        f"runtime {spec.runtime!r} is not usable: {detail}", setting="runtime", task=spec.task_id
                    )
                runtime.preflight(spec)
                runtime.prepare_image(spec)  # e.g. a remote image converted once into image_cache
                self._checked_images.add((spec.runtime, spec.image))
            specs.append(spec)
        self.planned = specs
        return specs

    def _warn_outside_binds(self, task: luigi.Task, spec: JobSpec) -> None:
        """Outputs a container cannot bring back: LocalTarget paths outside every folder bound into it."""
        try:
            paths = jobfiles.output_paths(task)
        except Exception:
            return
        outside = [p for p in outside_binds(spec, paths) if p not in self._warned_outside]
        if outside:
            self._warned_outside.update(outside)
            log.warning(
                "%s writes %s, outside the folders bound into its container (%s): the file would stay in the "
                "container and the task fail with outputs_missing. Write under %s, or add the folder to binds.",
                spec.task_id,
                ", ".join(outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else ""),
                spec.runtime,
                spec.working_dir,
            )

    def reconcile(self, spec: JobSpec, outputs: Iterable[str] = ()) -> None:
        """Record in the journal how jobs of an earlier submitter ended while nobody watched.

        Only the job's own files are read (result.json through the validating reader, the marker); a job
        still running is left for JobProcess to re-attach.
        """
        state_db = Path(spec.state_dir) / "journal.sqlite"
        if not state_db.exists():
            return
        journal = self.journal(spec.state_dir)
        row = journal.latest(spec.task_id)
        if row is None or row.state not in ACTIVE_STATES or not os.path.lexists(row.marker_path):
            return
        from dataclasses import replace

        attempt_spec = replace(spec, job_dir=row.job_dir, attempt=row.attempt)
        if spec.staged and not os.path.lexists(attempt_spec.result_path):
            from containerbatch.staging import unpack_outputs

            unpack_outputs(attempt_spec, outputs=outputs)
        reason = None
        try:
            result = jobfiles.read_result(attempt_spec.result_path, task_id=spec.task_id, attempt=row.attempt)
        except jobfiles.BadResult as exc:
            log.error("%s: the result of attempt %d is refused: %s", spec.task_id, row.attempt, exc)
            result, reason = None, Reason.BAD_RESULT.value
        try:
            code: int | None = int((jobfiles.read_small(row.marker_path, 64) or "").strip())
        except ValueError:
            code = None
        if code is not None and not -1 <= code <= 65535:
            code = None
        status = result.status if result is not None else ""
        state = {"success": AttemptState.DONE, "new_deps": AttemptState.NEW_DEPS}.get(status, AttemptState.FAILED)
        journal.update(
            spec.task_id,
            row.attempt,
            state=state.value,
            reason=reason,
            exit_code=code,
            started=result.started if result is not None else None,
            ended=(result.finished if result is not None else None) or time.time(),
        )
        log.info("%s: attempt %d ended while no submitter watched (%s)", spec.task_id, row.attempt, state.value)

    # -- cancel ----------------------------------------------------------------
    def cancel_all(self) -> int:
        """Cancel every job of this run that has not ended; one call per scheduler."""
        self.batcher.cancel()  # tasks still waiting for their submission, a canary in flight
        by_scheduler: dict[int, tuple[Scheduler, list[AttemptRecord]]] = {}
        for proc in {id(p): p for p in list(self.processes.values())}.values():
            if proc.job_id and not proc.reported and not proc.cancelled:
                tracked = self.poller.get(proc.key)
                if tracked is not None and tracked.finished:
                    continue
                by_scheduler.setdefault(id(proc.scheduler), (proc.scheduler, []))[1].append(proc)
        count = 0
        for scheduler, procs in by_scheduler.values():
            ids = list(dict.fromkeys(p.job_id for p in procs if p.job_id))  # a job may run several tasks
            try:
                scheduler.kill(ids)
            except SchedulerError as exc:
                log.error("could not cancel %s jobs %s: %s", scheduler.name, ids, exc)
                continue
            for proc in procs:
                proc.cancelled = True
                proc.journal.update(
                    proc.spec.task_id, proc.spec.attempt, state="cancelled", reason="cancelled", ended=time.time()
                )
            count += len(ids)
        self.cancelled_total += count
        return count

    def close(self) -> None:
        self.poller.stop()
        for journal in self._journals.values():
            journal.end_run(self.run_id)
            journal.close()


class _InsideContainer(Runtime):
    """The command for a job that the batch system already runs inside its container."""

    name = "inside"

    def command(self, spec: JobSpec) -> list[str]:
        return spec.runner_argv()

    def exports(self, spec: JobSpec) -> dict[str, str]:
        return self.container_env(spec)


def _runtime_setting(name: str) -> bool:
    """Settings a runtime object may read when it is made (the rest are read per spec)."""
    engines = ("docker", "podman", "apptainer", "singularity")
    return name.endswith(("_binary", "_extra_args")) or name.startswith(engines)


def _is_external(task: luigi.Task) -> bool:
    return task.run is None or task.run == NotImplemented


def walk(tasks: Iterable[luigi.Task]) -> Iterator[luigi.Task]:
    """Every task reachable through static requirements, each once."""
    seen: set[str] = set()
    todo = list(tasks)
    while todo:
        task = todo.pop()
        if task.task_id in seen:
            continue
        seen.add(task.task_id)
        yield task
        todo.extend(flatten(task.requires()))
