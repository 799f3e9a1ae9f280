"""Settings: one table of definitions and one lookup chain.

A setting is looked up, first hit wins, in

1. the task: an attribute (or luigi parameter) of that name,
2. :func:`set_setting` in the submitting process,
3. the environment variable ``CONTAINERBATCH_<NAME>`` (JSON for lists/dicts),
4. ``settings.json`` in the working directory or any of its parents (the
   nearest file wins per key, as in b2luigi, so b2luigi users carry theirs
   over),
5. the default.

This module imports only the standard library: it is imported on batch nodes
too (a workflow file may call :func:`set_setting` at module level).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from containerbatch.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "CONTAINERBATCH_"
SETTINGS_FILE = "settings.json"

_UNSET: Any = object()


def _as_str(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return os.fspath(value)


def _as_opt_str(value: Any) -> str | None:
    return None if value is None else _as_str(value)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise TypeError(f"expected an integer, got {value!r}") from None


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise TypeError(f"expected a number, got {value!r}") from None


def _as_opt_float(value: Any) -> float | None:
    return None if value is None else _as_float(value)


def _positive_int(value: Any) -> int:
    number = _as_int(value)
    if number < 1:
        raise TypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _non_negative_int(value: Any) -> int:
    number = _as_int(value)
    if number < 0:
        raise TypeError(f"expected a whole number of at least 0, got {value!r}")
    return number


def _as_opt_int(value: Any) -> int | None:
    return None if value is None else _as_int(value)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise TypeError(f"expected true or false, got {value!r}")


def _transfer(value: Any) -> bool | list[str]:
    """``transfer_files``: true/false, or (as in b2luigi) a list of extra paths to send."""
    if isinstance(value, (list, tuple)) or (isinstance(value, str) and value.lstrip().startswith("[")):
        return _as_str_list(value)
    try:
        return _as_bool(value)
    except TypeError:
        raise TypeError(f"expected true, false or a list of paths, got {value!r}") from None


def _as_str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return [os.fspath(v) for v in value]


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _as_str_dict(value: Any) -> dict[str, str]:
    mapping = _as_dict(value)
    bad = [k for k, v in mapping.items() if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
    if bad:
        raise TypeError(f"values must be strings or numbers, not for {bad}")
    return {k: str(v) for k, v in mapping.items()}


#: the values of containerbatch.states.Reason (settings imports nothing of containerbatch: it runs on nodes)
REASONS = (
    "task_error",
    "out_of_memory",
    "walltime",
    "node_failure",
    "preempted",
    "lost",
    "image_error",
    "submit_error",
    "cancelled",
    "outputs_missing",
    "bad_result",
)


def _reasons(value: Any) -> list[str]:
    reasons = _as_str_list(value)
    bad = [r for r in reasons if r not in REASONS]
    if bad:
        raise TypeError(f"unknown failure reason(s) {bad}; known: {', '.join(REASONS)}")
    return reasons


def _caps(value: Any) -> dict[str, Any]:
    caps = _as_dict(value)
    bad = sorted(set(caps) - {"memory", "walltime"})
    if bad:
        raise TypeError(f"caps are given for memory and walltime only, not {bad}")
    from containerbatch.spec import parse_duration, parse_memory

    try:
        if caps.get("memory"):
            parse_memory(caps["memory"])
        if caps.get("walltime"):
            parse_duration(caps["walltime"])
    except ValueError as exc:
        raise TypeError(str(exc)) from None
    return caps


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _as_str(value)
        if text not in choices:
            raise TypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return convert


def b2luigi_snapshot() -> dict[str, Any]:
    """The b2luigi settings in force now, for the node: b2luigi's settings files (nearest first, as b2luigi
    reads them) under its ``set_setting`` values and this module's.  Values JSON cannot carry (a class, a
    function) are left out with a warning.  b2luigi is read only if this process imported it."""
    b2settings = sys.modules.get("b2luigi.core.settings")
    merged: dict[str, Any] = {}
    files = getattr(b2settings, "_setting_file_iterator", None)
    for path in files() if callable(files) else []:
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the settings file {path}: {exc}") from None
        if isinstance(data, dict):
            for key, value in data.items():
                merged.setdefault(key, value)  # the nearest file wins, as in b2luigi
    merged.update(_b2luigi_globals())
    with _lock:
        merged.update(_set_settings)
    carried: dict[str, Any] = {}
    for key, value in merged.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            log.warning(
                "setting %r (%r) cannot be sent to the batch node; set it at module level in the workflow file "
                "(or as a task attribute) so the node sets it too",
                key,
                value,
            )
            continue
        carried[key] = value
    # the node runs the task itself: b2luigi's dispatch() runs the run function there, in the job
    carried["_dispatch_local_execution"] = True
    return carried


def detect_batch_system() -> str:
    """b2luigi's ``auto``: the batch system whose submit command is on PATH (LSF, HTCondor, Slurm), else local."""
    for binary, name in (("bsub", "lsf"), ("condor_submit", "htcondor"), ("sbatch", "slurm")):
        if shutil.which(binary):
            return name
    return "local"


