"""Scheduler ``slurm``: one ``sbatch --parsable job.sh`` per task.

Resources, job name and log paths are ``#SBATCH`` directives in job.sh rather
than sbatch options: the script alone then reproduces the job
(``sbatch job.sh`` by hand, ``scontrol write batch_script``) and
``containerbatch show`` shows one artefact.  Directive lines are parsed by
sbatch, not by a shell: words split on whitespace, ``'…'``/``"…"`` group, a
backslash escapes the next character, an unquoted ``#`` starts a comment, and
a line cannot continue -- :func:`directive_quote` writes for exactly that.

One poll is one ``squeue -t all`` call for every job of the run (``-t all``
keeps finished jobs visible until MinJobAge, so most ends need no history),
plus one ``sacct`` call for the ids that left the queue without a done-marker.
When accounting is disabled, that is remembered, and each such job is asked
once with ``scontrol show job`` (scontrol takes one id per call; it reads the
same table as squeue, so this rarely finds more).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from containerbatch import helpers
from containerbatch.errors import ConfigError, SchedulerError, StatusQueryError
from containerbatch.schedulers.base import CommandResult, Scheduler, current_user, status_error, submit_error
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

log = logging.getLogger(__name__)

S = JobState
#: Every state of https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES (sacct prints the same words).
STATE_MAP: dict[str, JobState] = {
    "PENDING": S.PENDING,  # PD: waiting for resources
    "CONFIGURING": S.PENDING,  # CF: allocated, nodes still booting/configuring
    "REQUEUED": S.PENDING,  # RQ: completing job being requeued: it will run again
    "REQUEUE_FED": S.PENDING,  # RF: requeued by its federation
    "RESIZING": S.RUNNING,  # RS: job is about to change size
    "RUNNING": S.RUNNING,  # R: has an allocation
    "COMPLETING": S.RUNNING,  # CG: finishing, some processes still active: not ended yet
    "SIGNALING": S.RUNNING,  # SI: being signalled
    "STAGE_OUT": S.RUNNING,  # SO: staging out data (burst buffer)
    "SUSPENDED": S.SUSPENDED,  # S: running job stopped, CPUs released
    "STOPPED": S.SUSPENDED,  # ST: running job stopped (SIGSTOP), CPUs retained
    "REQUEUE_HOLD": S.HELD,  # RH: requeued and held
    "RESV_DEL_HOLD": S.HELD,  # RD: held because its reservation was deleted
    "SPECIAL_EXIT": S.HELD,  # SE: requeued in a special state (held) after a special exit value
    "COMPLETED": S.COMPLETED,  # CD: all processes ended with exit code 0
    "FAILED": S.FAILED,  # F: non-zero exit code or other failure
    "BOOT_FAIL": S.FAILED,  # BF: launch failure, e.g. a node would not boot
    "NODE_FAIL": S.FAILED,  # NF: an allocated node failed (native word kept for the classifier)
    "OUT_OF_MEMORY": S.FAILED,  # OOM: exceeded its memory limit (native word kept)
    "PREEMPTED": S.CANCELLED,  # PR: preempted by another job (native word kept)
    "CANCELLED": S.CANCELLED,  # CA: scancel by user or administrator (sacct: "CANCELLED by UID")
    "REVOKED": S.CANCELLED,  # RV: sibling removed because another cluster of the federation started it
    "DEADLINE": S.TIMEOUT,  # DL: would not finish before its --deadline
    "TIMEOUT": S.TIMEOUT,  # TO: reached its time limit
}
#: sbatch's permanent refusals and their fix
_SUBMIT_FIXES = (
    (r"invalid partition", "the partition does not exist: `sinfo -s` lists them; set resources={'partition': ...}"),
    (
        r"invalid account",
        "the account (or account/partition pair) is not yours: `sacctmgr show assoc user=$USER "
        "format=account,partition` lists yours; set resources={'account': ...}",
    ),
    (r"invalid qos", "the QOS is not allowed: `sacctmgr show assoc user=$USER format=qos`; check slurm_extra_args"),
    (
        r"requested node configuration is not available|memory specification",
        "no node can give what is asked: lower resources memory/cpus/gpus (`sinfo -o '%P %m %c %G'` shows the nodes)",
    ),
    (r"time limit", "the walltime exceeds the partition's limit: `sinfo -o '%P %l'`; lower resources walltime"),
)
_TRANSIENT = ("Socket timed out", "Unable to contact slurm controller", "temporarily unable", "Connection refused")
#: Slurm's words for why a job failed (native states; see STATE_MAP's link)
FAILURE_WORDS: dict[str, Reason] = {
    "OUT_OF_MEMORY": Reason.OUT_OF_MEMORY,
    "OOM": Reason.OUT_OF_MEMORY,
    "TIMEOUT": Reason.WALLTIME,
    "DEADLINE": Reason.WALLTIME,
    "NODE_FAIL": Reason.NODE_FAILURE,
    "BOOT_FAIL": Reason.NODE_FAILURE,
    "PREEMPTED": Reason.PREEMPTED,
    "CANCELLED": Reason.CANCELLED,
}


def directive_quote(value: object) -> str:
    """Quote one word for an ``#SBATCH`` line (:func:`containerbatch.helpers.directive_quote`).

    >>> directive_quote("--mem=4M"), directive_quote('--comment=a "b" #c')
    ('--mem=4M', '"--comment=a \\\\"b\\\\" #c"')
    """
    return helpers.directive_quote(value, "#SBATCH", setting="slurm")


def format_walltime(seconds: int) -> str:
    """``D-HH:MM:SS`` for ``--time`` (Slurm rounds seconds up to whole minutes).

    >>> format_walltime(5400), format_walltime(93600)
    ('1:30:00', '1-02:00:00')
    """
    return helpers.hms(seconds, days=True)


def _log_path(path: str) -> str:
    if "\\" in path:  # a backslash turns Slurm's %-patterns off; refuse rather than guess
        raise ConfigError(
            f"log path {path} contains a backslash, which Slurm treats specially; rename the folder", setting="log_dir"
        )
    return path.replace("%", "%%")  # %j, %x… are patterns: keep a literal %


def _base_id(job_id: str) -> str:
    return job_id.split("_", 1)[0].split(";", 1)[0].split(".", 1)[0].strip()


def _row_keys(text: str) -> list[str]:
    """The ids a squeue/sacct row answers for: ``123``; ``123_4`` and ``123``; ``123_[5-7,9%2]`` each element.

    >>> _row_keys("123_[5-6,9%2].batch")
    ['123', '123_5', '123_6', '123_9']
    """
    whole = text.strip().split(";", 1)[0]
    base = _base_id(whole)
    keys = [base]
    if "_" not in whole:
        return keys
    element = whole.split("_", 1)[1].split(".", 1)[0]
    if element.isdigit():
        return [*keys, f"{base}_{element}"]
    match = re.fullmatch(r"\[([0-9,\-]+)(?:%\d+)?\]", element)
    if not match:
        return keys
    for part in match.group(1).split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            start, stop = int(low), int(high or low)
            keys += [f"{base}_{i}" for i in range(start, min(stop, start + 100000) + 1)]
    return keys


def _exit_code(text: str) -> int | None:
    """``exit:signal`` → the shell's view: the exit code, or 128+signal."""
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not match:
        return None
    code, sig = int(match.group(1)), int(match.group(2))
    return 128 + sig if sig else code


