"""Contract tests every scheduler plugin passes; a plugin's suite subclasses :class:`SchedulerContract`.

The tests check behaviour from the outside: what the scheduler object answers (in-process, with
trivial job scripts) and what a user of the ``containerbatch`` CLI sees (results, exit code,
messages, the journal).  Nothing here knows a particular batch system; the hooks of the subclass
say where its commands are and what it can show.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, ClassVar

import luigi
import pytest

from containerbatch import plugins
from containerbatch.errors import ConfigError, SchedulerError
from containerbatch.resubmit import Reason, classify
from containerbatch.schedulers.base import BaseScheduler, CommandResult, Scheduler
from containerbatch.settings import SettingsResolver
from containerbatch.spec import JobSpec, build_spec
from containerbatch.states import JobState, JobStatus


class KitJob(luigi.Task):
    """The task the in-process tests build their specs from (its job scripts are written by the kit)."""

    name = luigi.Parameter()


#: the end-to-end workflow: Prepare runs locally (batch_system on the task), Work x2 and Combine on the plugin
WORKFLOW = """
import os
import time

import luigi


class Prepare(luigi.Task):
    batch_system = "local"
    sample = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/sample_{self.sample}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write(str(self.sample * 10))


class Work(luigi.Task):
    sample = luigi.IntParameter()
    resources = {"memory": "256MB", "cpus": 1}

    def requires(self):
        return Prepare(sample=self.sample)

    def output(self):
        return luigi.LocalTarget(f"results/work_{self.sample}.txt")

    def run(self):
        with self.input().open() as handle:
            value = int(handle.read())
        with self.output().open("w") as handle:
            handle.write(str(value + 1))


class Combine(luigi.Task):
    samples = luigi.IntParameter(default=2)

    def requires(self):
        return [Work(sample=i) for i in range(self.samples)]

    def output(self):
        return luigi.LocalTarget(f"results/combined_{self.samples}.txt")

    def run(self):
        total = sum(int(t.open().read()) for t in self.input())
        with self.output().open("w") as handle:
            handle.write(f"{len(self.input())} parts, total {total}\\n")