def _batch_system(value: Any) -> str:
    text = _as_str(value)
    if text == "auto":
        return detect_batch_system()
    if text in ("gbasf2", "custom"):
        raise TypeError(
            f"b2luigi's batch system {text!r} has no equivalent in containerbatch: run these tasks with b2luigi "
            "itself, or choose local, slurm, lsf or htcondor"
        )
    return text


@dataclass(frozen=True)
class Setting:
    """Definition of one setting; the docs table is generated from these."""

    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    type_name: str
    group: str = "general"
    #: who declared it: "" for the core, else e.g. "scheduler plugin 'sge'"
    owner: str = ""

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


#: converters a plugin's setting may use (each raises TypeError for a bad value)
CONVERTERS: dict[str, Callable[[Any], Any]] = {}


def plugin_setting(
    name: str, type_name: str, default: Any, help: str, convert: Callable[[Any], Any] | None = None, group: str = ""
) -> Setting:
    """A setting a plugin declares in its ``SETTINGS``: typed, with help, joining the one settings table.

    Parameters
    ----------
    name:
        ``<plugin name>_<what>`` (checked when the plugin loads).
    type_name:
        One of ``str``, ``str?`` (may be unset), ``int``, ``int?``, ``float``, ``float?``, ``bool``,
        ``list[str]``, ``dict``, ``dict[str,str]``, or ``choice:a|b|c``; it picks the converter
        unless ``convert`` is given, and shows in the docs and ``doctor``.
    default:
        The value when nothing sets it (validated by the converter when the plugin loads).
    help:
        One sentence for the settings page.
    group:
        Section of the settings page; default the plugin kind's (``scheduler`` or ``runtime``).
    """
    if convert is None:
        if type_name.startswith("choice:"):
            convert = _choice(*type_name[len("choice:") :].split("|"))
            type_name = "str"
        elif type_name in CONVERTERS:
            convert = CONVERTERS[type_name]
            type_name = type_name.rstrip("?")
        else:
            raise ConfigError(f"setting {name!r}: unknown type {type_name!r}; use one of {', '.join(CONVERTERS)}")
    return Setting(name, convert, default, help, type_name, group)


def _s(
    name: str, convert: Callable[[Any], Any], default: Any, type_name: str, help: str, group: str = "general"
) -> Setting:
    return Setting(name, convert, default, help, type_name, group)


