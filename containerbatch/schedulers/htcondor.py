"""Scheduler ``htcondor``: HTCondor through ``condor_submit``, ``condor_q``, ``condor_history``, ``condor_rm``.

* Submit: a submit description ``job.sub`` is rendered next to ``job.sh`` (the worker writes
  :meth:`HTCondorScheduler.submit_file` to ``<job_dir>/job.sub``) and submitted with
  ``condor_submit <job_dir>/job.sub``.  One job per cluster: the job id is the **cluster id** (``42``, not
  ``42.0``), which condor_q, condor_history and condor_rm all accept.
* ``batch_name`` is the job name, so ``condor_q -batch NAME`` shows one run's jobs.
* Status: ONE ``condor_q -json -attributes … clusters…`` per poll; empty output means none of them is in
  the queue.  Those gone: ONE ``condor_history -json -match N clusters…``.
* Container modes (setting ``htcondor_container_mode``): ``wrap`` (default, job.sh runs the container like on
  every other scheduler), ``universe`` (``universe = container`` + ``container_image``) and ``attribute``
  (``+SingularityImage``, as at CERN).  In the last two HTCondor starts the container, so job.sh must run the
  plain runner: :meth:`HTCondorScheduler.runs_container` tells the worker so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

from containerbatch.errors import ConfigError, ContainerBatchError
from containerbatch.jobscript import DONE_NAME, STAGE_IN, STAGE_OUT
from containerbatch.schedulers.base import (
    SUBMIT_KEY,
    CommandResult,
    Scheduler,
    current_user,
    describe,
    own_jobs,
    status_error,
    submit_error,
)
from containerbatch.settings import plugin_setting
from containerbatch.spec import JobSpec
from containerbatch.states import JobState, JobStatus, Reason

#: the job ClassAd attribute that carries the submission key (``spec.submit_key``)
KEY_ATTRIBUTE = "CbAttemptKey"
_FIND_ATTRIBUTES = f"ClusterId,ProcId,Owner,Cmd,{KEY_ATTRIBUTE}"
ATTRIBUTES = (
    "ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,HoldReasonCode,"
    "EnteredCurrentStatus,RemoveReason"
)
_SUBMITTED = re.compile(r"(\d+) job\(s\) submitted to cluster (\d+)\.|^\s*(\d+)\.\d+ - \d+\.\d+\s*$", re.M)
#: condor_submit's permanent refusals and their fix
_SUBMIT_FIXES = (
    (
        r"Submit requirements|SUBMIT_REQUIREMENT",
        "the pool's submit requirements refuse the job: see the reason above and adjust htcondor_settings or resources",
    ),
    (
        r"Parse error|syntax error|Unknown attribute",
        "the submit description is refused: check htcondor_settings "
        "(`containerbatch show TASK` prints the submit file)",
    ),
)
_TRANSIENT = (
    "Failed to fetch ads",
    "Can't find address",
    "SECMAN",
    "Failed to connect",
    "timed out",
    "Connection refused",
)
#: HoldReasonCode → reason (https://htcondor.readthedocs.io/en/latest/codes-other-values/hold-reason-codes.html)
HOLD_CODES: dict[str, Reason] = {
    "1": Reason.CANCELLED,  # held by user
    "6": Reason.IMAGE_ERROR,  # failed to create process
    "21": Reason.OUT_OF_MEMORY,  # job exceeded memory limit (cgroup)
    "34": Reason.OUT_OF_MEMORY,  # memory usage exceeded request_memory
    "35": Reason.IMAGE_ERROR,  # invalid docker image
    "45": Reason.IMAGE_ERROR,  # singularity test failed
    "46": Reason.WALLTIME,  # job duration exceeded
    "47": Reason.WALLTIME,  # job execute duration exceeded
}
_NOT_FOUND = re.compile(r"not found|Couldn't find/remove all jobs|already been marked for removal")
_MACRO = re.compile(r"\$(?=[A-Za-z0-9_]*[(\[])")  # a $ that condor_submit would expand
_UNWRITABLE = re.compile(r"\$\$[A-Za-z0-9_]*[(\[]|\$\(DOLLAR\)", re.I)  # match-time $$( refs; the escape itself
_KEY = re.compile(r"^(\+|MY\.)?[A-Za-z_][A-Za-z0-9_.]*$", re.I)
_OWN_KEYS = {
    "universe",
    "executable",
    "arguments",
    "initialdir",
    "output",
    "error",
    "log",
    "getenv",
    "environment",
    "batch_name",
    "queue",
    "container_image",
    "transfer_container",
    "should_transfer_files",
    "transfer_input_files",
    "when_to_transfer_output",
    "transfer_output_files",
    "transfer_output_remaps",
}


def _value(text: str, what: str) -> str:
    """A submit-file value: one line, with HTCondor's macros (``$(x)``, ``$ENV(x)``, ``$[expr]``) kept literal.

    >>> _value("/data/$(x)/$ENV(HOME)/a b $5", "output")
    '/data/$(DOLLAR)(x)/$(DOLLAR)ENV(HOME)/a b $5'
    """
    if "\n" in text or "\r" in text or "\0" in text or text.rstrip().endswith("\\") or _UNWRITABLE.search(text):
        raise ConfigError(
            f"{what} {text!r} cannot be written in an HTCondor submit file (line breaks, a trailing \\ that "
            "would continue the line, $$( and $(DOLLAR) have no literal form there)",
            setting="htcondor_settings" if what.startswith("htcondor") else None,
        )
    return _MACRO.sub("$(DOLLAR)", text)


def quote_arguments(args: Sequence[str]) -> str:
    """Quote ``args`` for ``arguments``/``environment`` in HTCondor's new syntax (``"…"``).

    Every argument is put in single quotes (which may hold spaces); a single quote inside is doubled,
    and so is a double quote (the whole value sits in double quotes).

    >>> quote_arguments(["a", "b c"])
    '"\\'a\\' \\'b c\\'"'
    >>> print(quote_arguments(["it's", 'say "hi"', ""]))
    "'it''s' 'say ""hi""' ''"
    """
    return '"' + " ".join("'" + str(a).replace("'", "''").replace('"', '""') + "'" for a in args) + '"'


def classad_string(text: str) -> str:
    """A ClassAd string literal.

    >>> print(classad_string('a "b" \\\\c'))
    "a \\"b\\" \\\\c"
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class HTCondorScheduler(Scheduler):
    """HTCondor (vanilla or container universe)."""

    name = "htcondor"
    SETTINGS = (
        plugin_setting("htcondor_settings", "dict[str,str]", {}, "Extra submit-description lines, e.g. +JobFlavour."),
        plugin_setting(
            "htcondor_container_mode",
            "choice:wrap|universe|attribute",
            "wrap",
            "How HTCondor runs the container: the job script wraps it, container universe, or a site attribute.",
        ),
    )
    commands = ("condor_submit", "condor_q", "condor_history", "condor_rm")
    submit_file_name = "job.sub"
    STAGES_FILES = True  # transfer_files: one archive in, one out (should_transfer_files = YES)
    DOCS_URL = "https://htcondor.readthedocs.io/en/latest/classad-attributes/job-classad-attributes.html#JobStatus"
    TRANSIENT_MARKERS = _TRANSIENT
    STATE_MAP = {  # JobStatus codes, see DOCS_URL
        "1": JobState.PENDING,  # Idle
        "2": JobState.RUNNING,  # Running
        "3": JobState.CANCELLED,  # Removed (condor_rm or a periodic_remove policy)
        "4": JobState.COMPLETED,  # Completed: FAILED when ExitCode != 0 or ExitBySignal
        "5": JobState.HELD,  # Held: waits for condor_release; HoldReason tells why
        "6": JobState.RUNNING,  # Transferring Output
        "7": JobState.SUSPENDED,  # Suspended
    }

    def __init__(self, settings: Mapping[str, object] | None = None) -> None:
        super().__init__(settings)
        self._pool_checked: dict[str, str | None] = {}  # constraint -> why no slot matches (None: one does)

    # -- submit ----------------------------------------------------------------
    def container_mode(self, spec: JobSpec) -> str:
        return str(spec.settings.get("htcondor_container_mode") or "wrap")

    def runs_container(self, spec: JobSpec) -> bool:
        """Whether HTCondor itself starts the container: job.sh must then run the runner without wrapping."""
        return self.container_mode(spec) != "wrap" and spec.runtime != "host"

    def container_image(self, spec: JobSpec) -> str:
        """The image as the node finds it: ``docker://`` for a Docker name, a local file as an absolute path."""
        image = spec.image or ""
        if spec.runtime in ("docker", "podman") and "://" not in image:
            return f"docker://{image}"
        if "://" not in image and not image.startswith("docker-daemon:"):
            return os.path.normpath(os.path.join(spec.working_dir, os.path.expanduser(image)))
        return image

    def check(self, spec: JobSpec) -> None:
        if spec.staged:
            self.check_staged(spec)
        if self.runs_container(spec):
            self.check_pool(spec)

    def pool_requirement(self, spec: JobSpec) -> tuple[str, str]:
        """(constraint on the slot ads, what the pool must offer) for a mode where HTCondor starts the container."""
        mode, image = self.container_mode(spec), self.container_image(spec)
        if mode == "attribute":
            return (
                "HasSingularity =?= true",
                "slots that advertise HasSingularity (Apptainer/Singularity on the execute nodes), configured with "
                "SINGULARITY_JOB = !isUndefined(TARGET.SingularityImage) and SINGULARITY_IMAGE_EXPR = "
                "TARGET.SingularityImage (else +SingularityImage is ignored and the job would run on the bare node)",
            )
        if image.startswith("docker://"):
            return (
                "HasDocker =?= true || HasSingularity =?= true",
                "slots that advertise HasDocker or HasSingularity (a container runtime on the execute nodes)",
            )
        if not os.path.isdir(image):
            return (
                "HasSingularity =?= true && HasSIF =?= true",
                "slots that advertise HasSingularity and HasSIF (Apptainer/Singularity that runs SIF files)",
            )
        return "HasSingularity =?= true", "slots that advertise HasSingularity (Apptainer/Singularity)"

    def check_pool(self, spec: JobSpec) -> None:
        """Ask the pool once (``condor_status -constraint``) whether any slot can start the task's container."""
        constraint, needs = self.pool_requirement(spec)
        checked = self._pool_checked
        if constraint not in checked:
            argv = ["condor_status", "-constraint", constraint, "-af", "Name"]
            try:
                result = self._run(argv)
            except ContainerBatchError as exc:
                result = CommandResult(tuple(argv), -1, "", str(exc))
            if result.exit_code != 0:
                checked[constraint] = f"condor_status failed (exit {result.exit_code}): {result.stderr.strip()[-500:]}"
            elif not result.stdout.strip():
                checked[constraint] = f"no slot matches {constraint!r}"
            else:
                checked[constraint] = None
        problem = checked[constraint]
        if problem:
            raise ConfigError(
                f"htcondor_container_mode {self.container_mode(spec)!r} needs {needs}; this pool has none "
                f"({problem}). Ask the pool's admins, or use htcondor_container_mode 'wrap' (job.sh starts "
                "the container itself)",
                setting="htcondor_container_mode",
                task=spec.task_id,
            )

    def check_staged(self, spec: JobSpec) -> None:
        """``transfer_files`` needs job.sh to start the container (it binds the scratch folder at the
        submit-side paths) and paths HTCondor's transfer lists can carry; raise ConfigError otherwise."""
        if spec.runtime == "host" or self.runs_container(spec):
            how = "runtime host" if spec.runtime == "host" else f"htcondor_container_mode {self.container_mode(spec)!r}"
            raise ConfigError(
                f"transfer_files needs a container runtime (docker, podman, apptainer) in htcondor_container_mode "
                f"'wrap', not {how}: job.sh binds the node's scratch folder at the submit-side paths. Use a shared "
                "filesystem (transfer_files false) or choose such a runtime",
                setting="transfer_files",
                task=spec.task_id,
            )
        from containerbatch.staging import extra_paths

        extra_paths(spec)  # the listed paths exist
        for what, path in (("job directory", spec.job_dir), ("marker path", spec.marker_path)):
            bad = sorted(set(path) & set(',;="\\'))
            if bad or path != path.strip():
                raise ConfigError(
                    f"the {what} {path} cannot be written in HTCondor's transfer lists (characters {bad} or "
                    "surrounding blanks); choose a working_dir/log_dir without them",
                    setting="transfer_files",
                    task=spec.task_id,
                )

    def submit_file(self, spec: JobSpec) -> str:
        res, job_dir = spec.resources, spec.job_dir
        lines = [f"# containerbatch: {spec.task_id.replace(chr(10), ' ')} (attempt {spec.attempt}, run {spec.run_id})"]
        entries: list[tuple[str, str]] = []
        mode = self.container_mode(spec)
        if self.runs_container(spec) and mode == "universe":
            entries += [("universe", "container"), ("container_image", _value(self.container_image(spec), "image"))]
            if not spec.staged:  # shared filesystem: the node reads the image where it is (else it is refused)
                entries.append(("transfer_container", "false"))
        else:
            entries.append(("universe", "vanilla"))
        if self.runs_container(spec) and mode == "attribute":
            entries.append(("+SingularityImage", classad_string(_value(self.container_image(spec), "image"))))
        entries += [
            ("initialdir", _value(job_dir, "job directory")),
            # condor_submit resolves a relative executable against its own working directory, not initialdir
            ("executable", _value(spec.script_path, "job script path")),
            ("output", _value(spec.stdout_path, "stdout path")),
            ("error", _value(spec.stderr_path, "stderr path")),
            ("log", _value(f"{job_dir}/condor.log", "log path")),
            ("batch_name", _value(spec.job_name, "job name")),
            ("getenv", "false"),
        ]
        for key in spec.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ConfigError(f"environment variable name {key!r} is not valid", setting="env", task=spec.task_id)
        # no `environment`: env values (secrets) travel in the job folder's 0600 env file that job.sh sources
        # (inside stage-in.tar.gz with transfer_files), never in the job's ClassAd that condor_q -l shows
        if spec.submit_key:  # condor_q/condor_history find the job by it (find_jobs)
            entries.append((f"+{KEY_ATTRIBUTE}", classad_string(spec.submit_key)))
        if res.cpus:
            entries.append(("request_cpus", str(res.cpus)))
        if res.memory_mb:
            entries.append(("request_memory", f"{res.memory_mb}MB"))  # HTCondor's MB are MiB
        if res.disk_mb:
            entries.append(("request_disk", f"{res.disk_mb * 1024}KB"))
        if res.gpus:
            entries.append(("request_gpus", str(res.gpus)))
        if res.walltime_s:
            entries.append(("allowed_job_duration", str(res.walltime_s)))  # held (code 46) when exceeded
        if res.account:
            entries.append(("accounting_group", _value(res.account, "account")))
        if spec.staged:
            self.check_staged(spec)
            # one archive in (job directory, workflow sources, bundle, the task's inputs), one out
            # (what the job wrote), then the done-marker, remapped into the run's marker folder
            entries += [
                ("should_transfer_files", "YES"),
                ("transfer_input_files", _value(f"{job_dir}/{STAGE_IN}", "job directory")),
                ("when_to_transfer_output", "ON_EXIT"),
                ("transfer_output_files", f"{STAGE_OUT},{DONE_NAME}"),
                ("transfer_output_remaps", _value(f'"{DONE_NAME} = {spec.marker_path}"', "marker path")),
            ]
        else:
            entries.append(("should_transfer_files", "NO"))  # shared filesystem
        for key, value in dict(spec.settings.get("htcondor_settings") or {}).items():
            if not _KEY.match(key) or key.lower() in _OWN_KEYS:
                raise ConfigError(
                    f"htcondor_settings key {key!r} is not a submit command containerbatch lets you set "
                    "(use names like +JobFlavour, MY.Attr or request_*)",
                    setting="htcondor_settings",
                    task=spec.task_id,
                )
            entries.append((key, _value(str(value), f"htcondor_settings[{key!r}]")))
        lines += [f"{key} = {value}" for key, value in entries]
        return "\n".join([*lines, "queue", ""])

    def submit_argv(self, spec: JobSpec) -> list[str]:
        return ["condor_submit", f"{spec.job_dir}/{self.submit_file_name}"]

    # -- staged jobs of several tasks (tasks_per_job) and staged arrays -------------------------------
    def stage_out_entries(self, spec: JobSpec, members: Sequence[JobSpec]) -> list[tuple[str, str]]:
        """What a staged job of several tasks brings back: its own archive and marker, and each task's
        (``cb_out_I.tar.gz``, ``cb_done_I``, which its job script writes) into that task's folder and marker."""
        outputs, remaps = [STAGE_OUT, DONE_NAME], [f"{DONE_NAME} = {spec.marker_path}"]
        for index, member in enumerate(members):
            self.check_staged(member)
            outputs += [f"cb_out_{index}.tar.gz", f"cb_done_{index}"]
            remaps += [
                f"cb_out_{index}.tar.gz = {member.job_dir}/{STAGE_OUT}",
                f"cb_done_{index} = {member.marker_path}",
            ]
        return [
            ("transfer_output_files", ",".join(outputs)),
            ("transfer_output_remaps", _value('"' + "; ".join(remaps) + '"', "marker path")),
        ]

    def group_submit_file(self, spec: JobSpec, members: Sequence[JobSpec]) -> str:
        """The submit file of a staged job of several tasks: :meth:`submit_file` with their outputs."""
        entries = dict(self.stage_out_entries(spec, members))
        lines = []
        for line in self.submit_file(spec).splitlines():
            key = line.split(" = ", 1)[0]
            lines.append(f"{key} = {entries[key]}" if key in entries else line)
        return "\n".join([*lines, ""])

    def staged_array_submit_file(self, spec: JobSpec, elements: Sequence[tuple[JobSpec, Sequence[JobSpec]]]) -> str:
        """One cluster of staged jobs (``spec.job_dir``: the array's folder): each proc gets its own folder,
        logs, stage-in archive and job script (array.sh runs the one HTCondor brought) and outputs, from
        macros indexed by ``$(Process)``; ``elements`` are (the element's job spec, its tasks when it runs
        several).  (condor_submit takes no statement after the queue statement.)"""
        executable = f"executable = {_value(f'{spec.job_dir}/array.sh', 'array script path')}"
        per_element = {
            "initialdir",
            "output",
            "error",
            "transfer_input_files",
            "transfer_output_files",
            "transfer_output_remaps",
        }
        lines = [
            executable if line.startswith("executable = ") else line
            for line in self.submit_file(spec).splitlines()
            if line != "queue" and line.split(" = ", 1)[0] not in per_element
        ]
        for index, (element, members) in enumerate(elements):
            self.check_staged(element)
            outputs = dict(self.stage_out_entries(element, members))
            lines += [
                f"cb_dir_{index} = {_value(element.job_dir, 'job directory')}",
                f"cb_stdout_{index} = {_value(element.stdout_path, 'stdout path')}",
                f"cb_stderr_{index} = {_value(element.stderr_path, 'stderr path')}",
                f"cb_outputs_{index} = {outputs['transfer_output_files']}",
                f"cb_remaps_{index} = {outputs['transfer_output_remaps']}",
            ]
        lines += [
            "initialdir = $(cb_dir_$(Process))",
            "output = $(cb_stdout_$(Process))",
            "error = $(cb_stderr_$(Process))",
            f"transfer_input_files = $(cb_dir_$(Process))/{STAGE_IN},$(cb_dir_$(Process))/job.sh",
            "transfer_output_files = $(cb_outputs_$(Process))",
            "transfer_output_remaps = $(cb_remaps_$(Process))",
            "arguments = $(Process)",
            f"queue {len(elements)}",
            "",
        ]
        return "\n".join(lines)

    # -- arrays: one cluster of N procs; element ids CLUSTER.PROC; array.sh gets $(Process) ----------
    supports_arrays = True
    array_index = '"${1:-}"'
    array_first = 0
    array_submit_file_name = "array.sub"

    def array_directives(self, spec: JobSpec, count: int) -> list[str]:
        return []

    def array_submit_file(self, spec: JobSpec, count: int) -> str:
        # the array's own script, absolute: condor_submit resolves a relative one against its working directory
        executable = f"executable = {_value(f'{spec.job_dir}/array.sh', 'array script path')}"
        lines = [
            executable if line.startswith("executable = ") else line
            for line in self.submit_file(spec).splitlines()
            if line != "queue"
        ]
        return "\n".join([*lines, "arguments = $(Process)", f"queue {count}", ""])

    def array_submit_argv(self, spec: JobSpec, count: int) -> list[str]:
        return ["condor_submit", f"{spec.job_dir}/{self.array_submit_file_name}"]

    def array_element_id(self, base_id: str, index: int) -> str:
        return f"{base_id}.{index}"

    def parse_submit(self, result: CommandResult) -> str:
        match = _SUBMITTED.search(result.stdout)
        if result.exit_code == 0 and match:
            return match.group(2) or match.group(3)
        raise submit_error(result, _TRANSIENT, f"check {result.argv[-1]}", _SUBMIT_FIXES)

    # -- status ----------------------------------------------------------------
    def status_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["condor_q", "-json", "-attributes", ATTRIBUTES, *job_ids]

    def parse_status(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return self._parse_ads(result, job_ids, "condor_q")

    def history_argv(self, job_ids: Sequence[str]) -> list[str] | None:
        return ["condor_history", "-json", "-match", str(len(job_ids)), "-attributes", ATTRIBUTES, *job_ids]

    def parse_history(self, result: CommandResult, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return self._parse_ads(result, job_ids, "condor_history")

    def _parse_ads(self, result: CommandResult, job_ids: Sequence[str], what: str) -> dict[str, JobStatus]:
        if result.exit_code != 0:
            raise status_error(result, what)  # e.g. "Failed to fetch ads": transient
        if not result.stdout.strip():
            return {}  # condor_q prints nothing at all when no job matches
        try:
            ads = json.loads(result.stdout)
        except ValueError:
            raise status_error(result, f"{what} -json (unreadable answer)") from None
        wanted = set(job_ids)
        states = {}
        for ad in ads if isinstance(ads, list) else []:
            if not isinstance(ad, dict) or ad.get("ClusterId") is None:
                continue
            full = f"{ad['ClusterId']}.{ad.get('ProcId', 0)}"
            job_id = full if full in wanted else str(ad["ClusterId"])
            if job_id in wanted and job_id not in states:  # history lists the newest first
                states[job_id] = self.status_of(ad)
        return states

    def status_of(self, ad: dict[str, object]) -> JobStatus:
        """A job ad → JobStatus; a held job carries HoldReason and HoldReasonCode in ``reason``."""
        native = str(ad.get("JobStatus"))
        status = self.map_state(native)
        if status.state == JobState.HELD:
            reason = f"{ad.get('HoldReason') or 'held'} (HoldReasonCode {ad.get('HoldReasonCode')})"
            return JobStatus(JobState.HELD, native, None, reason)
        if status.state == JobState.CANCELLED:
            return JobStatus(JobState.CANCELLED, native, None, str(ad.get("RemoveReason") or "removed"))
        if status.state == JobState.COMPLETED:
            if ad.get("ExitBySignal"):
                return JobStatus(JobState.FAILED, native, None, f"killed by signal {ad.get('ExitSignal')}")
            code = ad.get("ExitCode")
            code = code if isinstance(code, int) else None
            return JobStatus(JobState.COMPLETED if code in (0, None) else JobState.FAILED, native, code)
        return status

    # -- kill ------------------------------------------------------------------
    # -- finding a job whose id was never journaled: the submission key is the ClassAd attribute CbAttemptKey ----
    def find_argv(self, keys: Sequence[str]) -> list[str]:
        return ["condor_q", "-json", "-constraint", f"{KEY_ATTRIBUTE} =!= undefined", "-attributes", _FIND_ATTRIBUTES]

    def find_history_argv(self, keys: Sequence[str]) -> list[str]:
        """condor_history for keys not in the queue (jobs that ended): the keys by name, they are hex."""
        wanted = " || ".join(f'{KEY_ATTRIBUTE} =?= "{k}"' for k in keys if SUBMIT_KEY.fullmatch(k))
        return ["condor_history", "-json", "-constraint", wanted or "false", "-attributes", _FIND_ATTRIBUTES]

    def parse_find(self, result: CommandResult, keys: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        if result.exit_code != 0:
            raise status_error(result, result.argv[0])
        if not result.stdout.strip():
            return []
        try:
            ads = json.loads(result.stdout)
        except ValueError:
            raise status_error(result, f"{result.argv[0]} -json (unreadable answer)") from None
        rows = []
        for ad in ads if isinstance(ads, list) else []:
            if isinstance(ad, dict) and isinstance(ad.get(KEY_ATTRIBUTE), str) and ad[KEY_ATTRIBUTE] in keys:
                cluster = ad.get("ClusterId")
                if isinstance(cluster, int) and not isinstance(cluster, bool):
                    rows.append((ad[KEY_ATTRIBUTE], str(cluster), str(ad.get("Owner", "")), str(ad.get("Cmd", ""))))
        return rows

    def find_jobs(self, keys: Mapping[str, str]) -> dict[str, list[str]] | None:
        """The queue first, then the history for the keys not found there (one call each).

        condor_q lists only the jobs of the user the schedd authenticated (no ``-allusers``): their Owner is
        this user's name in the pool (which a site may map from the login name); the history lists everyone's,
        so its jobs must show that name or the login name."""
        if not keys:
            return {}
        result = self._run(self.find_argv(list(keys)))
        queued = self.parse_find(result, keys)
        owners = {current_user(), *(owner for _key, _id, owner, _cmd in queued)}
        found = own_jobs(queued, keys, self.name, owners)
        rest = {k: v for k, v in keys.items() if k not in found}
        if rest:
            result = self._run(self.find_history_argv(list(rest)))
            found.update(own_jobs(self.parse_find(result, rest), rest, self.name, owners))
        return found

    def kill_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["condor_rm", *job_ids]

    def release_argv(self, job_ids: Sequence[str]) -> list[str]:
        return ["condor_release", *job_ids]

    def harmless_kill_error(self, result: CommandResult) -> bool:
        return all(_NOT_FOUND.search(line) for line in result.stderr.splitlines() if line.strip())

    def probe_argv(self) -> list[str]:
        return ["condor_q", "-totals"]

    def classify_failure(self, status: JobStatus) -> tuple[Reason, str] | None:
        """A held job: its HoldReasonCode (in ``reason``, or the native word of a bare observation)."""
        if status.state != JobState.HELD:
            return None
        found = re.search(r"HoldReasonCode (\d+)", status.reason)
        code = found.group(1) if found else status.native
        return (HOLD_CODES[code], describe(status)) if code in HOLD_CODES else None
