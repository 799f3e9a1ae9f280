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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi
from luigi.task import flatten

from containerbatch import jobscript, plugins
from containerbatch.errors import ConfigError, SchedulerError
from containerbatch.journal import Journal
from containerbatch.poller import Poller
from containerbatch.runtimes.base import Runtime
from containerbatch.schedulers.base import Scheduler
from containerbatch.settings import SettingsResolver
from containerbatch.spec import JobSpec, build_spec

if TYPE_CHECKING:
    from containerbatch.worker import JobProcess

log = logging.getLogger(__name__)


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
        self.processes: dict[str, JobProcess] = {}
        self.planned: list[JobSpec] = []  # tasks that will run, from preflight (for progress displays)
        self.processes_configured = False  # poller set from the settings of the first job
        self.cancelled_total = 0
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
        with self._lock:
            if name not in self._runtimes:
                self._runtimes[name] = plugins.runtimes.get(name)(values)
            return self._runtimes[name]

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

    def render(self, spec: JobSpec) -> tuple[str, list[str], str | None]:
        """(job script, container argv, submit file) for ``spec``."""
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
        )
        return script, command, scheduler.submit_file(spec)

    def preflight(self, tasks: Iterable[luigi.Task]) -> list[JobSpec]:
        """Validate settings, images and schedulers of every task that will run; raise ConfigError."""
        specs = []
        for task in walk(tasks):
            if _is_external(task):
                continue
            spec = self.spec_for(task, with_bundle=False)  # settings and resources are valid
            self.reconcile(spec)
            if task.complete():
                continue
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
                prepare = getattr(runtime, "prepare_image", None)
                if prepare is not None:
                    prepare(spec)  # e.g. a remote image converted once into image_cache
                self._checked_images.add((spec.runtime, spec.image))
            specs.append(spec)
        self.planned = specs
        return specs

    def reconcile(self, spec: JobSpec) -> None:
        """Record in the journal how jobs of an earlier submitter ended while nobody watched.

        Only the job's own files are read (result.json, exit_code); a job still
        running is left for JobProcess to re-attach.
        """
        state_db = Path(spec.state_dir) / "journal.sqlite"
        if not state_db.exists():
            return
        journal = self.journal(spec.state_dir)
        row = journal.latest(spec.task_id)
        if row is None or row.state not in ACTIVE_STATES or not os.path.exists(row.marker_path):
            return
        if spec.staged and not (Path(row.job_dir) / "result.json").exists():
            from dataclasses import replace

            from containerbatch.staging import unpack_outputs

            unpack_outputs(replace(spec, job_dir=row.job_dir))
        try:
            result = json.loads((Path(row.job_dir) / "result.json").read_text())
        except (OSError, ValueError):
            result = {}
        try:
            code: int | None = int(Path(row.marker_path).read_text().strip())
        except (OSError, ValueError):
            code = None
        state = {"success": "done", "new_deps": "new_deps"}.get(result.get("status", ""), "failed")
        journal.update(
            spec.task_id,
            row.attempt,
            state=state,
            exit_code=code,
            started=result.get("started"),
            ended=result.get("finished") or time.time(),
        )
        log.info("%s: attempt %d ended while no submitter watched (%s)", spec.task_id, row.attempt, state)

    # -- cancel ----------------------------------------------------------------
    def cancel_all(self) -> int:
        """Cancel every job of this run that has not ended; one call per scheduler."""
        by_scheduler: dict[int, tuple[Scheduler, list[JobProcess]]] = {}
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


ACTIVE_STATES = ("submitted", "queued", "running", "held", "unknown")