class Echo(luigi.Task):
    name = luigi.Parameter()
    fail = luigi.BoolParameter(default=False)
    sleep = luigi.IntParameter(default=0)

    def output(self):
        return luigi.LocalTarget(f"results/{self.name}.txt")

    def run(self):
        with open(f"results/{self.name}.started", "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("the task failed on purpose")
        with self.output().open("w") as handle:
            handle.write(self.name)
"""

#: what a hostile job name tries (a shell or directive parser that reads it runs `touch SENTINEL`)
HOSTILE_NAME = "cb x'\"; $(touch {sentinel}) `touch {sentinel}` #c\\ \\n%j $HOME"

#: output no parser may crash on (it may refuse it with a SchedulerError)
HOSTILE_OUTPUTS = (
    "",
    "\n\n",
    '\x00\x1b[0m<html><head><title>502 Bad Gateway</title></head>\n{"COMMAND":"bjo\n',
    "{",
    "[]",
    "null",
    '{"RECORDS": [{"JOBID": null}], "JOBS": "x"}',
    "<?xml version='1.0'?><job_info><job_list><JB_job_number>1</JB_job_number>",
    "<?xml version='1.0'?><job_info><job_list><JB_job_number>1</JB_job_number><state>zz</state></job_list></job_info>",
    "1|BOGUS|x:y\n2||\n|||\n",
    "Job <abc> is submitted to queue <>.\n",
    "Submitted batch job \n",
    "1 job(s) submitted to cluster .\n",
    "jobnumber 1\nfailed  x : y\nexit_status zz\n",
    "\n".join(f"{i} R {'x' * 200}" for i in range(2000)),
)


@dataclass
class Harness:
    """A working folder, the environment the batch system's commands need, and ways to use the plugin.

    Parameters
    ----------
    root:
        The working directory of the runs (``working_dir``).
    env:
        The full environment of CLI runs (``PATH`` with the commands, ``CONTAINERBATCH_*`` settings).
    scheduler:
        The plugin's name.
    shared:
        Jobs run as another user: folders and files the kit creates are made world-writable, and CLI
        runs get umask 0.
    """

    root: Path
    env: dict[str, str]
    scheduler: str
    shared: bool = False
    poll: float = 1.0
    created: list[BaseScheduler] = field(default_factory=list)
    submitted: list[tuple[BaseScheduler, str]] = field(default_factory=list)

    def submit(self, scheduler: BaseScheduler, spec: JobSpec) -> str:
        """``scheduler.submit(spec)``, remembered so that the test's end cancels what is left."""
        job_id = scheduler.submit(spec)
        self.submitted.append((scheduler, job_id))
        return job_id

    def cancel_leftovers(self) -> None:
        for scheduler, job_id in self.submitted:
            try:
                scheduler.kill([job_id])
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass

    # -- in-process -----------------------------------------------------------------------------
    def values(self, **settings: Any) -> dict[str, Any]:
        """The resolved settings (as a run would see them in ``root``), with ``settings`` on top."""
        environ = {k: v for k, v in self.env.items() if not k.startswith("CONTAINERBATCH_")}
        environ.update({f"CONTAINERBATCH_{k.upper()}": _env_value(v) for k, v in settings.items()})
        environ.update({k: v for k, v in self.env.items() if k.startswith("CONTAINERBATCH_") and k not in environ})
        values = SettingsResolver(start=self.root, environ=environ).values()
        values.update({"batch_system": self.scheduler, "working_dir": str(self.root)})
        return values

    def new_scheduler(self, **settings: Any) -> BaseScheduler:
        """A fresh instance of the plugin (as a new submitting process would make)."""
        instance: BaseScheduler = plugins.schedulers.get(self.scheduler)(self.values(**settings))
        self.created.append(instance)
        return instance

    def spec(self, name: str, resources: dict[str, Any] | None = None, **settings: Any) -> JobSpec:
        """A spec of :class:`KitJob` named ``name``, runtime host."""
        values = self.values(**settings)
        values["resources"] = dict(resources or {})
        values["runtime"] = "host"  # the spec's runtime; a runtime contract replaces it afterwards
        spec = build_spec(KitJob(name=name), values, run_id=f"kit-{os.getpid()}-{time.time_ns() % 10**9}")
        for folder in (spec.job_dir, spec.result_dir, Path(spec.marker_path).parent):
            self.mkdir(Path(folder))
        return spec

    def write_job(self, scheduler: BaseScheduler, spec: JobSpec, body: str) -> None:
        """job.sh for ``spec``: the scheduler's directives, then ``body`` (bash); the submit file if any."""
        lines = ["#!/bin/bash", *scheduler.directives(spec), f"cd {shlex.quote(spec.working_dir)} || exit 2", body]
        Path(spec.script_path).write_text("\n".join(lines) + "\n")
        os.chmod(spec.script_path, 0o755)
        text = scheduler.submit_file(spec)
        if text is not None and scheduler.submit_file_name:
            (Path(spec.job_dir) / scheduler.submit_file_name).write_text(text)
        for name in ("stdout", "stderr"):  # batch systems running jobs as another user append to them
            path = Path(spec.job_dir) / name
            path.touch()
            if self.shared:
                os.chmod(path, 0o666)

    def job(self, scheduler: BaseScheduler, name: str, exit_code: int = 0, sleep: float = 0, **kw: Any) -> JobSpec:
        """Write a job that marks ``started``, sleeps, marks ``finished`` and exits ``exit_code``.

        ``finished`` is written only when the sleep ran to its end: a batch system that signals the job's
        processes one by one (Slurm's proctrack/linuxproc) may stop the sleep a moment before the shell."""
        spec = self.spec(name, **kw)
        folder = shlex.quote(spec.job_dir)
        self.write_job(
            scheduler,
            spec,
            f"echo started > {folder}/started\nsleep {sleep} && echo finished > {folder}/finished\nexit {exit_code}",
        )
        return spec

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.shared:
            for folder in [path, *path.parents]:
                if folder == self.root.parent or not str(folder).startswith(str(self.root)):
                    break
                os.chmod(folder, 0o777)

    def wait(
        self,
        scheduler: BaseScheduler,
        job_ids: Sequence[str],
        until: Callable[[dict[str, JobStatus]], bool],
        timeout: float,
        what: str,
    ) -> dict[str, JobStatus]:
        """Query ``job_ids`` (all at once) every poll interval until ``until(states)``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        states: dict[str, JobStatus] = {}
        while time.monotonic() < deadline:
            try:
                states = scheduler.query(list(job_ids))
            except SchedulerError as exc:
                if not exc.transient:
                    raise
            else:
                if until(states):
                    return states
            time.sleep(self.poll)
        pytest.fail(f"{what}: not within {timeout:.0f} s; last answer {states}")

    # -- the CLI ----------------------------------------------------------------------------------
    def write_workflow(self) -> str:
        path = self.root / "kit_tasks.py"
        path.write_text(WORKFLOW)
        return str(path)

    def cli(self, args: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> Any:
        """Run ``containerbatch ARGS`` in ``root`` (a fresh luigi registry each time)."""
        return subprocess.run(
            [sys.executable, "-m", "containerbatch", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self._umask,
        )

    def popen(self, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "containerbatch", *args],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=self._umask,
        )

    def _umask(self) -> None:
        if self.shared:
            os.umask(0)

    def attempts(self) -> list[dict[str, Any]]:
        """The journal's attempts (one dict per row), ordered by task id and attempt."""
        with sqlite3.connect(self.root / ".containerbatch" / "journal.sqlite") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY task_id, attempt")]


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _final_or_gone(ids: Sequence[str]) -> Callable[[dict[str, JobStatus]], bool]:
    return lambda states: all(j not in states or states[j].state.is_final for j in ids)


class SchedulerContract:
    """Contract tests for a scheduler plugin: subclass with ``scheduler = "<entry-point name>"``.

    Hooks (override in the subclass):

    ``scheduler``
        The plugin's entry-point name.
    ``environment(tmp_path)``
        Extra environment variables for the commands (``PATH`` first entries, a fake's state folder).
    ``settings``
        Settings in force for every test (as ``CONTAINERBATCH_*`` variables), e.g. ``{"bundle": "always"}``.
    ``shared``
        Jobs run as another user than the tests (folders are then made world-writable).
    ``workdir(tmp_path)``
        Where the working directory goes (default ``tmp_path / "work dir"``, a blank in the path on purpose).
    ``job_timeout``
        Seconds a trivial job may take from submission to its end.
    ``workflow_env``
        Extra environment of the end-to-end workflow run (e.g. a fake told to keep jobs pending a while,
        so that the status calls are seen).
    ``runtimes``
        Runtime cases of the end-to-end workflow test: names or ``pytest.param(name, [extra CLI args])``.
    ``status_calls(harness)``
        The argv of every status command the batch system saw (a fake's call log), or None if unknown;
        then the end-to-end test also checks that they ask only about the run's own jobs (one status
        command per query for all jobs is checked in-process by ``test_submit_and_bulk_query``).
    ``cleanup(harness)``
        Called after each test (e.g. kill what a fake still runs).
    """

    scheduler: ClassVar[str] = ""
    settings: ClassVar[dict[str, Any]] = {}
    shared: ClassVar[bool] = False
    job_timeout: ClassVar[float] = 120.0
    runtimes: ClassVar[tuple[Any, ...]] = ("host",)
    workflow_env: ClassVar[dict[str, str]] = {}

    def environment(self, tmp_path: Path) -> dict[str, str]:
        return {}

    def workdir(self, tmp_path: Path) -> Path:
        return tmp_path / "work dir"

    def status_calls(self, harness: Harness) -> list[list[str]] | None:
        return None

    def cleanup(self, harness: Harness) -> None:
        """Called after each test, once the jobs the kit submitted in-process were cancelled."""

    # -- fixtures ------------------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "runtime_case" in metafunc.fixturenames:
            cases = [c if hasattr(c, "values") else pytest.param((c, []), id=c) for c in self.runtimes]
            metafunc.parametrize("runtime_case", cases)

    @contextlib.contextmanager
    def harness(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
        """The :class:`Harness` of one test (also for a plugin's own tests outside this class)."""
        assert self.scheduler, f"{type(self).__name__} must set scheduler = '<plugin name>'"
        root = self.workdir(tmp_path)
        root.mkdir(parents=True, exist_ok=True)
        if self.shared:
            os.chmod(root, 0o777)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERBATCH_")}
        extra = self.environment(tmp_path)
        env.update(extra)
        env.update({f"CONTAINERBATCH_{k.upper()}": _env_value(v) for k, v in self.settings.items()})
        env["CONTAINERBATCH_POLL_INTERVAL"] = "1"
        for key in [k for k in os.environ if k.startswith("CONTAINERBATCH_")]:
            monkeypatch.delenv(key)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        harness = Harness(root, env, self.scheduler, shared=self.shared)
        try:
            yield harness
        finally:
            harness.cancel_leftovers()
            self.cleanup(harness)

    @pytest.fixture
    def kit(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
        with self.harness(tmp_path, monkeypatch) as harness:
            yield harness

    # -- the plugin itself --------------------------------------------------------------------------
    def test_plugin_loads_and_is_valid(self, kit: Harness) -> None:
        """Registered by entry point, a concrete subclass of the contract, its settings in the one table."""
        assert self.scheduler in plugins.schedulers.names(), plugins.schedulers.errors
        cls = plugins.schedulers.get(self.scheduler)
        assert issubclass(cls, BaseScheduler)
        assert plugins.validate(cls, self.scheduler, "containerbatch.schedulers") == []
        values = kit.values()
        for setting in cls.SETTINGS:
            assert setting.name in values, f"declared setting {setting.name} is not in the settings table"
        ok, detail = cls(values).available()
        assert isinstance(ok, bool) and isinstance(detail, str) and detail

    def test_states_total(self, kit: Harness) -> None:
        """Every native state maps to a JobState; an unknown one is UNKNOWN (a warning, never an exception)."""
        scheduler = kit.new_scheduler()
        assert scheduler.STATE_MAP, "STATE_MAP names no state"
        for native, state in scheduler.STATE_MAP.items():
            assert isinstance(state, JobState), native
            assert scheduler.map_state(native).state is state
        assert scheduler.map_state("no-such-state-\u2603").state is JobState.UNKNOWN
        covered = set(scheduler.STATE_MAP.values())
        for needed in (JobState.RUNNING, JobState.COMPLETED):
            assert needed in covered, f"no native state maps to {needed}"

    def test_failure_reasons_are_the_vocabulary(self, kit: Harness) -> None:
        """The scheduler's words map onto the core's reasons; its classifier never raises."""
        scheduler = kit.new_scheduler()
        for word, reason in scheduler.FAILURE_WORDS.items():
            assert isinstance(reason, Reason), word
            failure = classify(None, JobStatus(JobState.FAILED, word), None, scheduler=scheduler)
            assert failure.reason is reason, (word, failure)
        for native, state in scheduler.STATE_MAP.items():
            for reason_text in ("", "x y: z", "\x00\n" * 3):
                said = scheduler.classify_failure(JobStatus(state, native, None, reason_text))
                assert said is None or (isinstance(said[0], Reason) and isinstance(said[1], str)), said

    def test_hostile_output_never_crashes_a_parser(self, kit: Harness) -> None:
        """What a scheduler prints is untrusted: every parser returns a result or raises SchedulerError."""
        scheduler = kit.new_scheduler()
        if not isinstance(scheduler, Scheduler):
            pytest.skip("not a command-driven scheduler: it parses no command output")
        rng = random.Random(16)
        texts = [*HOSTILE_OUTPUTS, bytes(rng.randrange(256) for _ in range(4096)).decode(errors="replace")]
        ids = ["1", "2"]
        parsers: list[tuple[str, Callable[[CommandResult], Any]]] = [
            ("parse_submit", scheduler.parse_submit),
            ("parse_status", lambda r: scheduler.parse_status(r, ids)),
            ("parse_history", lambda r: scheduler.parse_history(r, ids)),
        ]
        for text in texts:
            for code in (0, 1, 255):
                for stream in ("stdout", "stderr"):
                    result = CommandResult(
                        ("tool", "1", "2"), code, text if stream == "stdout" else "", text if stream == "stderr" else ""
                    )
                    for name, parse in parsers:
                        try:
                            answer = parse(result)
                        except SchedulerError:
                            continue
                        except Exception as exc:  # noqa: BLE001 - the point of the test
                            pytest.fail(
                                f"{name} raised {type(exc).__name__}: {exc} on {stream} {text[:80]!r} exit {code}"
                            )
                        if name == "parse_submit":
                            assert isinstance(answer, str) and answer and "\n" not in answer, answer
                        else:
                            assert isinstance(answer, dict) and set(answer) <= set(ids), answer
                            assert all(isinstance(s, JobStatus) for s in answer.values())

    def test_hostile_values_are_refused_or_carried(self, kit: Harness) -> None:
        """A hostile job name, queue and account: a ConfigError, or argv/directives that carry them as data."""
        scheduler = kit.new_scheduler()
        sentinel = kit.root / "pwned"
        hostile = HOSTILE_NAME.format(sentinel=sentinel)
        for resources in ({}, {"queue": "q 'x\"", "account": "a;b $(x)"}, {"queue": "a\nb"}):
            spec = kit.spec("hostile", resources=resources, job_name=hostile)
            try:
                scheduler.check(spec)
                lines = scheduler.directives(spec)
                submit_file = scheduler.submit_file(spec)
                argv = scheduler.submit_argv(spec) if isinstance(scheduler, Scheduler) else []
            except ConfigError:
                continue
            assert all(isinstance(a, str) and "\0" not in a for a in argv), argv
            for line in lines:
                assert "\n" not in line and "\r" not in line and line.startswith("#"), line
            if submit_file is not None:
                assert "\0" not in submit_file
        assert not sentinel.exists()

    # -- jobs ------------------------------------------------------------------------------------------
    def test_submit_and_bulk_query(self, kit: Harness) -> None:
        """Jobs submit, run with a hostile job name, and are asked about in ONE status command per query."""
        scheduler = kit.new_scheduler()
        sentinel = kit.root / "pwned"
        ok = kit.job(scheduler, "ok", job_name=HOSTILE_NAME.format(sentinel=sentinel))
        bad = kit.job(scheduler, "bad", exit_code=3)
        ids = [kit.submit(scheduler, ok), kit.submit(scheduler, bad)]
        assert all(isinstance(j, str) and j and "\n" not in j for j in ids) and ids[0] != ids[1], ids
        calls = _record(scheduler)
        states = kit.wait(
            scheduler,
            ids,
            lambda s: _final_or_gone(ids)(s) and all((Path(x.job_dir) / "finished").exists() for x in (ok, bad)),
            self.job_timeout,
            "both jobs end",
        )
        if isinstance(scheduler, Scheduler):
            status = scheduler.status_argv(ids)
            per_query = [sum(1 for argv in batch if argv == status) for batch in calls]
            assert per_query and all(n == 1 for n in per_query), f"status commands per query: {per_query}"
        if ids[0] in states:
            assert states[ids[0]].state is JobState.COMPLETED and states[ids[0]].exit_code in (0, None), states
        if ids[1] in states:
            assert states[ids[1]].state is JobState.FAILED and states[ids[1]].exit_code in (3, None), states
        assert not sentinel.exists(), "a job name was run as shell code"

    def test_kill(self, kit: Harness) -> None:
        """kill() ends a running job, which is classified as cancelled; killing ended jobs is no error."""
        scheduler = kit.new_scheduler()
        spec = kit.job(scheduler, "slow", sleep=300)
        job_id = kit.submit(scheduler, spec)
        _wait_file(Path(spec.job_dir) / "started", self.job_timeout, kit)
        scheduler.kill([job_id])
        states = kit.wait(scheduler, [job_id], _final_or_gone([job_id]), self.job_timeout, "the killed job ends")
        assert not (Path(spec.job_dir) / "finished").exists(), "the job ran to its end after kill()"
        if job_id in states:
            status = states[job_id]
            failure = classify(None, status, status.exit_code, scheduler=scheduler)
            assert failure.reason is Reason.CANCELLED, (status, failure)
        scheduler.kill([job_id])  # ended already: not an error
        scheduler.kill([])

    def test_reattach_from_a_fresh_instance(self, kit: Harness) -> None:
        """A job submitted by one process is followed and killed by another (restart, `containerbatch kill`)."""
        first = kit.new_scheduler()
        spec = kit.job(first, "adopted", sleep=300)
        job_id = kit.submit(first, spec)
        _wait_file(Path(spec.job_dir) / "started", self.job_timeout, kit)
        second = kit.new_scheduler()
        second.attach(job_id, spec.script_path)
        states = kit.wait(
            second, [job_id], lambda s: job_id in s and not s[job_id].state.is_final, 30, "the adopted job is seen"
        )
        assert states[job_id].state in (JobState.RUNNING, JobState.PENDING), states
        second.kill([job_id])
        kit.wait(second, [job_id], _final_or_gone([job_id]), self.job_timeout, "the adopted job ends after kill")
        assert not (Path(spec.job_dir) / "finished").exists()

    # -- the CLI, end to end ----------------------------------------------------------------------------
    def test_workflow(self, kit: Harness, runtime_case: tuple[str, list[str]]) -> None:
        """A three-family workflow: results, one attempt each, the scheduler named per task in the journal."""
        runtime, extra = runtime_case
        tasks = kit.write_workflow()
        proc = kit.cli(
            ["run", tasks, "Combine", "--batch-system", self.scheduler, "--runtime", runtime, *extra, "--workers", "3"],
            env=self.workflow_env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (kit.root / "results" / "combined_2.txt").read_text() == "2 parts, total 12\n"
        rows = kit.attempts()
        assert sorted(r["task_family"] for r in rows) == ["Combine", "Prepare", "Prepare", "Work", "Work"]
        assert all(r["state"] == "done" and r["job_id"] and r["attempt"] == 1 for r in rows), rows
        assert {r["task_family"]: r["scheduler"] for r in rows} == {
            "Prepare": "local",
            "Work": self.scheduler,
            "Combine": self.scheduler,
        }
        seen = self.status_calls(kit)
        if seen is not None:
            ours = {r["job_id"] for r in rows if r["scheduler"] == self.scheduler}
            assert seen, "the scheduler was never asked"
            foreign = [argv for argv in seen if any(a.isdigit() and a not in ours for a in argv)]
            assert not foreign, f"status calls asked about jobs of nobody's run: {foreign}"

    def test_failing_task_shows_reason_and_log(self, kit: Harness) -> None:
        tasks = kit.write_workflow()
        proc = kit.cli(["run", tasks, "Echo", "--name", "bad", "--fail", "--batch-system", self.scheduler])
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output
        (row,) = kit.attempts()
        assert row["state"] == "failed" and row["reason"] == "task_error", row
        assert "the task failed on purpose" in output
        assert str(Path(row["job_dir"]) / "stderr") in output  # where to look
        assert not (kit.root / "results" / "bad.txt").exists()

    def test_ctrl_c_cancels_the_job(self, kit: Harness) -> None:
        """SIGTERM to the submitting process cancels its job with one call; the task stops."""
        tasks = kit.write_workflow()
        proc = kit.popen(["run", tasks, "Echo", "--name", "slow", "--sleep", "300", "--batch-system", self.scheduler])
        started = kit.root / "results" / "slow.started"
        try:
            deadline = time.monotonic() + self.job_timeout
            while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert started.exists(), proc.stdout.read() if proc.stdout and proc.poll() is not None else "never started"
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode != 0
        assert "cancelled 1 job(s)" in output, output
        (row,) = kit.attempts()
        assert row["state"] == "cancelled", row
        time.sleep(2)
        assert not (kit.root / "results" / "slow.txt").exists()


def _record(scheduler: BaseScheduler) -> list[list[list[str]]]:
    """Record the argv of every command, grouped per query() call."""
    batches: list[list[list[str]]] = []
    run, query = scheduler._run, scheduler.query

    def recording_run(argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        if batches:
            batches[-1].append(list(argv))
        return run(argv, stdin)

    def recording_query(job_ids: Sequence[str]) -> dict[str, JobStatus]:
        batches.append([])
        return query(job_ids)

    scheduler._run = recording_run  # type: ignore[method-assign]
    scheduler.query = recording_query  # type: ignore[method-assign]
    return batches


def _wait_file(path: Path, timeout: float, kit: Harness) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared (the job did not start within {timeout:.0f} s)")
        time.sleep(0.2)


#: the runtime kit's workflow: Facts reports what the task saw, Boom fails on purpose
RUNTIME_WORKFLOW = """
import json
import os

import luigi


class Facts(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/facts.json")

    def run(self):
        facts = {
            "contract_env": os.environ.get("CB_CONTRACT"),
            "host_only": os.environ.get("CB_HOST_ONLY"),
            "bound": open(os.environ["CB_INPUT"]).read(),
            "cwd": os.getcwd(),
            "uid": os.getuid(),
        }
        with self.output().open("w") as handle:
            json.dump(facts, handle)


class Boom(luigi.Task):
    def output(self):
        return luigi.LocalTarget("results/never")

    def run(self):
        raise RuntimeError("contract failure 42")


class All(luigi.WrapperTask):
    def requires(self):
        return [Facts(), Boom()]
"""

#: an env value every runtime must deliver intact (commas split apptainer's --env; quotes and $ a shell)
ODD_VALUE = "spaces, commas; $dollar 'quotes' \"double\" `tick` \\\\back"


class RuntimeContract:
    """Contract tests for a runtime plugin: subclass with ``runtime = "<entry-point name>"``.

    Hooks: ``image(tmp_path)`` (the image the end-to-end run uses; None for none), ``scheduler`` (default
    ``local``), ``environment(tmp_path)``, ``settings``, ``isolated`` (the container does not see the host's
    environment variables), ``inside(path)`` (where a bound folder appears in the container).
    """

    runtime: ClassVar[str] = ""
    scheduler: ClassVar[str] = "local"
    settings: ClassVar[dict[str, Any]] = {}
    isolated: ClassVar[bool] = True

    def image(self, tmp_path: Path) -> str | None:
        return None

    def environment(self, tmp_path: Path) -> dict[str, str]:
        return {}

    @pytest.fixture
    def kit(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
        assert self.runtime, f"{type(self).__name__} must set runtime = '<plugin name>'"
        contract = SchedulerContract()
        contract.scheduler = self.scheduler  # type: ignore[misc]
        contract.environment = self.environment  # type: ignore[method-assign]
        contract.settings = self.settings  # type: ignore[misc]
        with contract.harness(tmp_path, monkeypatch) as harness:
            yield harness

    def test_plugin_loads_and_is_valid(self, kit: Harness) -> None:
        from containerbatch.runtimes.base import Runtime

        assert self.runtime in plugins.runtimes.names(), plugins.runtimes.errors
        cls = plugins.runtimes.get(self.runtime)
        assert issubclass(cls, Runtime)
        assert plugins.validate(cls, self.runtime, "containerbatch.runtimes") == []
        ok, detail = cls(kit.values()).available()
        assert isinstance(ok, bool) and isinstance(detail, str) and detail

    def test_claims_and_start_failures_are_well_formed(self, kit: Harness) -> None:
        cls = plugins.runtimes.get(self.runtime)
        for image in ("name:tag", "img.sif", "docker://x/y", "/no/such/dir", "", "a b\n$(x)", "\x00", "x" * 5000):
            strength = cls.claim_image(image)
            assert isinstance(strength, int) and strength >= 0, (image, strength)
        for code, meaning in cls.START_FAILURES.items():
            assert isinstance(code, int) and isinstance(meaning, str) and meaning
            said = cls.classify_start_failure(code, "")
            assert said is not None and said[0] is Reason.IMAGE_ERROR, said
        assert cls.classify_start_failure(0, "") is None
        claimed = self.image(kit.root)
        if claimed:
            assert plugins.guess_runtime(claimed) in (self.runtime, *plugins.runtimes.names())

    def test_command_carries_hostile_values(self, kit: Harness) -> None:
        runtime = plugins.runtimes.get(self.runtime)(kit.values())
        image = self.image(kit.root)
        spec = kit.spec(
            "hostile",
            env={"CB_CONTRACT": ODD_VALUE, "CB_NEWLINE": "a\nb"},
            image=image,
            binds=[f"{kit.root}:{kit.root}"],
        )
        spec = dataclass_replace(spec, runtime=self.runtime)
        try:
            argv = runtime.command(spec)
            exports = runtime.exports(spec)
        except ConfigError:
            return
        assert argv and all(isinstance(a, str) for a in argv), argv
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in exports.items()), exports
        assert spec.runner_argv()[-1] in argv or any(spec.job_dir in a for a in argv), "the runner is not run"

    def test_runs_a_task_and_reports_a_failure(self, kit: Harness, tmp_path: Path) -> None:
        """A task sees its bound input and the env setting intact; a failing task is task_error with its log."""
        (kit.root / "rt_tasks.py").write_text(RUNTIME_WORKFLOW)
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        (data / "input.txt").write_text("bound input\n")
        settings = {
            "binds": [f"{data}:{data}:ro"],
            "env": {"CB_CONTRACT": ODD_VALUE, "CB_INPUT": str(data / "input.txt")},
        }
        (kit.root / "settings.json").write_text(json.dumps(settings))
        args = ["run", "rt_tasks.py", "All", "--runtime", self.runtime, "--batch-system", self.scheduler]
        image = self.image(kit.root)
        if image:
            args += ["--image", image]
        proc = kit.cli([*args, "--workers", "2"], env={"CB_HOST_ONLY": "leaked"})
        output = proc.stdout + proc.stderr
        assert proc.returncode == 1, output[-3000:]
        assert "contract failure 42" in output and "task_error" in output
        assert str(kit.root / "logs" / "Boom") in output
        facts = json.loads((kit.root / "results" / "facts.json").read_text())
        assert facts["bound"] == "bound input\n"
        assert facts["contract_env"] == ODD_VALUE
        assert facts["cwd"] == str(kit.root)
        assert (kit.root / "results" / "facts.json").stat().st_uid == os.getuid()
        if self.isolated:
            assert facts["host_only"] is None, "the host's environment leaked into the container"
