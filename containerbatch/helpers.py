"""Helpers a scheduler or runtime plugin imports: directive quoting, durations, sizes, job names, resources.

Everything here is a pure function of its arguments, raises :class:`~containerbatch.errors.ConfigError`
(naming the setting the value came from) for what a batch system cannot carry, and is used by the
built-in schedulers too, so a plugin writes the same text they do::

    from containerbatch.helpers import directive_quote, hms, job_name, map_resources

    flags = map_resources(
        spec.resources,
        "pbs",
        walltime_s=lambda s: ["-l", f"walltime={hms(s)}"],
        memory_mb="-l mem={}mb",
    )
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from containerbatch.errors import ConfigError
from containerbatch.spec import JobSpec, Resources

log = logging.getLogger(__name__)

_SAFE_WORD = re.compile(r"[A-Za-z0-9_.,:/=+@%-]+")


def directive_quote(value: object, directive: str = "#SBATCH", setting: str | None = None) -> str:
    """Quote one word for a directive line in a job script (``#SBATCH``, ``#$``, ``#PBS``, ``#BSUB``).

    Such lines are read by the submit command, not by a shell: words split on whitespace, ``'…'`` and
    ``"…"`` group, a backslash escapes the next character, an unquoted ``#`` starts a comment, and a
    line cannot continue.  Plain words stay as they are; anything else goes in double quotes with
    ``\\`` and ``"`` escaped.  A line break, carriage return or NUL cannot be written: ConfigError.

    >>> directive_quote("--mem=4M"), directive_quote('--comment=a "b" #c')
    ('--mem=4M', '"--comment=a \\\\"b\\\\" #c"')
    """
    text = str(value)
    if any(c in text for c in "\n\r\0"):
        raise ConfigError(
            f"{text!r} contains a line break, which a {directive} line cannot hold", setting=setting or directive
        )
    if _SAFE_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hms(seconds: int, days: bool = False) -> str:
    """A duration as ``H:MM:SS`` (hours may exceed 24), or ``D-HH:MM:SS`` with ``days`` (Slurm's ``--time``).

    >>> hms(5400), hms(93600), hms(93600, days=True), hms(59)
    ('1:30:00', '26:00:00', '1-02:00:00', '0:00:59')
    """
    if seconds <= 0:
        raise ConfigError(f"walltime must be positive, not {seconds} s", setting="resources")
    seconds = int(seconds)
    if not days:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    whole_days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{whole_days}-{text.zfill(8)}" if whole_days else text


def minutes(seconds: int) -> int:
    """Whole minutes, rounded up (schedulers that count walltime in minutes never cut a job short).

    >>> minutes(1), minutes(60), minutes(61)
    (1, 1, 2)
    """
    if seconds <= 0:
        raise ConfigError(f"walltime must be positive, not {seconds} s", setting="resources")
    return -(-int(seconds) // 60)


def hours_minutes(seconds: int) -> str:
    """``[h:]mm`` in whole minutes rounded up (LSF's ``-W``).

    >>> hours_minutes(59), hours_minutes(3600), hours_minutes(5430)
    ('1', '1:00', '1:31')
    """
    hours, rest = divmod(minutes(seconds), 60)
    return f"{hours}:{rest:02d}" if hours else str(rest)


#: factors from MiB (the unit of :class:`~containerbatch.spec.Resources`) to other units; K/M/G/T are
#: binary, as every batch system here reads them
MEMORY_UNITS: Mapping[str, float] = {"K": 1024.0, "M": 1.0, "G": 1 / 1024, "T": 1 / 1024**2}


def memory_in(mebibytes: int, unit: str, per: int = 1) -> int:
    """``mebibytes`` in ``unit`` (K, M, G, T; a trailing B or iB is accepted), divided by ``per``, rounded up.

    ``per`` divides a total into per-slot amounts (Grid Engine's ``h_vmem`` counts per slot).

    >>> memory_in(4096, "GB"), memory_in(1500, "G"), memory_in(1, "KB"), memory_in(4096, "M", per=3)
    (4, 2, 1024, 1366)
    """
    key = unit.upper().removesuffix("IB").removesuffix("B") or "M"
    if key not in MEMORY_UNITS:
        raise ConfigError(f"unknown memory unit {unit!r}; use one of K, M, G, T", setting="resources")
    return max(1, math.ceil(mebibytes * MEMORY_UNITS[key] / max(1, per)))


def job_name(
    text: str,
    allowed: str = r"A-Za-z0-9_.-",
    max_length: int = 64,
    fallback: str = "containerbatch",
    letter_first: bool = False,
    forbidden: str | None = None,
) -> str:
    """``text`` with every character outside ``allowed`` (the body of a regex character class) replaced by
        ``_``, cut to ``max_length``; ``fallback`` when nothing is left.  ``letter_first`` puts a ``j`` before a
        leading digit (Grid Engine and PBS refuse names that start with one).  With ``forbidden`` (a character
    class body too) only those characters are replaced and ``allowed`` is not used.

        >>> job_name("cb-1a2b3c-Fit(x=1)"), job_name("4you", letter_first=True), job_name("")
        ('cb-1a2b3c-Fit_x_1_', 'j4you', 'containerbatch')
        >>> job_name("a[1] b", forbidden=r"\\[\\]")  # brackets would make an LSF array
        'a_1_ b'
    """
    pattern = f"[{forbidden}]" if forbidden is not None else f"[^{allowed}]"
    name = re.sub(pattern, "_", text)[:max_length]
    if letter_first and name[:1].isdigit():
        name = ("j" + name)[:max_length]
    return name or fallback


def extra_args(spec: JobSpec, setting: str, tool: str) -> list[str]:
    """The list setting ``setting`` (e.g. ``slurm_extra_args``) of ``spec``, each item an option of ``tool``.

    An item that does not start with ``-`` is a ConfigError (a stray word would become the script name).
    """
    items = [str(item) for item in spec.settings.get(setting) or []]
    for item in items:
        if not item.startswith("-"):
            raise ConfigError(
                f"{item!r} is not a {tool} option; each item of {setting} must start with '-'",
                setting=setting,
                task=spec.task_id,
            )
    return items


Flag = str | Callable[[Any], Iterable[str] | str]
RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))


def map_resources(resources: Resources, scheduler: str, ignore: Iterable[str] = (), **flags: Flag) -> list[str]:
    """The options requesting ``resources``, from one entry per resource field that the scheduler carries.

    Each keyword names a field of :class:`~containerbatch.spec.Resources` (``memory_mb``, ``cpus``,
    ``walltime_s``, ``gpus``, ``disk_mb``, ``queue``, ``account``) and gives either a ``str.format``
    template (split on spaces into words first: ``"-l h_rt={}"`` gives two words, the value always in one)
    or a callable returning the words (or one word), in the order given.  Fields that are unset are
    skipped; a field that is set but has no entry (and is not in ``ignore``) is logged as a warning,
    since the batch system would not see that request.

    >>> map_resources(Resources(cpus=2, queue="short"), "x", cpus="--cpus={}", queue="-q {}")
    ['--cpus=2', '-q', 'short']
    """
    unknown = sorted(set(flags) - set(RESOURCE_FIELDS))
    if unknown:
        raise TypeError(f"map_resources: {unknown} are not fields of Resources ({', '.join(RESOURCE_FIELDS)})")
    words: list[str] = []
    skipped = set(ignore)
    for name in RESOURCE_FIELDS:
        value = getattr(resources, name)
        if value not in (None, 0, "") and name not in flags and name not in skipped:
            log.warning("%s cannot request %s; the request %s=%r is not passed on", scheduler, name, name, value)
    for name, flag in flags.items():  # in the order given
        value = getattr(resources, name)
        if value is None or value == 0 or value == "":
            continue
        if isinstance(flag, str):
            words += [word.format(value) for word in flag.split(" ")]
        else:
            produced = flag(value)
            words += [produced] if isinstance(produced, str) else list(produced)
    return words
