"""Many tasks per submission: job arrays, tasks per job, the submission rate, the canary.

:class:`Batcher` (one per run) sits between a task's prepared job folder and
the scheduler's submit call.  ``JobProcess.submit`` writes task.json and
job.sh as always and then offers itself to :meth:`Batcher.defer`; when no
setting asks for batching, the answer is "submit it yourself" and nothing
changes.  Otherwise the task waits in a group of tasks that share everything
but their parameters (scheduler and its options, runtime, image, resources,
family) for at most ``batch_window`` seconds, and the group goes out as

* jobs of up to ``tasks_per_job`` tasks: one job script, one container start,
  one interpreter (the runner forks a child per task, each with its own
  result.json, exit_code, logs; the job script then writes each task's
  done-marker), and
* when there is more than one job and ``max_array_size`` allows, one array
  submission per ``max_array_size`` jobs, whose elements pick their job
  script by index.

The luigi worker drives it: every ``is_alive`` of a waiting task calls
:meth:`Batcher.waiting`, which submits what is due.  Failures and
resubmissions stay per task: a task that failed once is resubmitted alone.
``submit_rate`` (submissions per minute) holds back every submission, batched
or not.  Before the first fan-out above ``canary_threshold`` tasks in an image
on a scheduler, one job of no task starts that image's Python with the runner
(importing luigi); only when it succeeds does the rest go out.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from containerbatch.errors import ContainerBatchError, SubmitError
from containerbatch.jobfiles import output_paths
from containerbatch.jobscript import q
from containerbatch.runner import GROUP
from containerbatch.schedulers.base import new_submit_key
from containerbatch.spec import JobSpec

if TYPE_CHECKING:
    from containerbatch.run import Run
    from containerbatch.schedulers.base import Scheduler
    from containerbatch.worker import JobProcess

log = logging.getLogger(__name__)

#: folder under log_dir for job scripts of several tasks and for array scripts
JOBS_FOLDER = "_cb_jobs"
#: seconds between looks at what is due (waiting tasks call in far more often)
TICK = 0.1
#: settings that may differ between tasks of one submission
_PER_TASK = frozenset({"job_name"})


def settings_key(spec: JobSpec) -> str:
    """What tasks of one submission must share: everything but their parameters."""
    values = {k: v for k, v in spec.settings.items() if k not in _PER_TASK}
    return json.dumps(
        [spec.batch_system, spec.runtime, spec.image, spec.task_family, spec.state_dir, spec.executable, values],
        sort_keys=True,
        default=str,
    )


@dataclass
class _Group:
    procs: list[JobProcess] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)  # 0: due now
    last: float = field(default_factory=time.monotonic)  # when the last task joined

    def due(self, now: float, window: float) -> bool:
        """Full, or no task joined for ``window`` seconds, or the first has waited ten windows."""
        return not self.since or now - self.last >= window or now - self.since >= 10 * window


@dataclass
class _Canary:
    spec: JobSpec
    scheduler: Scheduler
    job_id: str | None = None
    state: str = "new"  # new, running, passed, failed
    message: str = ""


class Batcher:
    """Collects tasks ready to submit and sends them out together (see the module docstring)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._last_tick = 0.0
        self._next_submit: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._canaries: dict[tuple[str, str, str | None], _Canary] = {}
        self.submissions = 0  # scheduler submit calls made here (benchmarks, tests)

    # -- settings ------------------------------------------------------------
    @staticmethod
    def _ints(spec: JobSpec) -> tuple[int, int, float, float, int]:
        s = spec.settings
        per_job, array = int(s.get("tasks_per_job") or 1), int(s.get("max_array_size") or 0)
        return (
            per_job,
            array,
            float(s.get("batch_window") or 0.0) if per_job > 1 or array > 1 else 0.0,  # nothing to wait for
            float(s.get("submit_rate") or 0.0),
            int(s.get("canary_threshold") or 0),
        )

    def _canary_key(self, spec: JobSpec) -> tuple[str, str, str | None]:
        return (spec.batch_system, spec.runtime, spec.image)

    def _needs_canary(self, spec: JobSpec) -> bool:
        threshold = self._ints(spec)[4]
        if threshold <= 0:
            return False
        key = self._canary_key(spec)
        canary = self._canaries.get(key)
        if canary is not None:
            return canary.state != "passed"
        planned = sum(1 for s in self.run.planned if self._canary_key(s) == key)
        return planned > threshold

    # -- entry points from JobProcess -----------------------------------------
    def defer(self, proc: JobProcess) -> bool:
        """Take ``proc`` (its job folder written) to submit later; False: the caller submits it now."""
        spec = proc.spec
        per_job, array, window, rate, _ = self._ints(spec)
        if proc.failures:
            if rate <= 0:
                return False
            per_job, array = 1, 0  # alone, but within the rate
        elif per_job <= 1 and array <= 1 and rate <= 0 and not self._needs_canary(spec):
            return False
        with self._lock:
            key = settings_key(spec) + (f"#alone{id(proc)}" if proc.failures else "")
            group = self._groups.setdefault(key, _Group())
            group.procs.append(proc)
            group.last = time.monotonic()
            proc.deferred = True
            if window <= 0 or len(group.procs) >= per_job * max(1, array):
                group.since = 0.0  # full: due now
        self.tick(force=True)
        return True

    def waiting(self, proc: JobProcess) -> bool:
        """Whether ``proc`` still waits for its submission (submitting what is due first)."""
        if not getattr(proc, "deferred", False):
            return False
        self.tick()
        return bool(getattr(proc, "deferred", False))

    def cancel(self) -> None:
        """Ctrl-C: nothing waiting goes out any more (journaled as cancelled); a running canary is cancelled."""
        with self._lock:
            groups, self._groups = list(self._groups.values()), {}
            for group in groups:
                for proc in group.procs:
                    proc.deferred = False
                    proc.cancelled = True
                    proc.journal.update(
                        proc.spec.task_id, proc.spec.attempt, state="cancelled", reason="cancelled", ended=time.time()
                    )
            for canary in self._canaries.values():
                if canary.state == "running" and canary.job_id:
                    try:
                        canary.scheduler.kill([canary.job_id])
                    except ContainerBatchError as exc:
                        log.error("could not cancel the canary job %s: %s", canary.job_id, exc)
                    canary.state, canary.message = "failed", "cancelled"

    # -- submitting ------------------------------------------------------------
    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_tick < TICK:
            return
        self._last_tick = now
        with self._lock:
            for key, group in list(self._groups.items()):
                if not group.procs:
                    self._groups.pop(key, None)
                    continue
                spec = group.procs[0].spec
                per_job, array, window, rate, _ = self._ints(spec)
                if self._needs_canary(spec) and not self._canary_done(spec, group):
                    continue
                if not group.due(now, window):
                    continue
                wait = self._rate_wait(spec, now)
                if wait > 0:
                    continue
                size = per_job * max(1, array)
                batch, group.procs = group.procs[:size], group.procs[size:]
                group.since = now if group.procs else 0.0
                if not group.procs:
                    self._groups.pop(key, None)
                self._submit(batch, per_job, array)

    def _rate_wait(self, spec: JobSpec, now: float) -> float:
        rate = self._ints(spec)[3]
        if rate <= 0:
            return 0.0
        name = spec.batch_system
        next_at = self._next_submit.get(name, 0.0)
        if now < next_at:
            return next_at - now
        self._next_submit[name] = max(next_at, now) + 60.0 / rate
        return 0.0

    def _submit(self, procs: list[JobProcess], per_job: int, array: int) -> None:
        first = procs[0]
        scheduler = first.scheduler
        jobs = [procs[i : i + per_job] for i in range(0, len(procs), per_job)]
        try:
            specs = [self._job_spec(job) for job in jobs]
        except (OSError, ContainerBatchError) as exc:
            self._refused(procs, exc if isinstance(exc, ContainerBatchError) else SubmitError(str(exc)))
            return
        if len(specs) > 1 and array > 1 and getattr(scheduler, "supports_arrays", False):
            try:
                ids = self._submit_array(scheduler, specs, jobs)
            except (OSError, sqlite3.Error, ContainerBatchError) as exc:
                self._refused(procs, exc if isinstance(exc, ContainerBatchError) else SubmitError(str(exc)))
                return
            for job, job_id in zip(jobs, ids, strict=True):
                self._submitted(job, job_id)
            return
        for job, spec in zip(jobs, specs, strict=True):
            try:
                if len(job) > 1:  # a group job: its members are found again by the group's key
                    _journal_key(job, spec.submit_key, spec.script_path, None)
                self.submissions += 1
                try:
                    job_id = scheduler.submit(spec)
                except SubmitError as exc:  # exit 0 without an id: the job may be there, under its key
                    from containerbatch.worker import found_after_silent_submit

                    found = found_after_silent_submit(scheduler, spec, exc)
                    if found is None:
                        raise
                    job_id = found
            except (sqlite3.Error, ContainerBatchError) as exc:
                self._refused(job, exc if isinstance(exc, ContainerBatchError) else SubmitError(str(exc)))
                continue
            self._submitted(job, job_id)

    def _submitted(self, job: list[JobProcess], job_id: str) -> None:
        for proc in job:
            proc.deferred = False
            proc.job_id = job_id
            proc.submitted_done()

    def _refused(self, procs: list[JobProcess], exc: ContainerBatchError) -> None:
        for proc in procs:
            proc.deferred = False
            proc._failed_to_submit(exc)

    # -- job scripts -------------------------------------------------------------
    def _folder(self, spec: JobSpec, kind: str) -> Path:
        folder = Path(spec.log_dir) / JOBS_FOLDER / spec.run_id / f"{kind}{next(self._seq)}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _job_spec(self, job: list[JobProcess]) -> JobSpec:
        """The spec whose job script runs ``job``: the task's own for one task, a group's for several."""
        if len(job) == 1:
            return job[0].spec
        return self._group_spec([p.spec for p in job], tasks=[p.task for p in job])

    def _group_spec(self, specs: Sequence[JobSpec], kind: str = "g", tasks: Sequence[luigi.Task] = ()) -> JobSpec:
        first = specs[0]
        folder = self._folder(first, kind)
        marker = str(Path(first.marker_path).parent / f"{JOBS_FOLDER}.{folder.name}")
        spec = replace(
            first,
            task_id=f"{first.task_family}: {len(specs)} tasks ({folder.name})",
            job_dir=str(folder),
            marker_path=marker,
            submit_key=new_submit_key(),
        )
        parallel = first.resources.cpus or 1
        group: dict[str, object] = {"job_dirs": [s.job_dir for s in specs], "parallel": parallel}
        group["run_id"] = first.run_id
        if not first.staged:  # each task's marker as it ends (a staged job's come back with its outputs, at the end)
            group["markers"] = [s.marker_path for s in specs]
        (folder / GROUP).write_text(json.dumps(group, indent=1))
        outputs = [output_paths(task) for task in tasks]
        script, _command, submit_file = self.render_group(spec, specs, outputs)
        Path(spec.script_path).write_text(script)
        os.chmod(spec.script_path, 0o755)
        scheduler = self.run.scheduler(dict(first.settings))
        if first.staged and hasattr(scheduler, "group_submit_file"):  # each task's outputs come back to it
            submit_file = scheduler.group_submit_file(spec, specs)
        if submit_file is not None and scheduler.submit_file_name:
            (folder / scheduler.submit_file_name).write_text(submit_file)
        for s in specs:  # `containerbatch show` and a curious user find the job that runs the task
            (Path(s.job_dir) / "group").write_text(str(folder) + "\n")
        if first.staged:  # one archive in: the group's folder and every task's folder and inputs
            from containerbatch import staging

            staging.pack_group_inputs(spec, list(zip(specs, tasks, strict=True)))
        return spec

    def render_group(
        self, spec: JobSpec, specs: Sequence[JobSpec], outputs: Sequence[Sequence[str]] = ()
    ) -> tuple[str, list[str], str | None]:
        """(job script, container argv, submit file) of a job that runs ``specs``; writes its private files.

        A staged job (no shared filesystem) packs, for each task, what it wrote into its job folder and its
        declared ``outputs`` into ``cb_out_I.tar.gz`` and writes ``cb_done_I``: HTCondor brings them back
        into that task's folder and marker, so each task's stage-out carries its own outputs only."""
        from containerbatch import jobfiles

        if spec.staged:
            for name, text in self.run.private_files(spec).items():
                jobfiles.write_private(str(Path(spec.job_dir) / name), text)
            return self.run.render(spec, before_finish=staged_marks(specs, outputs), stage_out_from=spec.job_dir)

        marks = [  # the runner marked the tasks that ended; bash builtins but for the rest (forks cost ms each)
            "cb_mark() {",
            '    [ -e "$2" ] && return 0',
            '    cb_code=""',
            '    [ -r "$1/exit_code" ] && read -r cb_code < "$1/exit_code"',
            '    [ -n "$cb_code" ] || cb_code="$cb_rc"',
            '    if [ -e "$cb_job_dir/cancelled" ]; then : > "$1/cancelled"; fi',
            '    [ -d "${2%/*}" ] || mkdir -p "${2%/*}"',
            '    printf "%s\\n" "$cb_code" > "$2.tmp" && mv -f "$2.tmp" "$2"',
            "}",
            *[f"cb_mark {q(s.job_dir)} {q(s.marker_path)}" for s in specs],
        ]
        for name, text in self.run.private_files(spec).items():
            jobfiles.write_private(str(Path(spec.job_dir) / name), text)
        return self.run.render(spec, before_finish=marks)

    def _submit_array(
        self, scheduler: Scheduler, specs: list[JobSpec], jobs: Sequence[Sequence[JobProcess]] = ()
    ) -> list[str]:
        first = specs[0]
        folder = self._folder(first, "a")
        array_spec = replace(
            first,
            job_dir=str(folder),
            task_id=f"array of {len(specs)} jobs ({folder.name})",
            submit_key=new_submit_key(),
        )
        staged = first.staged and hasattr(scheduler, "staged_array_submit_file")
        script = render_staged_array(array_spec, len(specs)) if staged else render_array(scheduler, array_spec, specs)
        path = folder / "array.sh"
        path.write_text(script)
        os.chmod(path, 0o755)
        if staged:  # each element brings its own folder, archive and job script
            members = [[p.spec for p in job] if len(job) > 1 else [] for job in jobs] or [[] for _ in specs]
            elements = list(zip(specs, members, strict=True))
            submit_file = scheduler.staged_array_submit_file(array_spec, elements)  # type: ignore[attr-defined]
        else:
            submit_file = scheduler.array_submit_file(array_spec, len(specs))
        if submit_file is not None and scheduler.array_submit_file_name:
            (folder / scheduler.array_submit_file_name).write_text(submit_file)
        for s in specs:
            (Path(s.job_dir) / "array").write_text(str(path) + "\n")
        for index, job in enumerate(jobs, start=scheduler.array_first):  # found again by the array's key
            _journal_key(job, array_spec.submit_key, str(path), index)
        self.submissions += 1
        try:
            ids = scheduler.submit_array(array_spec, len(specs))
        except SubmitError as exc:  # exit 0 without an id: the array may be there, under its key
            from containerbatch.worker import found_after_silent_submit

            base = found_after_silent_submit(scheduler, array_spec, exc, str(path))
            if base is None:
                raise
            ids = [scheduler.array_element_id(base, scheduler.array_first + i) for i in range(len(specs))]
        log.info("submitted %d jobs as one %s array (%s); script %s", len(specs), scheduler.name, ids[0], path)
        return ids

    # -- canary ------------------------------------------------------------------
    def _canary_done(self, spec: JobSpec, group: _Group) -> bool:
        """Whether the canary of this image on this scheduler passed; starts it or fails the group."""
        key = self._canary_key(spec)
        canary = self._canaries.get(key)
        if canary is None:
            scheduler = group.procs[0].scheduler
            canary = self._canaries[key] = _Canary(self._canary_spec(spec), scheduler)
            try:
                self.submissions += 1
                canary.job_id = scheduler.submit(canary.spec)
                canary.state = "running"
                self.run.poller.track(
                    "canary:" + canary.spec.job_dir,
                    scheduler,
                    canary.job_id,
                    canary.spec.marker_path,
                    float(spec.settings.get("poll_interval") or scheduler.default_poll_interval),
                    float(spec.settings.get("poll_max_interval") or 300.0),
                    lost_after=float(spec.settings.get("lost_after") or 60.0),
                )
                log.warning(
                    "containerbatch: a canary job (%s job %s) checks image %s on %s before %d tasks go out",
                    scheduler.name,
                    canary.job_id,
                    spec.image or "(host)",
                    scheduler.name,
                    sum(1 for s in self.run.planned if self._canary_key(s) == key),
                )
            except ContainerBatchError as exc:
                canary.state, canary.message = "failed", str(exc)
        if canary.state == "running":
            tracked = self.run.poller.get("canary:" + canary.spec.job_dir)
            if tracked is None or not tracked.finished:
                return False
            self.run.poller.forget("canary:" + canary.spec.job_dir)
            code = tracked.ended_code if tracked.ended_code is not None else tracked.status.exit_code
            if code == 0 and tracked.status.state.value != "failed":
                canary.state = "passed"
                log.info("containerbatch: canary %s passed; submitting", canary.job_id)
            else:
                from containerbatch.worker import log_tail

                tail = log_tail(canary.spec.stderr_path) or log_tail(canary.spec.stdout_path)
                canary.state = "failed"
                canary.message = (
                    f"the canary job {canary.job_id} on {canary.scheduler.name} could not start the image's python "
                    f"with the runner (exit {code}, {tracked.status.state.value}); nothing else was submitted for "
                    f"image {spec.image or '(host)'}. Its logs: {canary.spec.stdout_path}, {canary.spec.stderr_path}\n"
                    f"last lines:\n{tail}"
                )
                log.error("%s", canary.message)
        if canary.state == "failed":
            procs, group.procs = group.procs, []
            for proc in procs:
                proc.deferred = False
                proc.canary_failed(canary.message)
            return False
        return canary.state == "passed"

    def _canary_spec(self, spec: JobSpec) -> JobSpec:
        """A job of no task: the container, the image's python, the runner importing luigi."""
        folder = self._folder(spec, "canary")
        marker = str(Path(spec.marker_path).parent / f"{JOBS_FOLDER}.{folder.name}")
        canary = replace(spec, task_id=f"canary ({folder.name})", job_dir=str(folder), marker_path=marker)
        (folder / GROUP).write_text(json.dumps({"job_dirs": [], "parallel": 1, "run_id": spec.run_id}))
        script, _command, submit_file = self.render_group(canary, [])
        Path(canary.script_path).write_text(script)
        os.chmod(canary.script_path, 0o755)
        scheduler = self.run.scheduler(dict(spec.settings))
        if submit_file is not None and scheduler.submit_file_name:
            (folder / scheduler.submit_file_name).write_text(submit_file)
        if canary.staged:
            from containerbatch import staging

            staging.pack_group_inputs(canary, [])
        return canary