DEFINITIONS: dict[str, Setting] = {
    s.name: s
    for s in [
        _s(
            "batch_system",
            _batch_system,
            "local",
            "str",
            "Where jobs run: local, slurm, lsf, htcondor (or a plugin's name), or auto (as in b2luigi: LSF, HTCondor "
            "or Slurm, whichever submit command is on PATH, else local; the default under containerbatch.b2luigi).",
        ),
        _s(
            "image",
            _as_opt_str,
            None,
            "str",
            "Container image: a Docker image name, a SIF file, a sandbox directory, or a docker://, oras://, "
            "library:// URI.",
        ),
        _s(
            "runtime",
            _as_str,
            "auto",
            "str",
            "Container engine: docker, podman, apptainer, singularity, host (no container), or auto "
            "(guessed from the image).",
        ),
        _s("binds", _as_str_list, [], "list[str]", "Extra bind mounts, each src[:dst[:ro|rw]]."),
        _s("env", _as_str_dict, {}, "dict[str,str]", "Environment variables set inside the job."),
        _s(
            "env_script",
            _as_opt_str,
            None,
            "str",
            "A shell script sourced on the node before the container starts (modules, proxies).",
        ),
        _s(
            "resources",
            _as_dict,
            {},
            "dict",
            'Requested resources: memory ("4GB"), cpus, walltime ("2h", "1:30:00"), gpus, disk, partition/queue, '
            "account.",
        ),
        _s(
            "working_dir",
            _as_opt_str,
            None,
            "str",
            "Directory the task runs in (bound into the container); default: the current directory.",
        ),
        _s(
            "result_dir",
            _as_str,
            "results",
            "str",
            "Folder for results, relative to working_dir (bound into the container).",
        ),
        _s("log_dir", _as_str, "logs", "str", "Folder for job scripts and logs, relative to working_dir."),
        _s(
            "state_dir",
            _as_str,
            ".containerbatch",
            "str",
            "Folder for the journal, run markers and the runner bundle, relative to working_dir.",
        ),
        _s(
            "executable",
            _as_str_list,
            [],
            "list[str]",
            "Python interpreter (and arguments) inside the image; default python3, or this Python for runtime host.",
        ),
        _s(
            "bundle",
            _choice("auto", "always", "never"),
            "auto",
            "str",
            "Bind a pure-Python bundle of luigi and the runner into the container (auto: unless the image has its own, "
            "detected by the setting image_has_luigi).",
        ),
        _s(
            "image_has_luigi",
            _as_bool,
            False,
            "bool",
            "The image brings its own luigi and containerbatch; with bundle=auto no bundle is bound.",
        ),
        _s(
            "container_network",
            _as_opt_str,
            None,
            "str",
            "Docker/Podman network mode (e.g. none, host); default: the engine's.",
        ),
        _s("docker_extra_args", _as_str_list, [], "list[str]", "Extra arguments to docker/podman run.", "runtime"),
        _s(
            "docker_binary",
            _as_opt_str,
            None,
            "str",
            "Path of the docker (or podman) client; default: found on PATH.",
            "runtime",
        ),
        _s(
            "apptainer_binary",
            _as_opt_str,
            None,
            "str",
            "apptainer or singularity binary; default: whichever is on PATH.",
            "runtime",
        ),
        _s(
            "node_engine_binary",
            _as_opt_str,
            None,
            "str",
            "The container engine's client as the job script calls it on the node (a name on the node's PATH or "
            "a path there); default: docker_binary/apptainer_binary if set, else the engine's name.",
            "runtime",
        ),
        _s("apptainer_extra_args", _as_str_list, [], "list[str]", "Extra arguments to apptainer exec.", "runtime"),
        _s("apptainer_cleanenv", _as_bool, True, "bool", "Run apptainer with --cleanenv.", "runtime"),
        _s("apptainer_containall", _as_bool, False, "bool", "Run apptainer with --containall.", "runtime"),
        _s("apptainer_no_home", _as_bool, False, "bool", "Run apptainer with --no-home.", "runtime"),
        _s(
            "image_cache",
            _as_opt_str,
            None,
            "str",
            "Folder where remote images are converted to SIF once before submission.",
            "runtime",
        ),
        _s(
            "image_pull_timeout",
            _as_float,
            3600.0,
            "float",
            "Seconds a conversion of a remote image into image_cache may take.",
            "runtime",
        ),
        _s(
            "poll_interval",
            _as_opt_float,
            None,
            "float",
            "Seconds between scheduler status queries (adaptive, backs off while nothing changes); "
            "default per scheduler.",
            "polling",
        ),
        _s(
            "poll_max_interval",
            _as_float,
            300.0,
            "float",
            "Longest interval the status queries back off to.",
            "polling",
        ),
        _s(
            "marker_interval",
            _as_float,
            1.0,
            "float",
            "Seconds between listings of the run's done-marker folder.",
            "polling",
        ),
        _s(
            "status_retries",
            _as_int,
            5,
            "int",
            "Tries of a failing status query before it is reported UNKNOWN.",
            "polling",
        ),
        _s("command_timeout", _as_float, 60.0, "float", "Seconds a scheduler command may take.", "polling"),
        _s(
            "lost_after",
            _as_float,
            60.0,
            "float",
            "Seconds a job may be gone from queue and history without a result before it counts as LOST.",
            "polling",
        ),
        _s(
            "job_name",
            _as_opt_str,
            None,
            "str",
            "Job name in the scheduler; default derived from the task.",
            "scheduler",
        ),
        # The settings of one scheduler (slurm_extra_args, lsf_memory_unit, htcondor_settings, sge_pe, ...) are
        # declared by its module (SETTINGS), as a third-party plugin declares its own; those below are shared
        # by every scheduler (job_name, held_*) or are b2luigi's key for the core's file staging (transfer_files).
        _s(
            "transfer_files",
            _transfer,
            False,
            "bool | list",
            "HTCondor without a shared filesystem: true sends the job's inputs (job directory, workflow sources, "
            "bundle, the task's input files) to the node and brings its outputs back; a list (as in b2luigi) also "
            "sends those paths. Needs a container runtime in wrap mode.",
            "scheduler",
        ),
        _s(
            "held_timeout",
            _as_opt_float,
            None,
            "float",
            "Seconds a job may stay held (HTCondor hold, Slurm JobHeld) before held_action; default: wait.",
            "scheduler",
        ),
        _s(
            "held_action",
            _choice("fail", "release", "remove"),
            "fail",
            "str",
            "After held_timeout: fail (remove the job; the failure may be resubmitted), release it, or remove it "
            "(same as fail).",
            "scheduler",
        ),
        _s(
            "tasks_per_job",
            _positive_int,
            1,
            "int",
            "Up to this many ready tasks of one family, image and resources run in one job: one container start, "
            "one interpreter; each keeps its own result, marker and log (run one after another, or up to the "
            "job's cpus at once). A failed task is resubmitted alone.",
            "batching",
        ),
        _s(
            "max_array_size",
            _non_negative_int,
            0,
            "int",
            "Largest job array (Slurm --array, LSF name[1-N], one HTCondor cluster) that ready jobs sharing "
            "everything but their parameters go out in; 0 (the default) submits every job on its own. Keep it at "
            "or below the site's limit (Slurm MaxArraySize, LSF MAX_JOB_ARRAY_SIZE; 1000 is safe on defaults).",
            "batching",
        ),
        _s(
            "batch_window",
            _as_float,
            1.0,
            "float",
            "Seconds without a new ready task after which the waiting ones go out together (tasks_per_job, "
            "max_array_size); a full array or job goes out at once, and none waits more than ten windows.",
            "batching",
        ),
        _s(
            "submit_rate",
            _as_float,
            0.0,
            "float",
            "Most submissions per minute to one batch system (an array counts once); 0: no limit.",
            "batching",
        ),
        _s(
            "canary_threshold",
            _non_negative_int,
            0,
            "int",
            "Before more than this many tasks go out in an image on a batch system, one small job first starts "
            "that image's python with the runner; if it fails nothing else is submitted and its log is shown. "
            "0: no canary.",
            "batching",
        ),
        _s(
            "max_attempts",
            _as_opt_int,
            None,
            "int",
            "Attempts per task; default 3 for infrastructure failures, 1 for errors in the task.",
            "resubmission",
        ),
        _s(
            "retry_on",
            _reasons,
            ["out_of_memory", "walltime", "node_failure", "preempted", "lost", "submit_error"],
            "list[str]",
            "Failure reasons that are resubmitted: task_error, out_of_memory, walltime, node_failure, preempted, "
            "lost, image_error, submit_error, cancelled, outputs_missing.",
            "resubmission",
        ),
        _s(
            "outputs_wait",
            _as_float,
            10.0,
            "float",
            "Seconds a job that reported success may take for its outputs to show on the submit host (slow "
            "network filesystems) before it fails with outputs_missing.",
            "polling",
        ),
        _s(
            "max_dynamic_rounds",
            _as_int,
            100,
            "int",
            "Rounds of new dynamic requirements (yield in run()) a task may ask for before it is stopped with "
            "outputs_missing (0: no limit). A task asking again and again for requirements that are complete on "
            "the submit host is stopped after 3 rounds whatever this says.",
            "resubmission",
        ),
        _s(
            "retry_wait",
            _as_float,
            5.0,
            "float",
            "Seconds before the first resubmission (doubles each time).",
            "resubmission",
        ),
        _s("retry_wait_max", _as_float, 300.0, "float", "Longest wait between attempts.", "resubmission"),
        _s(
            "resubmit_caps",
            _caps,
            {},
            "dict",
            "Upper limits for the built-in hook that doubles memory after out_of_memory and walltime after "
            'walltime, e.g. {"memory": "64GB", "walltime": "48h"}.',
            "resubmission",
        ),
        _s(
            "progress_interval",
            _as_float,
            30.0,
            "float",
            "containerbatch run without a terminal (a log file, CI), runs of more than progress_threshold tasks: "
            "seconds between summary lines (failures and retries still get a line each).",
            "output",
        ),
        _s(
            "progress_threshold",
            _as_int,
            50,
            "int",
            "containerbatch run without a terminal: up to this many tasks, one line per state change; more, a "
            "summary line every progress_interval seconds.",
            "output",
        ),
    ]
}

