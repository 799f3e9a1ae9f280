"""Scheduler ``lsf``: IBM Spectrum LSF through ``bsub``, ``bjobs``, ``bhist`` and ``bkill``.

* Submit: ``bsub -J NAME -o stdout -e stderr [-q Q] [-P ACCOUNT] [-W [h:]m] [-n N] [-R "rusage[mem=M] …"]
  [-M M] [-gpu "num=G"] [lsf_extra_args…] job.sh``; memory in the site's unit (setting ``lsf_memory_unit``).
* Status: ONE ``bjobs -json -a -o "jobid stat exit_code exit_reason" ids…`` per poll for all jobs.  An LSF
  older than 10.1.0.2 has no ``-json``: the first query then fails, the scheduler remembers it and asks with
  ``-noheader … delimiter='^'`` from then on.
* Jobs that left ``bjobs -a`` (after CLEAN_PERIOD): ONE ``bhist -l -n 1 ids…``; its hard-wrapped long
  format is unwrapped before parsing, so no ``-UF`` (missing in old LSF) is needed.
* ``bkill ids…`` in one call; "already finished" and "No matching job" are not errors.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from containerbatch import helpers
from containerbatch.errors import StatusQueryError
from containerbatch.schedulers.base import CommandResult, Scheduler, current_user, status_error, submit_error
from containerbatch.settings import plugin_setting
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

log = logging.getLogger(__name__)

FIELDS = "jobid stat exit_code exit_reason"
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted to .*queue")
_NOT_FOUND = re.compile(
    r"Job <[^>]*>(?::| is) (?:not found|No matching job found|Job has already finished)"
    r"|No unfinished job found|No matching job found|No job found"
)
_TRANSIENT = (
    "non-LSF host rejected",
    "Cannot connect to LSF",
    "LSF is down",
    "not responding",
    "Failed in an LSF library call",
    "Please wait",
)
#: bsub's permanent refusals and their fix (bsub names the bad value itself)
_SUBMIT_FIXES = (
    (
        r"no such queue|queue does not exist",
        "the queue does not exist here: `bqueues` lists the queues; set "
        "resources={'queue': ...} (or CONTAINERBATCH_RESOURCES) to one of them",
    ),
    (
        r"project|not a valid account|user not in",
        "the project (-P, resources 'account') is not one you may use: `bugroup`/your site's docs list yours",
    ),
    (
        r"bad argument|illegal option|unknown option|invalid option",
        "bsub does not take one of the options: check "
        "lsf_extra_args and resources (`containerbatch show TASK` prints the command)",
    ),
    (
        r"memory|rusage|resource requirement",
        "the memory or resource request is refused: check resources and lsf_memory_unit (`containerbatch show TASK`)",
    ),
)
_CANCELLED = ("TERM_OWNER", "TERM_ADMIN", "TERM_FORCE_OWNER", "TERM_FORCE_ADMIN")
#: LSF's exit reasons (https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=bjobs-job-exit-reasons)
FAILURE_WORDS: dict[str, Reason] = {
    "TERM_MEMLIMIT": Reason.OUT_OF_MEMORY,
    "TERM_RUNLIMIT": Reason.WALLTIME,
    "TERM_CPULIMIT": Reason.WALLTIME,
    "TERM_PREEMPT": Reason.PREEMPTED,
    "TERM_OWNER": Reason.CANCELLED,
    "TERM_ADMIN": Reason.CANCELLED,
    "TERM_FORCE_OWNER": Reason.CANCELLED,
    "TERM_FORCE_ADMIN": Reason.CANCELLED,
    "TERM_HOST": Reason.NODE_FAILURE,
    "TERM_LOAD": Reason.NODE_FAILURE,
    "TERM_ZOMBIE": Reason.NODE_FAILURE,
    "TERM_REMOVE_HUNG_JOB": Reason.NODE_FAILURE,  # the host stopped answering; LSF removed the job
    "TERM_REQUEUE_ADMIN": Reason.PREEMPTED,
    "TERM_REQUEUE_OWNER": Reason.PREEMPTED,
}

#: ``-W`` value: whole minutes rounded up, as ``[h:]m``
lsf_duration = helpers.hours_minutes


def _command_path(command: str) -> str:
    """The script of a job's command as bjobs prints it (bsub was given one quoted word)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    return words[0] if len(words) == 1 else command


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object bjobs -json printed (LSF may print a line before it), or None when there is none."""
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _quiet(text: str) -> bool:
    """Whether ``text`` holds only "not found"-style messages (not an error for a status query)."""
    return all(_NOT_FOUND.search(line) for line in text.splitlines() if line.strip())


class LSFScheduler(Scheduler):
    """IBM Spectrum LSF."""

    name = "lsf"
    SETTINGS = (
        plugin_setting("lsf_extra_args", "list[str]", [], "Extra bsub options, one per item."),
        plugin_setting("lsf_memory_unit", "choice:KB|MB|GB", "MB", "Unit of -M and rusage[mem] at this LSF site."),
    )
    commands = ("bsub", "bjobs", "bkill", "bhist")
    # https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=execution-about-job-states
    DOCS_URL = "https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=execution-about-job-states"
    TRANSIENT_MARKERS = _TRANSIENT
    FAILURE_WORDS = FAILURE_WORDS
    STATE_MAP = {
        "PEND": JobState.PENDING,  # waiting in a queue to be scheduled
        "PROV": JobState.PENDING,  # dispatched to a host that is still being provisioned
        "WAIT": JobState.PENDING,  # chunk job member waiting for its turn
        "PSUSP": JobState.HELD,  # suspended by its owner or an admin while pending (bstop): waits for bresume
        "RUN": JobState.RUNNING,  # running
        "USUSP": JobState.SUSPENDED,  # suspended by its owner or an admin while running
        "SSUSP": JobState.SUSPENDED,  # suspended by LSF (load, run windows, preemption)
        "DONE": JobState.COMPLETED,  # exited with status 0
        "POST_DONE": JobState.COMPLETED,  # DONE and its post-execution processing succeeded
        "PDONE": JobState.COMPLETED,  # older name of POST_DONE
        "EXIT": JobState.FAILED,  # non-zero exit, killed, or limit reached (see exit_reason TERM_*)
        "POST_ERR": JobState.FAILED,  # post-execution processing failed
        "UNKWN": JobState.UNKNOWN,  # sbatchd of the host unreachable: the job may still run; not a failure
        "ZOMBI": JobState.UNKNOWN,  # killed while its host was unreachable; becomes EXIT once the host is back
    }

    def __init__(self, settings: dict[str, object] | None = None) -> None:
        super().__init__(settings)
        self.use_json = True  # set to False once bjobs turns out to lack -json

    # -- submit ----------------------------------------------------------------
    def submit_argv(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        # brackets in -J would make an array job
        name = helpers.job_name(spec.job_name, forbidden=r"\[\]", max_length=4094)
        argv = ["bsub", "-J", name, "-o", spec.stdout_path, "-e", spec.stderr_path]
        amount = None
        if res.memory_mb:
            amount = helpers.memory_in(res.memory_mb, str(spec.settings.get("lsf_memory_unit") or "MB"))
        argv += helpers.map_resources(
            res,
            self.name,
            ignore=("disk_mb", "gpus"),
            queue="-q {}",
            account="-P {}",
            walltime_s=lambda s: ["-W", lsf_duration(s)],
            cpus="-n {}",
            memory_mb=lambda _: ["-M", str(amount)],
        )
        select = [f"rusage[mem={amount}]"] if amount else []
        if res.cpus and res.cpus > 1:
            select.append("span[hosts=1]")  # one task: its slots on one host
        if select:
            argv += ["-R", " ".join(select)]
        if res.gpus:
            argv += ["-gpu", f"num={res.gpus}"]
        argv += [str(a) for a in spec.settings.get("lsf_extra_args") or []]
        if spec.submit_key:  # the job description: bjobs lists it (job_description) for find_jobs
            argv += ["-Jd", spec.submit_key]
        # bsub hands the command to /bin/sh on the node: the path is one quoted word (blanks, $(…), ;)
        return [*argv, shlex.quote(spec.script_path)]

    def parse_submit(self, result: CommandResult) -> str:
        match = _SUBMITTED.search(result.stdout)
        if result.exit_code == 0 and match:
            return match.group(1)
        raise submit_error(
            result,
            _TRANSIENT,
            "check the queue, resources and lsf_extra_args (`containerbatch show` prints the command)",
            _SUBMIT_FIXES,
        )

    # -- status ----------------------------------------------------------------
    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        fields, ids = FIELDS, list(job_ids)
        if any("[" in j for j in job_ids):  # array elements: asked by the array's id, told apart by jobindex
            fields, ids = f"{FIELDS} jobindex", list(dict.fromkeys(j.split("[", 1)[0] for j in job_ids))
        if self.use_json:
            return ["bjobs", "-json", "-a", "-o", fields, *ids]
        return ["bjobs", "-noheader", "-a", "-o", f"{fields} delimiter='^'", *ids]

    # -- arrays: bsub -J "name[1-N]"; element ids ID[i]; LSB_JOBINDEX picks the element ------------
    supports_arrays = True
    array_index = '"${LSB_JOBINDEX:-}"'
    array_first = 1

    def array_directives(self, spec: JobSpec, count: int) -> list[str]:
        return []

    def array_submit_argv(self, spec: JobSpec, count: int) -> list[str]:
        argv = self.submit_argv(spec)
        argv[argv.index("-J") + 1] += f"[1-{count}]"
        argv[argv.index("-o") + 1] = f"{spec.job_dir}/stdout.%I"
        argv[argv.index("-e") + 1] = f"{spec.job_dir}/stderr.%I"
        return [*argv[:-1], shlex.quote(f"{spec.job_dir}/array.sh")]  # a shell word, as the job script

    def array_element_id(self, base_id: str, index: int) -> str:
        return f"{base_id}[{index}]"

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if "-json" in result.argv:
            return self._parse_json(result, job_ids)
        return self._parse_delimited(result)

    def _parse_json(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        data = _json_object(result.stdout)
        if data is None:
            text = result.stdout + result.stderr
            if result.exit_code != 0 and "json" in text.lower() and not _quiet(text):
                self.use_json = False  # an LSF before 10.1.0.2; ask the old way from now on
                log.info("bjobs has no -json here; using bjobs -noheader -o … delimiter='^' instead")
                raise StatusQueryError(
                    "bjobs does not know -json; asking again with -noheader",
                    argv=result.argv,
                    exit_code=result.exit_code,
                    stderr=text,
                    transient=True,
                )
            if not result.stdout.strip() and _quiet(result.stderr):
                return {}
            raise status_error(result, "bjobs -json (unreadable answer)")
        states = {}
        records = [r for r in data.get("RECORDS") or [] if isinstance(r, dict)]
        for record in records:
            job_id = record.get("JOBID") or (job_ids[0] if len(job_ids) == 1 == len(records) else None)
            if record.get("ERROR") or not job_id:
                continue  # {"JOBID": "13", "ERROR": "Job <13> is not found"}: absent
            index = str(record.get("JOBINDEX") or "0")
            states[str(job_id) if index == "0" else f"{job_id}[{index}]"] = self.status_of(
                str(record.get("STAT", "")), record.get("EXIT_CODE"), str(record.get("EXIT_REASON") or "")
            )
        return states

    def _parse_delimited(self, result: CommandResult) -> dict[str, JobStatus]:
        states = {}
        for line in result.stdout.splitlines():
            fields = [("" if f.strip() == "-" else f.strip()) for f in line.split("^")]
            if len(fields) >= 2 and fields[0].isdigit():
                fields += [""] * (5 - len(fields))
                key = fields[0] if fields[4] in ("", "0") else f"{fields[0]}[{fields[4]}]"
                states[key] = self.status_of(fields[1], fields[2], fields[3])
        # exit 255 comes with any unknown id; only other messages make it an error
        if result.exit_code != 0 and not states and not _quiet(result.stderr + result.stdout):
            raise status_error(result, "bjobs")
        return states

    def status_of(self, stat: str, exit_code: object, reason: str = "") -> JobStatus:
        """One bjobs/bhist observation → JobStatus; TERM_RUNLIMIT is TIMEOUT, TERM_OWNER/ADMIN CANCELLED."""
        text = str(exit_code or "").strip()
        code = int(text) if text.isdigit() else None
        if stat in ("DONE", "POST_DONE", "PDONE") and code is None:
            code = 0
        status = self.map_state(stat, code, reason)
        term = re.match(r"TERM_[A-Z_]+", reason.strip())
        if not term or status.state != JobState.FAILED:
            return status
        state = (
            JobState.TIMEOUT
            if term.group(0) == "TERM_RUNLIMIT"
            else JobState.CANCELLED
            if term.group(0) in _CANCELLED
            else JobState.FAILED
        )
        return JobStatus(state, f"{stat} {term.group(0)}", code, reason.strip())

    # -- history ---------------------------------------------------------------
    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return ["bhist", "-l", "-n", "1", *job_ids]

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        text = re.sub(r"\n {21}", "", result.stdout)  # undo bhist's hard wrap at 80 columns
        states = {}
        for block in re.split(r"(?m)^-{20,}\s*$", text):
            found = re.search(r"Job <(\d+)(\[\d+\])?>", block)
            element = found.group(1) + found.group(2) if found and found.group(2) else None
            job_id = (
                (element if element in job_ids else found.group(1))
                if found
                else (job_ids[0] if len(job_ids) == 1 else None)
            )
            if job_id is None:
                continue
            term = re.search(r"(TERM_[A-Z_]+)(?::[ \t]*([^;\n]*))?", block)
            reason = (
                f"{term.group(1)}: {term.group(2).strip()}".rstrip(": .")
                if term and term.group(2)
                else (term.group(1) if term else "")
            )
            exited = re.search(r"(?m)(?:^|: )Exited(?: with exit code (\d+))?", block)
            if exited:
                states[job_id] = self.status_of("EXIT", exited.group(1), reason)
            elif re.search(r"(?m)(?:^|: )Done successfully", block):
                states[job_id] = self.status_of("DONE", "0", reason)
        if result.exit_code != 0 and not states and not _quiet(result.stderr + result.stdout):
            raise status_error(result, "bhist")
        return states

    # -- kill ------------------------------------------------------------------
    # -- finding a job whose id was never journaled: the submission key is its job description (-Jd) --------
    def find_argv(self, keys: Sequence[str]) -> list[str]:
        fields = "jobid user job_description command"
        if self.use_json:
            return ["bjobs", "-json", "-a", "-u", current_user(), "-o", fields]
        return ["bjobs", "-noheader", "-a", "-u", current_user(), "-o", f"{fields} delimiter='^'"]

    def parse_find(self, result: CommandResult, keys: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        if "-json" in result.argv:
            data = _json_object(result.stdout)
            if data is None:
                if not result.stdout.strip() and _quiet(result.stderr):
                    return []  # "No job found"
                raise status_error(result, "bjobs -json (unreadable answer)")
            records = [r for r in data.get("RECORDS") or [] if isinstance(r, dict)]
            table = [[str(r.get(f) or "") for f in ("JOBID", "USER", "JOB_DESCRIPTION", "COMMAND")] for r in records]
        else:
            table = [line.split("^", 3) for line in result.stdout.splitlines() if line.count("^") >= 3]
            if result.exit_code != 0 and not table and not _quiet(result.stderr + result.stdout):
                raise status_error(result, "bjobs")
        rows = []
        for job_id, user, key, command in table:
            if key.strip() in keys:
                rows.append((key.strip(), job_id.strip(), user.strip(), _command_path(command)))
        return rows

    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["bkill", *job_ids]

    def release_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["bresume", *job_ids]  # PSUSP/USUSP: LSF's holds

    def harmless_kill_error(self, result: CommandResult) -> bool:
        return _quiet(result.stderr)  # "Job has already finished", "No matching job found"

    def probe_argv(self) -> list[str]:
        return ["lsid"]
