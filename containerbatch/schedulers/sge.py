"""Scheduler ``sge``: (Son of / Sun / Open) Grid Engine through ``qsub``, ``qstat``, ``qacct``, ``qdel``, ``qrls``.

Written only against the public plugin contract (:mod:`containerbatch.schedulers.base`,
:mod:`containerbatch.helpers`, :mod:`containerbatch.settings`) and registered by its entry point, like a
third-party plugin would be; tested with the contract kit (:mod:`containerbatch.testing`) and live
against Grid Engine 8.1.9 (Debian's gridengine packages, ``ci/sge``).

* Submit: ``qsub -terse -N NAME -o stdout -e stderr -wd DIR -S /bin/bash -j n [-q Q] [-A ACCOUNT]
  [-l h_rt=H:MM:SS] [-pe smp N] [-l h_vmem=M] [-l gpu=G] [sge_extra_args…] job.sh``.  ``-S`` because
  Grid Engine ignores the shebang otherwise; the script is submitted as a file (not ``-b y``, which
  loses argument quoting unless ``-shell no``).  Memory is per slot in Grid Engine (``h_vmem`` times
  the slots of ``-pe``), so the request is divided by the cpus.  ``-o``/``-e`` read ``host:path`` and
  ``$VARIABLE``, so a job folder with ``:`` or ``$`` is refused before submission.
* Status: ONE ``qstat -xml`` per poll (the submitting user's jobs; ``qstat -j`` is not used, as it
  exits 0 for unknown ids).
* Jobs gone from qstat: ``qacct -j ID`` each (qacct takes one id), at most ``HISTORY_BATCH`` per
  poll.  A job that just ended is briefly in neither (accounting is flushed every ``flush_time``): it
  is absent this round and asked again on the next.  ``failed`` tells why a job ended
  (``https://manpages.debian.org/bookworm/gridengine-common/sge_status.5.en.html``): 37 is the
  qmaster enforcing ``h_rt`` (exit 137), 100 with exit 137 is ``qdel`` of a running job.
* ``qdel ids…`` in one call; "does not exist" means it ended already.  ``qrls ids…`` releases holds.
"""

from __future__ import annotations

import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from containerbatch import helpers
from containerbatch.errors import ConfigError, SchedulerError, StatusQueryError
from containerbatch.schedulers.base import (
    CommandResult,
    Scheduler,
    current_user,
    own_jobs,
    status_error,
    submit_error,
)
from containerbatch.settings import plugin_setting
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

log = logging.getLogger(__name__)

#: the job context variable (``qsub -ac``) that carries the submission key
KEY_VARIABLE = "cb_submit_key"

S = JobState
#: every state of sge_status(5) (https://manpages.debian.org/bookworm/gridengine-common/sge_status.5.en.html)
STATE_MAP: dict[str, JobState] = {
    "qw": S.PENDING,  # pending
    "Rq": S.PENDING,  # pending, re-queued
    "hqw": S.HELD,  # pending, user and/or system hold (qrls releases)
    "hRwq": S.HELD,  # pending, hold, re-queued
    "r": S.RUNNING,  # running
    "hr": S.RUNNING,  # running, a hold set while it runs (affects only a re-run)
    "t": S.RUNNING,  # transferring to the execution host
    "Rr": S.RUNNING,  # running again after a re-run
    "Rt": S.RUNNING,  # transferring again after a re-run
    "s": S.SUSPENDED,  # job suspended (qmod -sj)
    "ts": S.SUSPENDED,
    "S": S.SUSPENDED,  # queue suspended
    "tS": S.SUSPENDED,
    "T": S.SUSPENDED,  # queue suspended by alarm (suspend_thresholds)
    "tT": S.SUSPENDED,
    "Rs": S.SUSPENDED,
    "Rts": S.SUSPENDED,
    "RS": S.SUSPENDED,
    "RtS": S.SUSPENDED,
    "RT": S.SUSPENDED,
    "RtT": S.SUSPENDED,
    "Eqw": S.HELD,  # pending in error state: waits for `qmod -cj ID` (held_timeout/held_action apply)
    "Ehqw": S.HELD,
    "EhRqw": S.HELD,
    # being deleted: still on the node until its processes are gone (the end comes from qacct)
    "dr": S.RUNNING,
    "dt": S.RUNNING,
    "dRr": S.RUNNING,
    "dRt": S.RUNNING,
    "ds": S.RUNNING,
    "dS": S.RUNNING,
    "dT": S.RUNNING,
    "dRs": S.RUNNING,
    "dRS": S.RUNNING,
    "dRT": S.RUNNING,
    "z": S.COMPLETED,  # finished (qstat -s z), exit code unknown: qacct tells
}