def _journal_key(job: Sequence[JobProcess], key: str, script: str, index: int | None) -> None:
    """Journal, before the submit call, that the tasks of ``job`` go out under ``key`` (see JobProcess._adopt)."""
    for proc in job:
        proc.journal.set_submit_key(proc.spec.task_id, proc.spec.attempt, key, script, index)


def render_array(scheduler: Scheduler, array_spec: JobSpec, specs: Sequence[JobSpec]) -> str:
    """The script of one array submission: element ``i`` runs the job script of ``specs[i]``."""
    lines = ["#!/bin/bash", *scheduler.array_directives(array_spec, len(specs))]
    lines += [
        f"# containerbatch array of {len(specs)} jobs (run {array_spec.run_id}): each element runs one job script",
        "# generated by containerbatch; `containerbatch show TASK` prints it",
        "set -u",
        f"cb_index={scheduler.array_index}",
        'case "$cb_index" in',
    ]
    for index, spec in enumerate(specs, start=scheduler.array_first):
        lines.append(
            f"    {index}) exec /bin/bash {q(spec.script_path)} >> {q(spec.stdout_path)} 2>> {q(spec.stderr_path)} ;;"
        )
    lines += [
        '    *) echo "containerbatch: no job for array index $cb_index" >&2; exit 2 ;;',
        "esac",
        "",
    ]
    return "\n".join(lines)