CONVERTERS.update(
    {
        "str": _as_str,
        "str?": _as_opt_str,
        "int": _as_int,
        "int?": _as_opt_int,
        "float": _as_float,
        "float?": _as_opt_float,
        "bool": _as_bool,
        "list[str]": _as_str_list,
        "dict": _as_dict,
        "dict[str,str]": _as_str_dict,
    }
)
#: the core's own settings (a plugin may not redefine them)
BUILTIN_NAMES = frozenset(DEFINITIONS)


def register_settings(settings: Any, owner: str) -> None:
    """Add a plugin's declared settings to :data:`DEFINITIONS` (ConfigError on a clash or a bad default)."""
    group = "runtime" if owner.startswith("runtime") else "scheduler"
    for setting in settings:
        known = DEFINITIONS.get(setting.name)
        if known is not None and known.owner != owner:
            raise ConfigError(f"{owner} declares setting {setting.name!r}, already defined by {known.owner or 'core'}")
        if setting.default is not None:
            try:
                setting.convert(setting.default)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{owner}: the default of setting {setting.name!r} is not valid: {exc}") from None
        DEFINITIONS[setting.name] = replace(setting, group=setting.group or group, owner=owner)


def unregister_plugin_settings() -> None:
    """Drop every plugin-declared setting (tests)."""
    for name in [n for n, s in DEFINITIONS.items() if s.owner]:
        del DEFINITIONS[name]


