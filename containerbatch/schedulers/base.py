"""The Scheduler contract (:class:`BaseScheduler`, :class:`Scheduler`) and the one place that runs commands.

A scheduler subclass is declarative: it builds argv and parses text
(``submit_argv``/``parse_submit``, ``status_argv``/``parse_status``,
``history_argv``/``parse_history``, ``kill_argv``) and keeps a ``STATE_MAP``
from its native states.  This base owns subprocess (``_run``: argument lists,
a timeout every time, output drained), and composes the calls; the poller owns
retries and timing.
"""

from __future__ import annotations

import abc
import logging
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from containerbatch.errors import SchedulerError, StatusQueryError, SubmitError
from containerbatch.settings import Setting
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    """What a command printed: the input of every parser."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


#: the most of a command's stdout/stderr that is kept (a scheduler printing without end does not fill memory)
MAX_OUTPUT = 64 * 1024 * 1024


def run_command(argv: Sequence[str], timeout: float, stdin: str | None = None) -> CommandResult:
    """Run ``argv`` (no shell) with a timeout; never raises on a non-zero exit.

    The output is bytes, decoded as UTF-8 with every undecodable byte replaced: what a scheduler prints
    never crashes the submitter. A timeout is a transient SchedulerError; a missing binary is a permanent one.
    """
    log.debug("running %s", argv)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            list(argv), input=None if stdin is None else stdin.encode(), capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise SchedulerError(
            f"{argv[0]} did not answer within {timeout:.0f} s",
            argv=argv,
            transient=True,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr),
        ) from None
    except FileNotFoundError:
        raise SchedulerError(
            f"{argv[0]} not found on PATH; is this a submit host of that batch system? `containerbatch doctor` checks",
            argv=argv,
            transient=False,
        ) from None
    except OSError as exc:  # not executable, too many arguments...
        raise SchedulerError(f"cannot run {argv[0]}: {exc}", argv=argv, transient=False) from None
    log.debug("%s exited %s in %.2f s", argv[0], proc.returncode, time.monotonic() - started)
    return CommandResult(tuple(argv), proc.returncode, _text(proc.stdout), _text(proc.stderr))


#: what a submission key looks like (:func:`new_submit_key`): anything else found under a key is not ours
SUBMIT_KEY = re.compile(r"cb[0-9a-f]{24}")


def new_submit_key() -> str:
    """A fresh key for one submission (96 random bits): the batch system keeps it with the job, the journal
    keeps it before the submit call, so a rerun finds a job whose id was never journaled."""
    return "cb" + secrets.token_hex(12)


def current_user() -> str:
    """The submitting user's login name (what the batch systems print as a job's owner)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _text(data: bytes | str | None) -> str:
    """Decode a command's output: UTF-8, undecodable bytes replaced, NULs dropped, bounded."""
    if data is None:
        return ""
    text = data[:MAX_OUTPUT].decode("utf-8", errors="replace") if isinstance(data, bytes) else data[:MAX_OUTPUT]
    return text.replace("\0", "")