def staged_marks(specs: Sequence[JobSpec], outputs: Sequence[Sequence[str]]) -> list[str]:
    """Lines that end a staged job of several tasks: per task ``I``, its exit code (the job's when the runner
    wrote none), ``cb_out_I.tar.gz`` of what it wrote in its job folder and declared outputs (newer than
    the job's start), then ``cb_done_I``."""
    lines = [
        "cb_mark() {",
        '    cb_dir="$cb_root$1"; cb_i="$2"; shift 2',
        '    cb_code=""',
        '    [ -r "$cb_dir/exit_code" ] && read -r cb_code < "$cb_dir/exit_code"',
        '    if [ -z "$cb_code" ]; then',
        '        cb_code="$cb_rc"; mkdir -p "$cb_dir" && printf "%s\\n" "$cb_code" > "$cb_dir/exit_code"',
        "    fi",
        '    if [ -e "$cb_job_dir/cancelled" ]; then : > "$cb_dir/cancelled"; fi',
        '    ( cd "$cb_root" || exit 1',
        "      cb_rel=()",
        '      for cb_p in "$@"; do [ -e ".$cb_p" ] && cb_rel+=(".$cb_p"); done',
        '      [ "${#cb_rel[@]}" -gt 0 ] || exit 1',
        '      find "${cb_rel[@]}" -newer "$cb_scratch/cb_stamp" \\',
        "          \\( -type f -o -type l -o \\( -type d -empty \\) \\) -print0 |",
        '          tar --null --no-recursion -czf "$cb_scratch/cb_out_$cb_i.tar.gz" -T - ) ||',
        '        tar -czf "$cb_scratch/cb_out_$cb_i.tar.gz" -T /dev/null',
        '    printf "%s\\n" "$cb_code" > "$cb_scratch/cb_done_$cb_i"',
        "}",
    ]
    for index, spec in enumerate(specs):
        paths = [spec.job_dir, *(outputs[index] if index < len(outputs) else ())]
        lines.append(f"cb_mark {q(spec.job_dir)} {index} {' '.join(q(p) for p in paths)}")
    return lines