def is_setting(name: str) -> bool:
    """Whether ``name`` is a setting of containerbatch: the core's or one a plugin declares."""
    _with_plugins(name)
    return name in DEFINITIONS


def _with_plugins(name: str | None = None) -> None:
    """Make sure plugin settings are in the table before ``name`` (None: all) is judged unknown."""
    if name is None or name not in DEFINITIONS:
        from containerbatch import plugins  # imports only the standard library until a plugin loads

        plugins.load_settings()


# -- b2luigi compatibility ----------------------------------------------------
# A b2luigi settings.json, set_setting() and task attributes carry over: keys
# with an equivalent here are translated (below), keys b2luigi itself reads on
# the node take effect there (containerbatch.b2luigi sends them along), the
# rest are accepted with one warning, and any other key is a custom setting
# that get_setting() returns.

#: b2luigi key -> the setting here it becomes (when that one is not set itself)
B2LUIGI_TRANSLATED = {
    "apptainer_image": "image",
    "apptainer_mounts": "binds",
    "apptainer_additional_params": "apptainer_extra_args",
    "apptainer_cmd": "apptainer_binary",
    "slurm_settings": "slurm_extra_args",
    "queue": "resources",
    "job_slots": "resources",
}
#: b2luigi keys that b2luigi's own code reads (output paths, targets, temporary files): they take effect
#: through b2luigi, on the submit host and on the node
B2LUIGI_OWN = frozenset(
    {
        "use_parameter_name_in_output",
        "parameter_separator",
        "scratch_dir",
        "n_download_threads",
        "default_task_target_class",
        "target_class_kwargs",
        "max_event",
        "_dispatch_local_execution",
    }
)
#: b2luigi keys of its own batch machinery, which containerbatch replaces: accepted, with one warning
B2LUIGI_NO_EFFECT = {
    "task_file_dir": "job files go to log_dir/<family>/<task>/attempt-N",
    "shell": "job scripts are bash",
    "executable_prefix": "the container command is built by the runtime; see `containerbatch show`",
    "add_filename_to_cmd": "the node runs the task through containerbatch's runner, not the script",
    "task_cmd_additional_args": "the node runs the task through containerbatch's runner, not the script",
    "apptainer_mount_defaults": "working, result and log folders are always bound",
    "gbasf2_input_dataset": "gbasf2 is not a batch system here",
    "gbasf2_release": "gbasf2 is not a batch system here",
    "gbasf2_print_status_updates": "gbasf2 is not a batch system here",
    "gbasf2_max_retries": "gbasf2 is not a batch system here",
    "gbasf2_proxy_group": "gbasf2 is not a batch system here",
    "gbasf2_project_name_prefix": "gbasf2 is not a batch system here",
    "gbasf2_download_dir": "gbasf2 is not a batch system here",
}
#: every key b2luigi documents or reads
B2LUIGI_KEYS = frozenset(
    {n for n in DEFINITIONS if n in {"batch_system", "job_name", "env_script", "env", "executable", "working_dir"}}
    | {"result_dir", "log_dir", "transfer_files", "htcondor_settings"}
    | set(B2LUIGI_TRANSLATED)
    | B2LUIGI_OWN
    | set(B2LUIGI_NO_EFFECT)
)
#: dict settings that merge as b2luigi merges them: the global value (set_setting, environment, file),
#: updated by the task's own
MERGED = frozenset({"htcondor_settings", "slurm_settings"})
# kept for callers of the earlier name
B2LUIGI_ONLY = frozenset(B2LUIGI_NO_EFFECT) | B2LUIGI_OWN