class BaseScheduler(abc.ABC):
    """The contract of a batch system: everything the core calls on a scheduler plugin.

    A plugin subclasses :class:`Scheduler` (a batch system driven by commands: it only builds argv and
    parses their output) or, for a batch system that is not reached through commands, this class, and
    registers it under the entry-point group ``containerbatch.schedulers`` with its ``name``.  The three
    abstract methods are the whole of what must be written; every other hook has a default that is
    right for most batch systems.  ``containerbatch.testing`` holds the contract tests a plugin's test
    suite subclasses.

    Class attributes
    ----------------
    name:
        The entry-point name (``batch_system`` setting value); checked when the plugin loads.
    commands:
        The commands that must be on PATH for :meth:`available` (and ``doctor``).
    DOCS_URL:
        Where the batch system documents its states (named in warnings about unknown ones).
    STATE_MAP:
        Every native state word → :class:`~containerbatch.states.JobState`.
    FAILURE_WORDS:
        The batch system's words for why a job failed (a native state such as ``OUT_OF_MEMORY`` or a
        word of the status reason such as ``TERM_RUNLIMIT``) → the reason of
        :class:`~containerbatch.resubmit.Reason` (used by :meth:`classify_failure`).
    SETTINGS:
        Settings the plugin declares (:func:`containerbatch.settings.plugin_setting`), each named
        ``<name>_…``; they join the one settings table when the plugin loads.
    TRANSIENT_MARKERS:
        Output fragments that mean "ask again later" (controller busy or down, timeouts).
    default_poll_interval:
        Seconds between status queries unless ``poll_interval`` is set.
    submit_file_name:
        The file :meth:`submit_file` is written to in the job folder, if the batch system takes one.
    STAGES_FILES:
        The batch system carries files to and from the node (no shared filesystem) when ``transfer_files``
        is set: it sends ``<job_dir>/stage-in.tar.gz`` and brings back ``stage-out.tar.gz`` and the
        done-marker, starting the job in a scratch folder (``$_CONDOR_SCRATCH_DIR``, else its cwd).
    """

    name: ClassVar[str] = ""
    commands: ClassVar[tuple[str, ...]] = ()
    DOCS_URL: ClassVar[str] = ""
    STATE_MAP: ClassVar[Mapping[str, JobState]] = {}
    FAILURE_WORDS: ClassVar[Mapping[str, Reason]] = {}
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()
    default_poll_interval: ClassVar[float] = 30.0
    TRANSIENT_MARKERS: ClassVar[tuple[str, ...]] = ()
    submit_file_name: ClassVar[str | None] = None
    STAGES_FILES: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, object] | None = None) -> None:
        self.settings = dict(settings or {})
        self.timeout = float(self.settings.get("command_timeout") or 60.0)  # type: ignore[arg-type]

    # -- what every plugin writes -----------------------------------------
    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Submit ``spec.script_path``; return the job id.  Raise :class:`~containerbatch.errors.SubmitError`
        (``transient=True`` when retrying may help) when the batch system refuses."""

    @abc.abstractmethod
    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of ``job_ids``, all asked at once; an id the batch system no longer knows is absent
        (never an exception).  Raise :class:`~containerbatch.errors.StatusQueryError` when it cannot be asked."""

    @abc.abstractmethod
    def kill(self, job_ids: Sequence[str]) -> None:
        """Cancel ``job_ids`` with as few calls as possible; jobs that already ended are not an error."""

    # -- hooks with defaults ---------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        """Header lines of job.sh (``#SBATCH …``), values quoted by :func:`containerbatch.helpers.directive_quote`."""
        return []

    def submit_file(self, spec: JobSpec) -> str | None:
        """Text of a separate submit description (HTCondor), if the scheduler uses one."""
        return None

    def check(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Raise ConfigError for settings this batch system cannot carry (called before anything is submitted)."""

    def runs_container(self, spec: JobSpec) -> bool:
        """Whether the batch system itself starts the container (then job.sh runs the plain runner)."""
        return False

    def attach(self, job_id: str, script_path: str) -> None:  # noqa: B027 (optional hook)
        """Adopt a job an earlier submitter started (after a restart, or for ``containerbatch kill``), so that
        :meth:`query` and :meth:`kill` know it.  Schedulers that ask the batch system by id need nothing."""

    def find_job(self, script_path: str) -> list[str] | None:
        """The ids of live jobs running the job script ``script_path`` (unique per attempt), to adopt a job
        whose submitter stopped before it journaled the id; None when this batch system cannot look it up."""
        return None

    def find_jobs(self, keys: Mapping[str, str]) -> dict[str, list[str]] | None:
        """Jobs submitted under the submission keys ``keys`` (key → the job script the job must run), all asked
        at once: key → ids of this user's jobs that carry the key and run that script (absent: none found).

        A submitter killed after the batch system accepted a job but before it journaled the id leaves the
        attempt as ``submitting`` with its key; the rerun adopts the job found here instead of submitting it
        again.  None: this batch system cannot look jobs up.  The default asks :meth:`find_job` per script.
        """
        found: dict[str, list[str]] = {}
        for key, script in keys.items():
            ids = self.find_job(script)
            if ids is None:
                return None
            if ids:
                found[key] = list(ids)
        return found

    def release(self, job_ids: Sequence[str]) -> None:
        """Release held jobs (``held_action = release``)."""
        raise SchedulerError(f"{self.name} has no way to release held jobs")

    def probe_argv(self) -> list[str] | None:
        """A cheap command that must reach the batch system's daemons (``doctor``); None: no such check."""
        return None

    def classify_failure(self, status: JobStatus) -> tuple[Reason, str] | None:
        """Why a job failed, in the batch system's own words, or None when they say nothing specific.

        The default looks the native state and every word of the status reason up in ``FAILURE_WORDS``.
        The core then falls back on what every job shows (exit codes, the runner's result file).
        """
        words = [status.native.upper(), *status.reason.upper().replace(":", " ").split()]
        for word in words:
            if word in self.FAILURE_WORDS:
                return self.FAILURE_WORDS[word], describe(status)
        return None

    def available(self) -> tuple[bool, str]:
        """Whether this host can submit (for doctor and auto-detection)."""
        missing = [c for c in self.commands if shutil.which(c) is None]
        if missing:
            return False, f"missing {', '.join(missing)} on PATH"
        return True, ", ".join(shutil.which(c) or c for c in self.commands)

    def native_states(self) -> list[str]:
        return sorted(self.STATE_MAP)

    def map_state(self, native: str, exit_code: int | None = None, reason: str = "") -> JobStatus:
        """Native state → JobStatus; an unmapped state is UNKNOWN with a warning, never an exception."""
        state = self.STATE_MAP.get(native)
        if state is None:
            log.warning(
                "%s reported state %r that containerbatch does not know; treating it as UNKNOWN (see %s)",
                self.name,
                native,
                self.DOCS_URL,
            )
            state = JobState.UNKNOWN
        return JobStatus(state, native, exit_code, reason)

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        """The one seam to the batch system's commands: argument lists, a timeout every time."""
        return run_command(argv, self.timeout, stdin)


def own_jobs(
    rows: Sequence[tuple[str, str, str, str]],
    keys: Mapping[str, str],
    what: str,
    owners: Collection[str] | None = None,
) -> dict[str, list[str]]:
    """key → ids of the rows ``(key, job id, owner, script)`` that are ours: one of ``keys``, owned by the
    submitting user (or one of ``owners``), running the script journaled for that key. Others are left (a
    warning names them)."""
    user = current_user()
    allowed = set(owners) if owners is not None else {user}
    found: dict[str, list[str]] = {}
    for key, job_id, owner, script in rows:
        if key not in keys or not job_id:
            continue
        if owner not in allowed or os.path.normpath(script) != os.path.normpath(keys[key]):
            log.warning(
                "%s job %s carries the submission key %s of this journal but is not its job (owner %r, script %r; "
                "expected %r, %r): not adopted",
                what,
                job_id[:80],
                key,
                owner[:80],
                script[:300],
                user,
                keys[key],
            )
            continue
        if job_id not in found.setdefault(key, []):
            found[key].append(job_id)
    return found


def describe(status: JobStatus) -> str:
    """``NATIVE: reason`` of a status, for failure details."""
    return f"{status.native}{': ' + status.reason if status.reason else ''}"


class Scheduler(BaseScheduler):
    """A batch system driven by commands: subclasses build argv and parse text, this class runs them.

    Write ``submit_argv``/``parse_submit``, ``status_argv``/``parse_status`` and ``kill_argv`` (and
    optionally ``history_argv``/``parse_history`` for jobs that left the queue, ``release_argv``,
    ``harmless_kill_error``); :meth:`submit`, :meth:`query` and :meth:`kill` compose them, one command
    per call for all the jobs asked about.  Parsers are pure functions of a :class:`CommandResult`, so
    they are tested on captured output.
    """

    # -- pure parts, per scheduler -------------------------------------
    @abc.abstractmethod
    def submit_argv(self, spec: JobSpec) -> list[str]:
        """The submit command for ``spec`` (its job script is ``spec.script_path``)."""

    @abc.abstractmethod
    def parse_submit(self, result: CommandResult) -> str:
        """The job id in the submit command's output; :func:`submit_error` when there is none."""

    @abc.abstractmethod
    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        """ONE command that asks about all ``job_ids``."""

    @abc.abstractmethod
    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the jobs the scheduler still lists; missing ids are absent."""

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """ONE command asking the accounting/history about jobs gone from the queue; None: no history."""
        return None

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {}

    @abc.abstractmethod
    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        """ONE command cancelling all ``job_ids``."""

    def release_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """argv that releases held jobs, where the batch system has holds."""
        return None

    def find_argv(self, keys: Sequence[str]) -> list[str] | None:
        """ONE command listing this user's jobs with their submission key (``spec.submit_key``), owner and job
        script, for :meth:`find_jobs`; None: the batch system cannot be asked (then nothing is adopted)."""
        return None

    def parse_find(self, result: CommandResult, keys: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        """``(key, job id, owner, script)`` of every job :meth:`find_argv` listed that carries a key."""
        return []

    def find_jobs(self, keys: Mapping[str, str]) -> dict[str, list[str]] | None:
        """See :meth:`BaseScheduler.find_jobs`: one :meth:`find_argv` command; what it prints is untrusted, so a
        job counts only with one of ``keys``, the submitting user as owner and the journaled job script."""
        if not keys:
            return {}
        argv = self.find_argv(list(keys))
        if argv is None:
            return None
        result = self._run(argv)
        try:
            rows = self.parse_find(result, keys)
        except SchedulerError:
            raise
        except Exception as exc:  # noqa: BLE001 - garbage in, a lookup error out
            raise SchedulerError(
                f"cannot read what {argv[0]} printed ({type(exc).__name__}: {str(exc)[:200]})",
                argv=argv,
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr,
                transient=True,
            ) from None
        return own_jobs(rows, keys, self.name)

    def release(self, job_ids: Sequence[str]) -> None:
        argv = self.release_argv(job_ids)
        if argv is None:
            raise SchedulerError(f"{self.name} has no way to release held jobs")
        self._run(argv)

    # -- composed operations -------------------------------------------
    def submit(self, spec: JobSpec) -> str:
        """Submit the job script of ``spec``; returns the job id."""
        argv = self.submit_argv(spec)
        try:
            result = self._run(argv)
        except SchedulerError as exc:
            raise SubmitError(str(exc), argv=argv, transient=exc.transient) from None
        try:
            return self.parse_submit(result)
        except SchedulerError:
            raise
        except Exception as exc:  # noqa: BLE001 - a parser choking on garbage is the scheduler's error
            raise SubmitError(
                f"cannot read what {argv[0]} printed ({type(exc).__name__}: {exc})",
                argv=argv,
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr or result.stdout[-2000:],
            ) from None

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of ``job_ids`` with one status call, plus one history call for those that left the queue."""
        if not job_ids:
            return {}
        argv = self.status_argv(job_ids)
        try:
            result = self._run(argv)
        except SchedulerError as exc:
            raise StatusQueryError(str(exc), argv=argv, transient=exc.transient) from None
        states = self._parsed(self.parse_status, result, job_ids)
        gone = [j for j in job_ids if j not in states]
        if gone:
            history = self.history_argv(gone)
            if history is not None:
                try:
                    states.update(self._parsed(self.parse_history, self._run(history), gone))
                except SchedulerError as exc:
                    raise StatusQueryError(str(exc), argv=history, transient=exc.transient) from None
        return {job_id: status for job_id, status in states.items() if job_id in job_ids}

    def _parsed(self, parse: Any, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``parse(result, job_ids)``; a parser that chokes on what the command printed is a transient
        StatusQueryError (asked again with back-off), never an exception out of the poller."""
        try:
            states = parse(result, job_ids)
        except SchedulerError:
            raise
        except Exception as exc:  # noqa: BLE001 - garbage in, a status error out
            raise StatusQueryError(
                f"cannot read what {result.argv[0]} printed ({type(exc).__name__}: {str(exc)[:200]})",
                argv=result.argv,
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr or result.stdout[-2000:],
                transient=True,
            ) from None
        if not isinstance(states, dict):
            raise StatusQueryError(f"{result.argv[0]}: the parser returned no states", argv=result.argv, transient=True)
        return states

    def kill(self, job_ids: Sequence[str]) -> None:
        """Cancel ``job_ids`` with one call; already-finished jobs are not an error."""
        if not job_ids:
            return
        result = self._run(self.kill_argv(job_ids))
        if result.exit_code != 0 and not self.harmless_kill_error(result):
            raise SchedulerError(
                f"{result.argv[0]} failed",
                argv=result.argv,
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr,
                transient=any(marker in result.stderr for marker in self.TRANSIENT_MARKERS),
            )

    # -- job arrays (additive: a scheduler that sets supports_arrays implements the three below) -------
    #: whether :meth:`submit_array` can send many job scripts as one array submission
    supports_arrays: ClassVar[bool] = False
    #: shell expression for the element's index inside an array job, and the index of the first element
    array_index: ClassVar[str] = ""
    array_first: ClassVar[int] = 0

    def array_directives(self, spec: JobSpec, count: int) -> list[str]:
        """Header lines of the array script of ``count`` elements (``spec.job_dir`` is the array's folder)."""
        return self.directives(spec)

    #: a separate submit description of the array (HTCondor), written into the array's folder under this name
    array_submit_file_name: ClassVar[str | None] = None

    def array_submit_file(self, spec: JobSpec, count: int) -> str | None:
        """Text of the array's submit description, if the scheduler uses one."""
        return None

    def array_submit_argv(self, spec: JobSpec, count: int) -> list[str]:
        """argv that submits ``spec.job_dir``/array.sh as ``count`` elements."""
        raise NotImplementedError

    def array_element_id(self, base_id: str, index: int) -> str:
        """The job id of element ``index`` of the array ``base_id`` (what status, history and kill take)."""
        raise NotImplementedError

    def submit_array(self, spec: JobSpec, count: int) -> list[str]:
        """Submit the array script in ``spec.job_dir`` once; returns the element ids in index order."""
        argv = self.array_submit_argv(spec, count)
        try:
            result = self._run(argv)
        except SchedulerError as exc:
            raise SubmitError(str(exc), argv=argv, transient=exc.transient) from None
        base = self.parse_submit(result)
        return [self.array_element_id(base, self.array_first + i) for i in range(count)]

    def harmless_kill_error(self, result: CommandResult) -> bool:
        """Whether a failed kill only says the jobs had ended already (such messages differ per scheduler)."""
        return False


#: the name the contract documentation uses for a command-driven scheduler
CommandScheduler = Scheduler


def submit_error(
    result: CommandResult,
    transient_markers: Sequence[str],
    hint: str,
    fixes: Sequence[tuple[str, str]] = (),
) -> SubmitError:
    """A refused submission; transient when the output shows one of ``transient_markers``.

    ``fixes`` are the scheduler's own refusal words (regular expressions) with
    the fix for each (a permanent refusal: asking again would not help); the
    first that matches replaces ``hint``.
    """
    import re

    said = result.stdout + result.stderr
    transient = any(marker in said for marker in transient_markers)
    if result.exit_code == 0 and not transient:
        hint = (
            "it exited 0 but printed no job id containerbatch understands (its output is below): the job may have "
            "been submitted anyway; look for it in the queue by its job name before running again"
        )
    for pattern, fix in fixes:
        if not transient and re.search(pattern, said, re.IGNORECASE):
            hint = fix
            break
    head = f"{result.argv[0]} gave no job id" if result.exit_code == 0 else f"{result.argv[0]} did not submit the job"
    return SubmitError(
        head + ("; the batch system did not answer, retrying may help" if transient else f"; {hint}"),
        argv=result.argv,
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr or result.stdout or "(no output)",
        transient=transient,
    )


def status_error(result: CommandResult, what: str) -> StatusQueryError:
    """A failed status command; transient unless clearly a usage error."""
    return StatusQueryError(
        f"{what} failed",
        argv=result.argv,
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        transient=True,
    )