def render_staged_array(array_spec: JobSpec, count: int) -> str:
    """The script of a staged array (HTCondor, no shared filesystem): each element runs the job script
    HTCondor brought into its scratch folder with its stage-in archive (see ``staged_array_submit_file``)."""
    return "\n".join(
        [
            "#!/bin/bash",
            f"# containerbatch array of {count} staged jobs (run {array_spec.run_id}): each element runs the job",
            "# script HTCondor transferred with it; generated by containerbatch",
            "set -u",
            'exec /bin/bash "${_CONDOR_SCRATCH_DIR:-$PWD}/job.sh"',
            "",
        ]
    )


def show_blocks(run: Run, spec: JobSpec) -> list[tuple[str, str]]:
    """For ``containerbatch show``: the array and group scripts a task goes out in, as (title, text).

    An earlier run's real script (its job folder names it) is shown when there is one; otherwise, when
    the settings ask for arrays or several tasks per job, the script this task alone would get.
    """
    from containerbatch import jobfiles

    blocks: list[tuple[str, str]] = []
    jobs = os.path.join(os.path.realpath(spec.log_dir), JOBS_FOLDER)
    for name, what in (("group", "job script of the tasks_per_job job"), ("array", "array script")):
        # the pointer lies in the task's job folder, which the node can write: read it as the node's (no
        # link, no FIFO) and show only a script of our own jobs folder, never any other file it names
        text = jobfiles.read_small(os.path.join(spec.job_dir, name))
        if not text or not text.strip().startswith("/"):
            continue
        path = os.path.realpath(text.strip())
        path = os.path.join(path, "job.sh") if name == "group" else path
        if os.path.commonpath([path, jobs]) != jobs or os.path.basename(path) not in ("job.sh", "array.sh"):
            log.warning("%s: %s/%s names %s, outside %s: not shown", spec.task_id, spec.job_dir, name, path, jobs)
            continue
        script = jobfiles.read_small(path, 1 << 22)
        if script is not None:
            blocks.append((f"{what} this task went out in ({path})", script))
    if blocks:
        return blocks
    scheduler = run.scheduler(dict(spec.settings))
    per_job, array, *_ = Batcher._ints(spec)
    if array > 1 and getattr(scheduler, "supports_arrays", False):
        folder = str(Path(spec.log_dir) / JOBS_FOLDER / spec.run_id / "a1")
        preview = replace(spec, job_dir=folder, task_id=f"array ({folder})")
        text = render_array(scheduler, preview, [spec])
        blocks.append((f"array script (max_array_size={array}; here with this task alone)", text))
    if per_job > 1:
        blocks.append((f"tasks_per_job={per_job}: this task runs in a job of up to {per_job} of its family", ""))
    return blocks