_set_settings: dict[str, Any] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s", message)


def note_custom(name: str, where: str) -> None:
    """A key that is no setting here: b2luigi's without effect (one warning), a likely typo (one warning),
    or a custom setting (get_setting returns it)."""
    if name in DEFINITIONS or name in B2LUIGI_OWN or name in B2LUIGI_TRANSLATED:
        return
    if name in B2LUIGI_NO_EFFECT:
        _warn_once(
            name, f"b2luigi setting {name!r} ({where}) has no effect with containerbatch: {B2LUIGI_NO_EFFECT[name]}"
        )
        return
    close = get_close_matches(name, DEFINITIONS, n=1, cutoff=0.8)
    if close:
        _warn_once(
            name,
            f"{name!r} ({where}) is no containerbatch setting; kept as a custom setting. Did you mean {close[0]!r}?",
        )


def _unknown(name: str, where: str, task: str | None = None) -> ConfigError:
    close = get_close_matches(name, DEFINITIONS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else " `containerbatch doctor` lists every setting."
    return ConfigError(f"unknown setting {name!r} in {where}.{hint}", setting=name, task=task)


def set_setting(name: str, value: Any) -> None:
    """Set a setting for every task of this process (below task attributes).

    Any name is accepted, as in b2luigi: names that are no setting here are custom settings that
    :func:`get_setting` returns (a name close to a setting's gets a warning).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a setting's name is a non-empty string, not {name!r}")
    _with_plugins(name)
    note_custom(name, "set_setting()")
    with _lock:
        _set_settings[name] = value


def clear_setting(name: str) -> None:
    """Forget a value given with :func:`set_setting`."""
    with _lock:
        _set_settings.pop(name, None)


def _b2luigi_globals() -> Mapping[str, Any]:
    """What ``b2luigi.set_setting`` set in this process (b2luigi loaded or not)."""
    module = sys.modules.get("b2luigi.core.settings")
    found = getattr(module, "_current_global_settings", None)
    return found if isinstance(found, dict) else {}


def _settings_files(start: Path) -> list[Path]:
    found = []
    for folder in [start, *start.parents]:
        candidate = folder / SETTINGS_FILE
        if candidate.is_file():
            found.append(candidate)
    return found


def load_settings_files(
    start: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, tuple[Any, str]]:
    """Merge every settings.json from ``start`` upwards; the nearest wins per key.

    As in b2luigi, ``B2LUIGI_SETTINGS_JSON`` names the one file to read instead.
    """
    merged: dict[str, tuple[Any, str]] = {}
    environ = os.environ if environ is None else environ
    if environ.get("B2LUIGI_SETTINGS_JSON"):
        files = [Path(environ["B2LUIGI_SETTINGS_JSON"])]
    else:
        files = list(reversed(_settings_files((start or Path.cwd()).resolve())))
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}. Fix or remove the file.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object of setting names to values.")
        for key, value in data.items():
            _with_plugins(str(key))
            note_custom(str(key), str(path))
            merged[str(key)] = (value, str(path))
    return merged


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse ``CONTAINERBATCH_*`` variables that name no setting."""
    environ = os.environ if environ is None else environ
    for key in environ:
        if key.startswith(ENV_PREFIX):
            name = key[len(ENV_PREFIX) :].lower()
            _with_plugins(name)
            if name not in DEFINITIONS:
                raise _unknown(name, f"environment variable {key}")


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from (task, set_setting, environment, file, default)."""

    name: str
    value: Any
    source: str


@dataclass
class SettingsResolver:
    """Resolves settings for tasks, reading the environment and files once.

    Parameters
    ----------
    start:
        Where to start looking for settings.json (default: current directory).
    environ:
        The environment (default: ``os.environ``).
    defaults:
        Defaults that replace the built-in ones (``containerbatch.b2luigi`` uses ``batch_system: auto``).
    """

    start: Path | None = None
    environ: Mapping[str, str] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    _files: dict[str, tuple[Any, str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        environ = dict(os.environ if self.environ is None else self.environ)
        check_environment(environ)
        self.environ = environ
        self._files = load_settings_files(self.start, environ)

    def resolve(self, name: str, task: Any = None) -> Resolved:
        """Find ``name`` for ``task`` along the lookup chain and validate it."""
        _with_plugins(name)
        definition = DEFINITIONS.get(name)
        if definition is None:
            raw, source = self.lookup(name, task)
            return Resolved(name, None if raw is _UNSET else raw, source)
        raw, source = self._raw(definition, task)
        if name in MERGED and source == "task":
            raw, source = self._merged(name, task, raw)
        raw, source = self._translate(name, task, raw, source)
        if raw is None and definition.default is None:
            return Resolved(name, None, source)
        try:
            value = definition.convert(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad value from {source}: {exc}", setting=name, task=_task_name(task)) from None
        return Resolved(name, value, source)

    def lookup(self, name: str, task: Any = None) -> tuple[Any, str]:
        """Any key (custom or b2luigi's) along the chain without validation: (value, source), or
        (an unset marker, "default")."""
        if task is not None and hasattr(task, name):
            attr = getattr(task, name)
            if not callable(attr):
                return attr, "task"
        with _lock:
            if name in _set_settings:
                return _set_settings[name], "set_setting"
        b2globals = _b2luigi_globals()
        if name in b2globals:
            return b2globals[name], "b2luigi.set_setting"
        assert self.environ is not None
        env_var = ENV_PREFIX + name.upper()
        if name in DEFINITIONS and env_var in self.environ:
            return self.environ[env_var], f"environment {env_var}"
        if name in self._files:
            value, path = self._files[name]
            return value, f"file {path}"
        return _UNSET, "default"

    def _raw(self, definition: Setting, task: Any) -> tuple[Any, str]:
        raw, source = self.lookup(definition.name, task)
        if raw is not _UNSET:
            return raw, source
        default = self.defaults.get(definition.name, definition.default)
        return (
            list(default) if isinstance(default, list) else dict(default) if isinstance(default, dict) else default,
            "default",
        )

    def _merged(self, name: str, task: Any, task_value: Any) -> tuple[Any, str]:
        """b2luigi's merge of a dict setting: the global value updated by the task's."""
        general, source = self.lookup(name, None)
        if general is _UNSET or not isinstance(general, Mapping) or not isinstance(task_value, Mapping):
            return task_value, "task"
        return {**general, **task_value}, f"{source} + task"

    def _translate(self, name: str, task: Any, raw: Any, source: str) -> tuple[Any, str]:
        """Take b2luigi's equivalent keys into account (b2luigi key -> setting here)."""
        if name == "resources":
            extra = {}
            for key, target in (("queue", "queue"), ("job_slots", "cpus")):
                value, _where = self.lookup(key, task)
                if value is not _UNSET and value is not None and value is not False:
                    extra[target] = value
            if extra and isinstance(raw, Mapping):
                merged = dict(raw)
                for key, value in extra.items():
                    if key == "queue" and "partition" in merged:
                        continue
                    merged.setdefault(key, value)
                return merged, source
            return raw, source
        if name == "slurm_extra_args":
            general, _ = self.lookup("slurm_settings", None)
            own, _ = self.lookup("slurm_settings", task)
            options: dict[str, Any] = {}
            for part in (general, own):
                if isinstance(part, Mapping):
                    options.update(part)
                elif part is not _UNSET and part is not None:
                    raise ConfigError(
                        f"slurm_settings must be a mapping of sbatch options to values, not {part!r}",
                        setting="slurm_settings",
                        task=_task_name(task),
                    )
            if not options:
                return raw, source
            translated = [f"--{k}={v}" for k, v in options.items()]
            return [*(raw if isinstance(raw, list) else _as_str_list(raw)), *translated], f"{source} + slurm_settings"
        if source != "default":
            return raw, source
        for key, target in B2LUIGI_TRANSLATED.items():
            if target != name or target in ("resources", "slurm_extra_args"):
                continue
            value, where = self.lookup(key, task)
            if value is _UNSET or value in ("", None):
                continue
            if name == "apptainer_extra_args" and isinstance(value, str):
                value = shlex.split(value)
            return value, f"{where} ({key})"
        if name == "runtime":
            image, _where = self.lookup("image", task)
            b2image, where = self.lookup("apptainer_image", task)
            if image is _UNSET and b2image not in (_UNSET, "", None):
                return "apptainer", f"{where} (apptainer_image)"
        return raw, source

    def all(self, task: Any = None) -> Iterator[Resolved]:
        _with_plugins()
        for name in list(DEFINITIONS):
            yield self.resolve(name, task)

    def values(self, task: Any = None) -> dict[str, Any]:
        return {r.name: r.value for r in self.all(task)}


def _task_name(task: Any) -> str | None:
    return None if task is None else str(getattr(task, "task_id", task))


def _is_task(value: Any) -> bool:
    return hasattr(value, "task_id") and hasattr(value, "param_kwargs")


def get_setting(name: str, default: Any = _UNSET, task: Any = None, **kwargs: Any) -> Any:
    """Look up one setting, with b2luigi's signature ``get_setting(key, default=None, task=None)``.

    Parameters
    ----------
    name:
        A setting of containerbatch, a b2luigi setting, or any custom key.
    default:
        Returned when nothing along the chain sets ``name`` (the built-in default does not count).
    task:
        The task whose attributes come first.  ``get_setting(name, task)`` (the order of earlier
        containerbatch versions) is understood too.

    Returns
    -------
    Any
        The validated value for settings of containerbatch, the value as given for other keys, or None
        when a custom key is set nowhere and no default is given.
    """
    if kwargs.keys() - {"deprecated_keys"}:
        raise TypeError(f"get_setting() got unexpected arguments {sorted(kwargs)}")
    if task is None and default is not _UNSET and _is_task(default):
        task, default = default, _UNSET
    resolved = SettingsResolver().resolve(name, task)
    if resolved.source == "default" and default is not _UNSET:
        return default
    return resolved.value