#: qacct ``failed`` codes (sge_status(5)) → reason.  A job that never started is the node's problem.
FAILED_CODES: dict[int, Reason] = {
    **{code: Reason.NODE_FAILURE for code in (1, 3, 4, 6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 26, 27, 28, 29, 36, 38)},
    17: Reason.CANCELLED,  # through signal (possibly qdel)
    24: Reason.PREEMPTED,  # migrating (checkpointing jobs)
    25: Reason.PREEMPTED,  # rescheduling
    37: Reason.WALLTIME,  # qmaster enforced h_rt, h_cpu, or h_vmem limit
    100: Reason.CANCELLED,  # assumedly after job: with exit 137, qdel of a running job
}
_TRANSIENT = (
    "unable to contact qmaster",
    "commlib error",
    "failed receiving gdi request",
    "unable to send message",
    "got send error",
    "can't unpack gdi request",
    "qmaster is not alive",
)
_NOT_FOUND = re.compile(r'does not exist|not found|already in deletion|has already been deleted|denied: job "\d+"')
_LINE = re.compile(r"[\n\r\0]")


class SGEScheduler(Scheduler):
    """Grid Engine (SGE 6.2 / Son of Grid Engine 8.1 / Open Grid Scheduler)."""

    name = "sge"
    commands = ("qsub", "qstat", "qacct", "qdel")
    DOCS_URL = "https://manpages.debian.org/bookworm/gridengine-common/sge_status.5.en.html"
    STATE_MAP = STATE_MAP
    TRANSIENT_MARKERS = _TRANSIENT
    default_poll_interval = 30.0
    #: qacct calls per poll at most (each reads the accounting file); the rest wait for the next poll
    HISTORY_BATCH = 20
    SETTINGS = (
        plugin_setting("sge_pe", "str", "smp", "Parallel environment that carries cpus > 1 (qsub -pe NAME N)."),
        plugin_setting(
            "sge_memory_resource",
            "str",
            "h_vmem",
            "Complex that carries memory (qsub -l NAME=…M); per slot, so the request is divided by the cpus.",
        ),
        plugin_setting("sge_gpu_resource", "str", "gpu", "Complex that carries gpus (qsub -l NAME=N)."),
        plugin_setting(
            "sge_extra_args",
            "list[str]",
            [],
            'Extra qsub options, one word per item, values as their own items (e.g. ["-P", "myproject"]).',
        ),
    )

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        super().__init__(settings)
        self._unseen: dict[str, int] = {}  # id → polls in which neither qstat nor qacct knew it

    # -- submit ----------------------------------------------------------------
    def check(self, spec: JobSpec) -> None:
        for what, path in (("stdout", spec.stdout_path), ("stderr", spec.stderr_path)):
            if ":" in path or "$" in path:
                raise ConfigError(
                    f"the job's {what} file {path} has ':' or '$', which qsub -o/-e read as host:path and "
                    "$VARIABLES; choose a log_dir/working_dir without them",
                    setting="log_dir",
                    task=spec.task_id,
                )
        res = spec.resources
        for what, value in (("queue", res.queue), ("account", res.account)):
            if value is not None and _LINE.search(value):
                raise ConfigError(f"{what} {value!r} has a line break", setting="resources", task=spec.task_id)
        for item in self._extra(spec):
            if _LINE.search(item):
                raise ConfigError(f"{item!r} has a line break", setting="sge_extra_args", task=spec.task_id)

    @staticmethod
    def _extra(spec: JobSpec) -> list[str]:
        """sge_extra_args: options with their values as separate words, so only the first must be an option."""
        items = [str(item) for item in spec.settings.get("sge_extra_args") or []]
        if items and not items[0].startswith("-"):
            raise ConfigError(
                f"sge_extra_args must start with a qsub option ('-…'), not {items[0]!r}; a stray word would "
                "become the job script",
                setting="sge_extra_args",
                task=spec.task_id,
            )
        return items

    def submit_argv(self, spec: JobSpec) -> list[str]:
        self.check(spec)
        res = spec.resources
        settings = spec.settings
        slots = res.cpus if res.cpus and res.cpus > 1 else 1
        argv = [
            "qsub",
            "-terse",
            "-N",
            helpers.job_name(spec.job_name, allowed=r"A-Za-z0-9_.-", max_length=200, letter_first=True),
            "-o",
            spec.stdout_path,
            "-e",
            spec.stderr_path,
            "-wd",
            spec.working_dir,
            "-S",
            "/bin/bash",
            "-j",
            "n",
        ]
        argv += helpers.map_resources(
            res,
            self.name,
            ignore=("disk_mb",),
            queue="-q {}",
            account="-A {}",
            walltime_s=lambda s: ["-l", f"h_rt={helpers.hms(s)}"],
            cpus=lambda n: ["-pe", str(settings.get("sge_pe") or "smp"), str(n)] if n > 1 else [],
            memory_mb=lambda mb: [
                "-l",
                f"{settings.get('sge_memory_resource') or 'h_vmem'}={helpers.memory_in(mb, 'M', per=slots)}M",
            ],
            gpus=lambda n: ["-l", f"{settings.get('sge_gpu_resource') or 'gpu'}={n}"],
        )
        argv += self._extra(spec)
        if spec.submit_key:  # the job's context: `qstat -j` shows it (find_jobs)
            argv += ["-ac", f"{KEY_VARIABLE}={spec.submit_key}"]
        return [*argv, spec.script_path]

    def parse_submit(self, result: CommandResult) -> str:
        first = result.stdout.strip().splitlines()[0].strip() if result.stdout.strip() else ""
        job_id = first.split(".", 1)[0]  # "123", or "123.1-4:1" for an array
        if result.exit_code != 0 or not job_id.isdigit():
            raise submit_error(result, _TRANSIENT, "see stderr; `containerbatch show` prints the qsub command")
        return job_id

    # -- status ----------------------------------------------------------------
    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-xml"]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if result.exit_code != 0:
            raise status_error(result, "qstat -xml")
        text = result.stdout
        start = text.find("<")
        try:
            root = ET.fromstring(text[start:]) if start >= 0 else None
        except ET.ParseError:
            root = None
        if root is None:
            raise status_error(result, "qstat -xml (unreadable answer)")
        wanted = set(job_ids)
        rows: dict[str, list[JobStatus]] = {}
        for job in root.iter("job_list"):
            number = (job.findtext("JB_job_number") or "").strip()
            if number not in wanted:
                continue
            native = (job.findtext("state") or "").strip()
            reason = "error state: `qmod -cj ID` clears it once the cause is fixed" if "E" in native else ""
            rows.setdefault(number, []).append(self.map_state(native, None, reason))
        return {job: min(found, key=lambda s: _RANK[s.state]) for job, found in rows.items()}

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return ["qacct", "-j", job_ids[0]]  # one id per call: qacct -j takes one

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``qacct -j ID``: the last record of the job (a rescheduled job has one per run)."""
        if result.exit_code != 0:
            if re.search(r"job id \S+ not found", result.stderr + result.stdout):
                return {}
            raise status_error(result, "qacct")
        states: dict[str, JobStatus] = {}
        for block in re.split(r"(?m)^={10,}\s*$", result.stdout):
            fields = dict((m.group(1), m.group(2).strip()) for m in re.finditer(r"(?m)^(\w+)\s+(.*?)\s*$", block) if m)
            number = fields.get("jobnumber", "")
            if number not in job_ids:
                continue
            states[number] = self.status_of(fields.get("failed", ""), fields.get("exit_status", ""))
        return states

    def status_of(self, failed: str, exit_status: str) -> JobStatus:
        """One accounting record → JobStatus (``failed`` like ``37  : qmaster enforced h_rt…``)."""
        code_text, _, why = failed.partition(":")
        code = int(code_text) if code_text.strip().isdigit() else None
        exit_match = re.match(r"\d+", exit_status)
        exit_code = int(exit_match.group(0)) if exit_match else None
        native = f"failed {code}" if code is not None else "finished"
        reason = why.strip()
        if code == 0 or code is None:
            state = S.COMPLETED if exit_code == 0 else S.FAILED
        elif code == 37:
            state = S.TIMEOUT
        elif FAILED_CODES.get(code) == Reason.CANCELLED:
            state = S.CANCELLED
        else:
            state = S.FAILED
        return JobStatus(state, native, exit_code, reason)

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        states = self.parse_status(self._ask(self.status_argv(job_ids)), job_ids)
        gone = [j for j in job_ids if j not in states]
        for job_id in gone[: self.HISTORY_BATCH]:
            found = self.parse_history(self._ask(["qacct", "-j", job_id]), [job_id])
            if job_id in found:
                states[job_id] = found[job_id]
                self._unseen.pop(job_id, None)
            else:  # ended a moment ago: accounting not flushed yet; asked again next poll
                self._unseen[job_id] = self._unseen.get(job_id, 0) + 1
                if self._unseen[job_id] == 1 and len(gone) == 1:
                    time.sleep(1.0)  # one job (often the "why did it end" question): one quick retry
                    found = self.parse_history(self._ask(["qacct", "-j", job_id]), [job_id])
                    states.update(found)
        return states

    # -- finding a job whose id was never journaled: the submission key is in its context (-ac) ------------
    def find_jobs(self, keys: Mapping[str, str]) -> dict[str, list[str]] | None:
        """The user's jobs from ``qstat -xml`` (one call), then ``qstat -j`` of all of them (one call): the
        context holds the key, ``script_file`` the job script, ``owner`` the user (untrusted, checked)."""
        if not keys:
            return {}
        listed = self._run(["qstat", "-xml", "-u", current_user()])
        if listed.exit_code != 0:
            raise status_error(listed, "qstat -xml")
        ids = sorted(set(re.findall(r"<JB_job_number>\s*(\d+)\s*</JB_job_number>", listed.stdout)), key=int)
        if not ids:
            return {}
        return own_jobs(self.parse_find(self._run(["qstat", "-j", ",".join(ids)]), keys), keys, self.name)

    def parse_find(self, result: CommandResult, keys: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        """``qstat -j IDS``: blocks of ``name: value`` lines, one block per job (``job_number`` first)."""
        rows = []
        for block in re.split(r"^=+\s*$", result.stdout, flags=re.M):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                name, sep, value = line.partition(":")
                if sep and name.strip() and name.strip() not in fields:
                    fields[name.strip()] = value.strip()
            context = dict(item.partition("=")[::2] for item in fields.get("context", "").split(",") if "=" in item)
            key = context.get(KEY_VARIABLE, "").strip()
            if key in keys and fields.get("job_number", "").isdigit():
                rows.append((key, fields["job_number"], fields.get("owner", ""), fields.get("script_file", "")))
        return rows

    def _ask(self, argv: list[str]) -> CommandResult:
        try:
            result = self._run(argv)
        except SchedulerError as exc:
            raise StatusQueryError(str(exc), argv=argv, transient=exc.transient) from None
        return result

    def classify_failure(self, status: JobStatus) -> tuple[Reason, str] | None:
        match = re.fullmatch(r"failed (\d+)", status.native)
        if not match or int(match.group(1)) not in FAILED_CODES:
            return None
        code = int(match.group(1))
        return FAILED_CODES[code], f"qacct failed {code}: {status.reason or 'see sge_status(5)'}"

    # -- kill, release, probe --------------------------------------------------------
    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qdel", *job_ids]

    def harmless_kill_error(self, result: CommandResult) -> bool:
        lines = [ln for ln in (result.stderr + "\n" + result.stdout).splitlines() if ln.strip()]
        done = ("registered the job", "has deleted job")  # what qdel says for the ids it did cancel
        return bool(lines) and all(_NOT_FOUND.search(line) or any(d in line for d in done) for line in lines)

    def release_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["qrls", *job_ids]

    def probe_argv(self) -> list[str]:
        return ["qstat", "-g", "c"]


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
