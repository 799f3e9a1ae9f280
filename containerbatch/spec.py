"""JobSpec: everything one attempt of one task needs, built once, frozen.

Resource strings are validated here, so a bad one is a ConfigError before
anything is submitted.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from containerbatch.errors import ConfigError

_MEM_UNITS = {
    "": 1024**2,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DUR_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]+)")
#: bounds of resource requests (larger ones are typing errors, and overflow what schedulers take)
MAX_MEMORY_MB = 1024**3  # 1 PiB
MAX_WALLTIME_S = 366 * 86400 * 10
MAX_COUNT = 1_000_000
#: an env value longer than this breaks job.sh's command line on some systems (execve's MAX_ARG_STRLEN)
MAX_ENV_VALUE = 128 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _bounded(value: float, maximum: float) -> bool:
    """Whether a number is finite, positive and at most ``maximum`` (ints of any size compare exactly)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return bool(0 < value <= maximum)


def parse_memory(value: Any) -> int:
    """Memory in MiB (rounded up) from ``4GB``, ``4 GiB``, ``512M``, or a bare number of MiB.

    >>> parse_memory("4GB"), parse_memory("4 GiB"), parse_memory(2048), parse_memory("1.5g")
    (3815, 4096, 2048, 1431)
    """
    if isinstance(value, bool):
        raise ValueError(f"memory must be like '4GB' or '512MiB', not {value!r}")
    if isinstance(value, (int, float)):
        if not _bounded(value, MAX_MEMORY_MB):
            raise ValueError(f"memory must be a positive number of MiB up to {MAX_MEMORY_MB}, not {value!r}")
        return max(1, math.ceil(value))
    match = _MEM_RE.match(str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _MEM_UNITS:
        raise ValueError(f"memory must be like '4GB', '4 GiB' or '512MB', not {value!r}")
    size = float(match.group(1)) * _MEM_UNITS[unit]
    if not math.isfinite(size) or size <= 0 or size > MAX_MEMORY_MB * 1024**2:
        raise ValueError(f"memory must be more than 0 and at most {MAX_MEMORY_MB // 1024**2} TiB, not {value!r}")
    return max(1, -(-int(size) // 1024**2))


def parse_duration(value: Any) -> int:
    """Seconds from ``2h``, ``90min``, ``1:30:00``, ``1-00:00:00``, ``1h30m`` or a number of seconds.

    >>> parse_duration("2h"), parse_duration("90min"), parse_duration("1:30:00"), parse_duration("1-2:00:00")
    (7200, 5400, 5400, 93600)
    """
    if isinstance(value, bool):
        raise ValueError(f"walltime must be like '2h', '90min' or '1:30:00', not {value!r}")
    if isinstance(value, (int, float)):
        if not _bounded(value, MAX_WALLTIME_S):
            raise ValueError(f"walltime must be a positive number of seconds up to {MAX_WALLTIME_S}, not {value!r}")
        return max(1, int(value))
    text = str(value).strip()
    days = 0
    if re.fullmatch(r"\d+-\d+(:\d+){0,2}", text):
        d, text = text.split("-", 1)
        days = int(d)
    if re.fullmatch(r"\d+(:\d+){1,2}", text) or (days and re.fullmatch(r"\d+", text)):
        parts = [int(p) for p in text.split(":")]
        if days and len(parts) == 1:
            parts = [parts[0], 0, 0]
        while len(parts) < 3:
            parts.insert(0, 0)
        h, m, s = parts
        total = days * 86400 + h * 3600 + m * 60 + s
    elif re.fullmatch(r"\d+(\.\d+)?", text):
        total = int(float(text))
    else:
        pieces = _DUR_RE.findall(text)
        if not pieces or _DUR_RE.sub("", text).strip() or any(u.lower() not in _DUR_UNITS for _, u in pieces):
            raise ValueError(f"walltime must be like '2h', '90min', '1h30m' or '1:30:00', not {value!r}")
        total = int(sum(float(n) * _DUR_UNITS[u.lower()] for n, u in pieces))
    if total <= 0:
        raise ValueError(f"walltime must be positive, not {value!r}")
    if total > MAX_WALLTIME_S:
        raise ValueError(f"walltime must be at most {MAX_WALLTIME_S // 86400} days, not {value!r}")
    return total


@dataclass(frozen=True)
class Resources:
    """Validated resource request. Memory and disk in MiB, walltime in seconds."""

    memory_mb: int | None = None
    cpus: int | None = None
    walltime_s: int | None = None
    gpus: int | None = None
    disk_mb: int | None = None
    queue: str | None = None
    account: str | None = None

    KEYS = ("memory", "cpus", "walltime", "gpus", "disk", "partition", "queue", "account")

    @classmethod
    def parse(cls, raw: Mapping[str, Any], task: str | None = None) -> Resources:
        # integer entries with other names are luigi's own scheduler resources
        # (concurrency counters), which luigi's `resources` attribute also holds
        unknown = sorted(
            k for k, v in raw.items() if k not in cls.KEYS and (not isinstance(v, int) or isinstance(v, bool))
        )
        if unknown:
            raise ConfigError(
                f"unknown resource(s) {unknown}; known: {', '.join(cls.KEYS)} (integer entries with "
                "other names are passed to luigi's scheduler as resource counters)",
                setting="resources",
                task=task,
            )
        try:

            def count(key: str) -> int | None:
                if raw.get(key) is None:
                    return None
                value = raw[key]
                if isinstance(value, bool) or not str(value).isdigit():
                    raise ValueError(f"{key} must be a whole number, not {value!r}")
                number = int(value)
                if number > MAX_COUNT or (number < 1 and key != "gpus"):
                    low = 0 if key == "gpus" else 1
                    raise ValueError(f"{key} must be between {low} and {MAX_COUNT}, not {value!r}")
                return number

            queue = raw.get("partition", raw.get("queue"))
            return cls(
                memory_mb=None if raw.get("memory") is None else parse_memory(raw["memory"]),
                cpus=count("cpus"),
                walltime_s=None if raw.get("walltime") is None else parse_duration(raw["walltime"]),
                gpus=count("gpus"),
                disk_mb=None if raw.get("disk") is None else parse_memory(raw["disk"]),
                queue=None if queue is None else str(queue),
                account=None if raw.get("account") is None else str(raw["account"]),
            )
        except ValueError as exc:
            raise ConfigError(str(exc), setting="resources", task=task) from None


#: stands for the job's scratch folder on the node (``$_CONDOR_SCRATCH_DIR``) in argv that
#: job.sh runs; jobscript quotes it as a shell variable
SCRATCH = "@CB_SCRATCH@"
#: the folder under the scratch folder that mirrors the submit-side paths of a staged job
STAGE_ROOT = SCRATCH + "/cb_root"


@dataclass(frozen=True)
class Bind:
    """A bind mount: host ``src`` at ``dst`` inside the container."""

    src: str
    dst: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str, base: Path, task: str | None = None) -> Bind:
        parts = text.split(":")
        if not parts[0] or len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ConfigError(f"bind {text!r} must be src[:dst[:ro|rw]]", setting="binds", task=task)
        src = str((base / parts[0]).resolve()) if not parts[0].startswith("/") else parts[0]
        dst = parts[1] if len(parts) > 1 and parts[1] else src
        if not dst.startswith("/"):
            raise ConfigError(f"bind destination {dst!r} must be an absolute path", setting="binds", task=task)
        if not Path(src).exists():
            raise ConfigError(
                f"bind source {src} does not exist; create it or fix the setting", setting="binds", task=task
            )
        return cls(src, dst, len(parts) == 3 and parts[2] == "ro")

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class JobSpec:
    """One attempt of one task, with every setting resolved and validated."""

    run_id: str
    task_id: str
    task_family: str
    task_module: str
    module_file: str
    params: Mapping[str, str]
    attempt: int
    batch_system: str
    runtime: str
    image: str | None
    working_dir: str
    result_dir: str
    log_dir: str
    state_dir: str
    job_dir: str
    marker_path: str
    job_name: str
    executable: tuple[str, ...]
    binds: tuple[Bind, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    env_script: str | None = None
    resources: Resources = Resources()
    bundle_dir: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: the attempt's submission key, kept by the batch system with the job (a comment, a ClassAd attribute):
    #: a submitter killed before it journaled the job id finds the job by it (``Scheduler.find_jobs``)
    submit_key: str = ""

    @property
    def staged(self) -> bool:
        """Whether the node has no shared filesystem: inputs travel in, outputs come back (``transfer_files``
        on a scheduler that declares ``STAGES_FILES``, such as HTCondor); the container then sees scratch
        folders at the submit-side paths."""
        if not self.settings.get("transfer_files"):
            return False
        from containerbatch.plugins import schedulers

        try:
            return bool(getattr(schedulers.get(self.batch_system), "STAGES_FILES", False))
        except ConfigError:
            return False

    def node_path(self, path: str) -> str:
        """Where a submit-side ``path`` lies on the node: itself, or under the job's scratch folder."""
        return f"{STAGE_ROOT}{path}" if self.staged else path

    @property
    def script_path(self) -> str:
        return str(Path(self.job_dir) / "job.sh")

    @property
    def stdout_path(self) -> str:
        return str(Path(self.job_dir) / "stdout")

    @property
    def stderr_path(self) -> str:
        return str(Path(self.job_dir) / "stderr")

    @property
    def result_path(self) -> str:
        return str(Path(self.job_dir) / "result.json")

    @property
    def exit_code_path(self) -> str:
        return str(Path(self.job_dir) / "exit_code")

    @property
    def container_name(self) -> str:
        digest = hashlib.sha1(f"{self.run_id}/{self.task_id}".encode()).hexdigest()[:10]
        return f"cb-{digest}-{self.attempt}"

    def runner_argv(self) -> list[str]:
        """The command that runs the task: ``python3 -m containerbatch.runner JOBDIR``."""
        return [*self.executable, "-m", "containerbatch.runner", self.job_dir]

    def with_attempt(self, attempt: int, **changes: Any) -> JobSpec:
        job_dir = str(Path(self.job_dir).parent / f"attempt-{attempt}")
        marker = str(Path(self.marker_path).parent / f"{Path(self.job_dir).parent.name}.{attempt}")
        return replace(self, attempt=attempt, job_dir=job_dir, marker_path=marker, **changes)


def guess_runtime(image: str | None) -> str:
    """``runtime = auto``: host without an image, else the runtime plugin claiming the image most strongly
    (apptainer: ``foo.sif``, sandbox folders, URIs; docker: ``name:tag``; a plugin may claim its own)."""
    from containerbatch.plugins import guess_runtime as guess

    return guess(image)


def task_location(task: Any) -> tuple[str, str]:
    """The module name and source file a task class is defined in."""
    cls = type(task)
    module = cls.__module__
    try:
        path = inspect.getfile(cls)
    except TypeError:
        path = ""
    if module == "__main__" and not path:
        path = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    if not path:
        raise ConfigError(
            f"cannot tell which file defines {cls.__name__}; define tasks in a .py file",
            task=str(getattr(task, "task_id", task)),
        )
    return module, str(Path(path).resolve())


def _safe(text: str, limit: int = 120) -> str:
    """A file name for ``text``: other characters as ``_``; when that changed or cut it, a hash of ``text``
    keeps distinct texts distinct (bounded length).

    >>> _safe("Fit_a_1"), len(_safe("F" * 300)), _safe("F" * 300) != _safe("F" * 299 + "G")
    ('Fit_a_1', 120, True)
    """
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", text)
    if clean == text and len(clean) <= limit and clean not in (".", ".."):
        return clean
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{clean[: limit - 17]}-{digest}"


def check_env(env: Mapping[str, Any], task: str | None = None) -> dict[str, str]:
    """The ``env`` setting, checked: names are identifiers, values strings without NUL, of bounded length."""
    checked = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ConfigError(
                f"environment variable name {key!r} is not a valid name (letters, digits and _, not starting with "
                "a digit)",
                setting="env",
                task=task,
            )
        text = str(value)
        if "\0" in text:
            raise ConfigError(f"the value of {key} holds a NUL character", setting="env", task=task)
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ENV_VALUE:
            raise ConfigError(
                f"the value of {key} is {len(text.encode('utf-8', 'surrogatepass'))} bytes; at most {MAX_ENV_VALUE} "
                "fit (the kernel limits one variable to 128 KiB); pass a file path instead",
                setting="env",
                task=task,
            )
        checked[key] = text
    return checked


def build_spec(
    task: Any, values: Mapping[str, Any], run_id: str, attempt: int = 1, bundle_dir: str | None = None
) -> JobSpec:
    """Build the JobSpec for ``task`` from resolved setting ``values``."""
    task_id = str(task.task_id)
    working_dir = Path(values["working_dir"] or Path.cwd()).resolve()
    if not working_dir.is_dir():
        raise ConfigError(f"working directory {working_dir} does not exist", setting="working_dir", task=task_id)
    result_dir = (working_dir / values["result_dir"]).resolve()
    log_dir = (working_dir / values["log_dir"]).resolve()
    state_dir = (working_dir / values["state_dir"]).resolve()
    runtime = values["runtime"]
    image = values["image"]
    if runtime == "auto":
        runtime = guess_runtime(image)
    if runtime != "host" and not image:
        raise ConfigError(
            f"runtime {runtime!r} needs an image: set `image` on the task or pass --image",
            setting="image",
            task=task_id,
        )
    env_script = values["env_script"]
    if env_script:
        env_path = (working_dir / env_script).resolve()
        if not env_path.is_file():
            raise ConfigError(f"env_script {env_path} does not exist", setting="env_script", task=task_id)
        env_script = str(env_path)
    module, module_file = task_location(task)
    executable = tuple(values["executable"]) or ((sys.executable,) if runtime == "host" else ("python3",))
    key = _safe(task_id)
    job_dir = log_dir / _safe(task.task_family) / key / f"attempt-{attempt}"
    marker = state_dir / "runs" / run_id / "done" / f"{key}.{attempt}"
    job_name = values["job_name"] or f"cb-{run_id[-6:]}-{_safe(task.task_family)}"[:64]
    binds = tuple(Bind.parse(b, working_dir, task_id) for b in values["binds"])
    return JobSpec(
        run_id=run_id,
        task_id=task_id,
        task_family=task.task_family,
        task_module=module,
        module_file=module_file,
        params=MappingProxyType(dict(task.to_str_params())),
        attempt=attempt,
        batch_system=values["batch_system"],
        runtime=runtime,
        image=image,
        working_dir=str(working_dir),
        result_dir=str(result_dir),
        log_dir=str(log_dir),
        state_dir=str(state_dir),
        job_dir=str(job_dir),
        marker_path=str(marker),
        job_name=job_name,
        executable=executable,
        binds=binds,
        env=MappingProxyType(check_env(values["env"], task_id)),
        env_script=env_script,
        resources=Resources.parse(values["resources"], task_id),
        bundle_dir=bundle_dir,
        settings=MappingProxyType(dict(values)),
    )
