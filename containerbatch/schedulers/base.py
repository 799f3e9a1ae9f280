"""The Scheduler interface and the one place that runs scheduler commands.

A scheduler subclass is declarative: it builds argv and parses text
(``submit_argv``/``parse_submit``, ``status_argv``/``parse_status``,
``history_argv``/``parse_history``, ``kill_argv``) and keeps a ``STATE_MAP``
from its native states.  This base owns subprocess (``_run``: argument lists,
a timeout every time, output drained), and composes the calls; the poller owns
retries and timing.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from containerbatch.errors import SchedulerError, StatusQueryError, SubmitError
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus

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


def _text(data: bytes | str | None) -> str:
    """Decode a command's output: UTF-8, undecodable bytes replaced, NULs dropped, bounded."""
    if data is None:
        return ""
    text = data[:MAX_OUTPUT].decode("utf-8", errors="replace") if isinstance(data, bytes) else data[:MAX_OUTPUT]
    return text.replace("\0", "")


class Scheduler:
    """A batch system.

    Subclasses set ``name``, ``commands``, ``DOCS_URL``, ``STATE_MAP`` and
    implement the argv builders and parsers.
    """

    name: ClassVar[str] = ""
    commands: ClassVar[tuple[str, ...]] = ()
    DOCS_URL: ClassVar[str] = ""
    STATE_MAP: ClassVar[Mapping[str, JobState]] = {}
    default_poll_interval: ClassVar[float] = 30.0
    #: output fragments that mean "ask again later" (controller down, timeouts)
    TRANSIENT_MARKERS: ClassVar[tuple[str, ...]] = ()
    #: whether the job script carries directives (``#SBATCH``…) or a submit file is rendered
    submit_file_name: ClassVar[str | None] = None

    def __init__(self, settings: Mapping[str, object] | None = None) -> None:
        self.settings = dict(settings or {})
        self.timeout = float(self.settings.get("command_timeout") or 60.0)  # type: ignore[arg-type]

    # -- pure parts, per scheduler -------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        """Header lines of job.sh (``#SBATCH …``), already quoted."""
        return []

    def submit_file(self, spec: JobSpec) -> str | None:
        """Text of a separate submit description (HTCondor), if the scheduler uses one."""
        return None

    def check(self, spec: JobSpec) -> None:
        """Raise ConfigError for settings this batch system cannot carry (called before anything is submitted)."""

    def runs_container(self, spec: JobSpec) -> bool:
        """Whether the batch system itself starts the container (then job.sh runs the plain runner)."""
        return False

    def release_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        """argv that releases held jobs, where the batch system has holds."""
        return None

    def release(self, job_ids: Sequence[str]) -> None:
        argv = self.release_argv(job_ids)
        if argv is None:
            raise SchedulerError(f"{self.name} has no way to release held jobs")
        self._run(argv)

    def submit_argv(self, spec: JobSpec) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, result: CommandResult) -> str:
        raise NotImplementedError

    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the jobs the scheduler still lists; missing ids are absent."""
        raise NotImplementedError

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return None

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {}

    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

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

    # -- composed operations -------------------------------------------
    def _run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        return run_command(argv, self.timeout, stdin)

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

    def harmless_kill_error(self, result: CommandResult) -> bool:
        """Whether a failed kill only says the jobs had ended already (such messages differ per scheduler)."""
        return False

    def available(self) -> tuple[bool, str]:
        """Whether this host can submit (for doctor and auto-detection)."""
        import shutil

        missing = [c for c in self.commands if shutil.which(c) is None]
        if missing:
            return False, f"missing {', '.join(missing)} on PATH"
        return True, ", ".join(shutil.which(c) or c for c in self.commands)

    def native_states(self) -> list[str]:
        return sorted(self.STATE_MAP)


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