class SlurmScheduler(Scheduler):
    """Slurm through sbatch, squeue, sacct, scontrol and scancel."""

    name = "slurm"
    commands = ("sbatch", "squeue", "scancel")
    DOCS_URL = "https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES"
    TRANSIENT_MARKERS = _TRANSIENT
    STATE_MAP = STATE_MAP
    FAILURE_WORDS = FAILURE_WORDS
    default_poll_interval = 30.0

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        super().__init__(settings)
        self.accounting = True  # False once sacct said accounting storage is disabled
        self._scontrol_asked: set[str] = set()

    # -- submission -----------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        opts = [
            f"--job-name={helpers.job_name(spec.job_name, max_length=128)}",
            f"--output={_log_path(spec.stdout_path)}",
            f"--error={_log_path(spec.stderr_path)}",
            f"--chdir={spec.working_dir}",
        ]
        opts += helpers.map_resources(
            spec.resources,
            self.name,
            memory_mb="--mem={}M",
            cpus="--cpus-per-task={}",
            walltime_s=lambda s: f"--time={format_walltime(s)}",
            gpus="--gres=gpu:{}",
            disk_mb="--tmp={}M",
            queue="--partition={}",
            account="--account={}",
        )
        opts += helpers.extra_args(spec, "slurm_extra_args", "sbatch")
        if spec.submit_key:  # last: squeue lists it (%k) for find_jobs
            opts.append(f"--comment={spec.submit_key}")
        return [f"#SBATCH {directive_quote(o)}" for o in opts]

    def submit_argv(self, spec: JobSpec) -> list[str]:
        return ["sbatch", "--parsable", spec.script_path]

    # -- arrays: sbatch --array; element ids 123_4, one squeue -r row each ------
    supports_arrays = True
    array_index = '"${SLURM_ARRAY_TASK_ID:-}"'
    array_first = 0

    def array_directives(self, spec: JobSpec, count: int) -> list[str]:
        return [*self.directives(spec), f"#SBATCH --array=0-{count - 1}", "#SBATCH --open-mode=append"]

    def array_submit_argv(self, spec: JobSpec, count: int) -> list[str]:
        return ["sbatch", "--parsable", f"{spec.job_dir}/array.sh"]

    def array_element_id(self, base_id: str, index: int) -> str:
        return f"{base_id}_{index}"

    def parse_submit(self, result: CommandResult) -> str:
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        job_id = first.split(";", 1)[0].strip()  # "123" or "123;cluster"
        if result.exit_code != 0 or not job_id.isdigit():
            raise submit_error(
                result, _TRANSIENT, "see stderr; `containerbatch show` prints the directives", _SUBMIT_FIXES
            )
        return job_id

    # -- status ---------------------------------------------------------------
    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        # -r: one row per array element (pending ones too); an array is asked by its base id
        ids = dict.fromkeys(_base_id(j) if "_" in j else j for j in job_ids)
        return ["squeue", "-h", "-a", "-r", "-t", "all", "-o", "%i %T %r", "-j", ",".join(ids)]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.exit_code != 0:
            if "Invalid job id specified" in result.stderr:
                return {}  # exactly one id asked and it is unknown: absent, not an error
            raise status_error(result, "squeue")
        rows: dict[str, list[JobStatus]] = {}
        for line in result.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                reason = parts[2].strip() if len(parts) > 2 and parts[2].strip() != "None" else ""
                status = self.map_state(parts[1], None, reason)
                for key in _row_keys(parts[0]):
                    rows.setdefault(key, []).append(status)
        return {job: _combine(rows[job]) for job in job_ids if job in rows}

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,ExitCode"]

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.exit_code != 0:
            raise status_error(result, "sacct")
        rows: dict[str, list[JobStatus]] = {}
        for line in result.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[1].strip():
                native, _, by = parts[1].strip().partition(" ")  # "CANCELLED by 1000"
                status = self.map_state(native, _exit_code(parts[2]), by)
                for key in _row_keys(parts[0]):
                    rows.setdefault(key, []).append(status)
        return {job: _combine(rows[job]) for job in job_ids if job in rows}

    def parse_scontrol(self, result: CommandResult) -> JobStatus | None:
        """``scontrol show job [-o] ID``: None for an unknown (purged) id."""
        if result.exit_code != 0:
            if "Invalid job id specified" in result.stderr:
                return None
            raise status_error(result, "scontrol")
        fields = dict(re.findall(r"(\w+)=(\S*)", result.stdout))
        if "JobState" not in fields:
            return None
        reason = fields.get("Reason", "")
        return self.map_state(
            fields["JobState"], _exit_code(fields.get("ExitCode", "")), "" if reason == "None" else reason
        )

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        states = self.parse_status(self._ask(self.status_argv(job_ids)), job_ids)
        gone = [j for j in job_ids if j not in states]
        if gone and self.accounting:
            result = self._ask(self.history_argv(gone) or [])
            if result.exit_code != 0 and "accounting storage is disabled" in result.stderr:
                log.info("Slurm accounting is disabled; jobs gone from squeue are asked with scontrol, once each")
                self.accounting = False
            else:
                states.update(self.parse_history(result, gone))
                return states
        for job_id in gone:
            if job_id not in self._scontrol_asked:
                self._scontrol_asked.add(job_id)
                status = self.parse_scontrol(self._ask(["scontrol", "show", "job", "-o", job_id]))
                if status is not None:
                    states[job_id] = status
        return states

    def _ask(self, argv: list[str]) -> CommandResult:
        try:
            result = self._run(argv)
        except SchedulerError as exc:
            raise StatusQueryError(str(exc), argv=argv, transient=exc.transient) from None
        return result

    # -- finding a job whose id was never journaled: the submission key is its --comment -----------
    def find_argv(self, keys: Sequence[str]) -> list[str]:
        # the user's jobs, finished ones too (-t all keeps them until MinJobAge); an array is one row per
        # pending range and one per running element, all under its base id
        return ["squeue", "-h", "-a", "-t", "all", "-u", current_user(), "-o", "%i|%u|%k|%o"]

    def parse_find(self, result: CommandResult, keys: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        if result.exit_code != 0:
            raise status_error(result, "squeue")
        rows = []
        for line in result.stdout.splitlines():
            parts = line.split("|", 3)  # the command (the script path) comes last: it may hold a |
            if len(parts) == 4 and parts[2].strip() in keys:
                rows.append((parts[2].strip(), _base_id(parts[0]), parts[1].strip(), parts[3]))
        return rows

    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["scancel", *job_ids]

    def probe_argv(self) -> list[str]:
        return ["sinfo", "--noheader", "--format=%P %a"]

    def release_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["scontrol", "release", ",".join(job_ids)]


_RANK = {
    S.RUNNING: 0,
    S.SUSPENDED: 1,
    S.HELD: 2,
    S.PENDING: 3,
    S.UNKNOWN: 4,
    S.FAILED: 5,
    S.TIMEOUT: 6,
    S.CANCELLED: 7,
    S.LOST: 8,
    S.COMPLETED: 9,
}


def _combine(rows: list[JobStatus]) -> JobStatus:
    """Rows of one job (array elements): alive while any element is, else the worst end."""
    return min(rows, key=lambda s: _RANK[s.state])
