"""Machinery for fakes of a batch system's commands, so a plugin's tests need no real cluster.

A fake is one small executable script per command (``mysub``, ``mystat``, ``mydel``) that calls into
this module.  What the commands print is the fake's business (the real tool's formats); what is shared
lives here, and the built-in fakes of LSF and HTCondor (``tests/fakes/fake_lsf.py``,
``tests/fakes/fake_htcondor.py``) use exactly this:

* **State**: one folder (``$CB_FAKE_STATE``, or the variable a fake names) with ``state.json`` (a
  section ``{"next": int, "jobs": {id: job}}`` per fake scheduler) and ``faults.json``, both read and
  written back under an ``fcntl`` lock on ``state.lock`` (:func:`locked`); ``calls.log``, one JSON line
  per command call (``time``, ``tool``, ``argv``; a contract's ``status_calls`` hook reads it);
  ``supervisor.log``.
* **Jobs run for real**: submitting spawns a detached supervisor (own session) that starts the job in
  its own process group, waits for it and records the outcome under the lock, so jobs outlive the
  command that submitted them, as on a batch system.  A kill is SIGTERM, SIGCONT and a SIGKILL after
  ``CB_FAKE_KILL_GRACE`` seconds (default 2) from a detached helper (:func:`terminate`).
* **Faults**, deterministic, from ``python -m containerbatch.testing.fakes fault ...`` (or the fake's
  own front end) into ``faults.json``: ``error TOOL`` (the real error text, from
  :attr:`FakeScheduler.errors`), ``hang TOOL SECONDS``, ``garbage TOOL`` (each with ``--count N``,
  ``--for S``, ``--until T``), and job faults ``vanish|hold|nodefail|memlimit SCHED JOB`` that each
  scheduler acts out its own way (:meth:`FakeScheduler.apply_fault`); ``clear``, ``list``, ``cleanup``.

Two ways to write a fake.  The smallest: :class:`FakeBatch`, a ready job store whose jobs are bash
scripts (``submit``, ``jobs``, ``kill``), with the faults above for free::

    #!/usr/bin/env python3
    import sys
    from containerbatch.testing.fakes import FakeBatch

    batch = FakeBatch.from_env("CB_TOYQ_STATE", tool="toyq-sub", argv=sys.argv[1:])
    job = batch.submit(sys.argv[-1], cwd=".", stdout="out", stderr="err")
    print(f"job {job} queued")

A fuller one (the built-in LSF and HTCondor fakes): subclass :class:`FakeScheduler` (its ``name``, its
``commands``, its ``errors``, the job-life hooks), :func:`register` an instance at import, make the
module runnable (``if __name__ == "__main__": sys.exit(cli(sys.argv[1:]))``: the supervisor runs it by
file) and have each command script call :func:`main`.

Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

#: the environment variable naming the state folder, unless a fake names another
STATE_VARIABLE = "CB_FAKE_STATE"
#: what ``garbage`` prints unless told otherwise
GARBAGE = '\x00\x1b[0m<html><head><title>502 Bad Gateway</title></head>\n{"COMMAND":"bjo\n'
TOOL_FAULTS = ("error", "hang", "garbage")
JOB_FAULTS = ("vanish", "hold", "nodefail", "memlimit")

#: the fake schedulers this process knows, by name (their section of state.json)
SCHEDULERS: dict[str, FakeScheduler] = {}
_state_folder: list[str] = []  # set by state_folder() / FakeBatch: wins over the environment variable
_state_variable: list[str] = []


def envf(name: str, default: float) -> float:
    """A number from the environment (a knob of a fake); ``default`` when unset or not a number."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


# --------------------------------------------------------------------------- state


def state_dir() -> str:
    """The state folder (created): the one :func:`state_folder` set, else ``$CB_FAKE_STATE``; exit 2 if neither."""
    if _state_folder:
        folder = _state_folder[-1]
    else:
        variable = _state_variable[-1] if _state_variable else STATE_VARIABLE
        folder = os.environ.get(variable, "")
        if not folder:
            sys.stderr.write(f"fake: {variable} is not set; export {variable}=<directory> for the fake's state\n")
            raise SystemExit(2)
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def state_folder(folder: str | os.PathLike[str]) -> Iterator[str]:
    """Within the block, the fakes' state is in ``folder`` (whatever the environment says)."""
    _state_folder.append(os.fspath(folder))
    try:
        yield _state_folder[-1]
    finally:
        _state_folder.pop()


def use_state_variable(variable: str) -> None:
    """From now on (this process) the state folder is named by ``variable`` instead of ``CB_FAKE_STATE``."""
    _state_variable.append(variable)


def read_json(path: str, default: Any) -> Any:
    """The JSON in ``path``; ``default`` when it is missing or not JSON."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return default


def write_json(path: str, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked() -> Iterator[dict[str, Any]]:
    """``{"state": {sched: {"next", "jobs"}}, "faults": [...]}`` under the lock; written back on exit."""
    folder = state_dir()
    with open(os.path.join(folder, "state.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        box = {
            "state": read_json(os.path.join(folder, "state.json"), {}),
            "faults": read_json(os.path.join(folder, "faults.json"), []),
        }
        for name in SCHEDULERS:
            box["state"].setdefault(name, {"next": 1, "jobs": {}})
        before = json.dumps(box["faults"], sort_keys=True)
        yield box
        write_json(os.path.join(folder, "state.json"), box["state"])
        faults = os.path.join(folder, "faults.json")
        if json.dumps(box["faults"], sort_keys=True) != before or not os.path.exists(faults):
            write_json(faults, box["faults"])


def log_call(tool: str, argv: Iterable[str]) -> None:
    """Append one call to ``calls.log``."""
    line = json.dumps({"tool": tool, "argv": list(argv), "time": time.time()}) + "\n"
    fd = os.open(os.path.join(state_dir(), "calls.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def slog(msg: str) -> None:
    """A line in ``supervisor.log`` (what the supervisors did, for debugging a test)."""
    with open(os.path.join(state_dir(), "supervisor.log"), "a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {os.getpid()} {msg}\n")


# --------------------------------------------------------------------------- processes


def pg_signal(pid: Any, sig: int) -> bool:
    """Signal a job's process group; False when there is none."""
    if not pid:
        return False
    try:
        os.killpg(int(pid), sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_now(job: dict[str, Any]) -> None:
    """SIGKILL the job's process group (and SIGCONT, in case it was stopped)."""
    pg_signal(job.get("pid"), signal.SIGKILL)
    pg_signal(job.get("pid"), signal.SIGCONT)


def spawn_escalation(pid: int, grace: float | None = None) -> None:
    """SIGKILL the process group after the grace period (``CB_FAKE_KILL_GRACE``), from a detached helper."""
    grace = envf("CB_FAKE_KILL_GRACE", 2) if grace is None else grace
    subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "_escalate", str(pid), str(grace)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def terminate(pid: Any, first: int = signal.SIGTERM) -> None:
    """What a batch system's kill does: ``first`` (SIGTERM), SIGCONT, and SIGKILL after the grace period."""
    if pg_signal(pid, first):
        pg_signal(pid, signal.SIGCONT)
        spawn_escalation(int(pid))


def suspend(job: dict[str, Any]) -> None:
    """Mark the job suspended; a running process is SIGSTOPped, one not started yet stays unstarted."""
    job["suspended"] = True
    if job.get("running"):
        pg_signal(job.get("pid"), signal.SIGSTOP)


def open_out(path: str | None, append: bool, default: str = os.devnull) -> IO[bytes]:
    """Open a job's output file as the batch system would (its folder must exist)."""
    path = path or default
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise OSError(2, "No such file or directory", path)
    return open(path, "ab" if append else "wb")


def start_process(
    sched: str, job: dict[str, Any], argv: list[str], cwd: str, env: dict[str, str] | None, merge_stderr: bool
) -> subprocess.Popen[bytes]:
    """Start a job's process in its own process group (``stdout``/``stderr`` of the job; with ``merge_stderr``
    and no ``stderr`` the error stream goes to stdout) and record ``pid``, ``running``, ``start_time``."""
    out = open_out(job.get("stdout"), job.get("stdout_append", False))
    err: IO[bytes] | int
    if job.get("stderr"):
        err = open_out(job["stderr"], job.get("stderr_append", False))
    elif merge_stderr:
        err = subprocess.STDOUT
    else:
        err = open_out(None, False)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        out.close()
        if not isinstance(err, int):
            err.close()
    job.update(pid=proc.pid, running=True, start_time=time.time(), suspended=False)
    slog(f"started {sched} {job.get('id')} pid {proc.pid}")
    return proc


# --------------------------------------------------------------------------- a fake scheduler


class FakeScheduler:
    """One fake batch system: its commands, their error texts, and how its jobs live and die.

    The defaults fit a system whose job record says ``final`` when the job is over; override the hooks
    to keep the record the real tools report from (LSF's ``final``/``exit_code``, HTCondor's
    ``JobStatus``...).  Every hook that takes a job is called under the lock with the job's record,
    which it may change.
    """

    #: the section of state.json and the ``SCHED`` of job faults
    name: str = ""
    #: tool name -> the function acting it out (argv without the tool name) -> exit code
    commands: dict[str, Callable[[list[str]], int]] = {}
    #: tool name -> (stderr text, exit code) of ``error TOOL``
    errors: dict[str, tuple[str, int]] = {}
    #: with no ``stderr`` file, the job's error stream goes to its stdout file (else to /dev/null)
    merge_stderr: bool = False

    def entry(self) -> list[str]:
        """The command line that runs this module's :func:`cli` (the supervisor calls ``_supervise`` on it)."""
        module = sys.modules[type(self).__module__]
        return [sys.executable, os.path.abspath(str(module.__file__))]

    def job_id(self, text: str) -> str:
        """A job id as a fault names it -> the key in the jobs section."""
        return text

    def is_over(self, job: dict[str, Any]) -> bool:
        """The job has ended for good (its supervisor stops)."""
        return bool(job.get("final"))

    def is_waiting(self, job: dict[str, Any]) -> bool:
        """The job may not start yet (held, suspended, or before ``start_after``)."""
        return bool(job.get("suspended")) or time.time() < job.get("start_after", 0)

    def launch(self, job: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start the job (``argv`` in ``cwd`` with ``env``); raise OSError when it cannot start."""
        if not os.path.isdir(job["cwd"]):
            raise OSError(2, "No such file or directory", job["cwd"])
        return start_process(self.name, job, job["argv"], job["cwd"], job.get("env"), self.merge_stderr)

    def launch_failed(self, job: dict[str, Any], error: OSError) -> None:
        """The job could not start (its folder or program is missing)."""
        job.update(final="EXIT", exit_code=127, end_time=time.time(), running=False)

    def run_limit(self, job: dict[str, Any]) -> float | None:
        """The epoch time the running job is killed at (its run-time limit), or None."""
        return None

    def on_run_limit(self, job: dict[str, Any]) -> int:
        """The job reached :meth:`run_limit`: note why, return the first signal."""
        return signal.SIGTERM

    def finish(self, job: dict[str, Any], rc: int) -> bool:
        """The job's process ended with ``rc`` (negative: signal): record it; False: it runs again."""
        code = rc if rc >= 0 else 128 - rc
        job.update(final="DONE" if code == 0 else "EXIT", exit_code=code, end_time=time.time())
        return True

    def apply_fault(self, fault: dict[str, Any], job: dict[str, Any], now: float) -> bool:
        """Act out a job fault (``hold``, ``nodefail``, ``memlimit``) on a job not over; False: not yet."""
        if fault["kind"] == "hold":
            suspend(job)
            return True
        if not job.get("running"):
            return False  # nodefail/memlimit wait for the job to run
        kill_now(job)
        return True


def register(sched: FakeScheduler) -> FakeScheduler:
    """Make ``sched`` known to this process (its state section, its faults, its commands)."""
    SCHEDULERS[sched.name] = sched
    return sched


def spawn_supervisor(sched: str, job_id: str) -> None:
    """Start the detached process that runs the job ``job_id`` of the fake ``sched``."""
    subprocess.Popen(
        [*SCHEDULERS[sched].entry(), "_supervise", sched, job_id, state_dir()],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        env=dict(os.environ),
    )


def supervise(name: str, job_id: str) -> None:
    """The supervisor of one job: wait while it may not start, run it, record the end (again if re-queued)."""
    sched = SCHEDULERS[name]
    pend = envf("CB_FAKE_PEND_SECONDS", 0)
    if pend:
        time.sleep(pend)
    while True:
        proc: subprocess.Popen[bytes] | None = None
        with locked() as box:
            job = box["state"][name]["jobs"].get(job_id)
            if job is None:
                return
            job["sup_pid"] = os.getpid()
            apply_job_faults(box)
            if sched.is_over(job) or job.get("vanished"):
                job["running"] = False
                return
            if not sched.is_waiting(job):
                try:
                    proc = sched.launch(job)
                except OSError as error:
                    slog(f"launch of {name} {job.get('id')} failed: {error}")
                    sched.launch_failed(job, error)
                    return
                apply_job_faults(box)
        if proc is None:
            time.sleep(0.1)
            continue
        rc = _wait(sched, job_id, proc)
        with locked() as box:
            job = box["state"][name]["jobs"][job_id]
            job["running"] = False
            over = sched.finish(job, rc)
            slog(f"finished {name} {job_id} rc {rc}")
            if over:
                return


def _wait(sched: FakeScheduler, job_id: str, proc: subprocess.Popen[bytes]) -> int:
    with locked() as box:
        limit = sched.run_limit(box["state"][sched.name]["jobs"][job_id])
    while True:
        try:
            return proc.wait(timeout=None if limit is None else max(0.05, limit - time.time()))
        except subprocess.TimeoutExpired:
            with locked() as box:
                first = sched.on_run_limit(box["state"][sched.name]["jobs"][job_id])
            terminate(proc.pid, first)
            limit = None


def cleanup_jobs() -> None:
    """Kill every job and supervisor the fakes started (test teardown)."""
    with locked() as box:
        for name, sched in SCHEDULERS.items():
            for job in box["state"][name]["jobs"].values():
                if job.get("running"):
                    kill_now(job)
                if job.get("sup_pid") and not sched.is_over(job):
                    with contextlib.suppress(OSError):
                        os.kill(job["sup_pid"], signal.SIGKILL)


# --------------------------------------------------------------------------- faults


def _fault_active(fault: dict[str, Any], now: float) -> bool:
    if fault.get("count") is not None and fault["count"] <= 0:
        return False
    return fault.get("until") is None or now < fault["until"]


def take_tool_fault(box: dict[str, Any], tool: str) -> dict[str, Any] | None:
    """The first active fault for this tool, one use of it consumed."""
    now = time.time()
    for fault in box["faults"]:
        if fault.get("kind") in TOOL_FAULTS and tool in fault.get("tools", []) and _fault_active(fault, now):
            if fault.get("count") is not None:
                fault["count"] -= 1
            return dict(fault)
    return None


def run_tool_fault(fault: dict[str, Any] | None, tool: str) -> int | None:
    """Act out a tool fault: an exit code to stop with, or None to go on."""
    if fault is None:
        return None
    if fault["kind"] == "hang":
        time.sleep(float(fault.get("seconds", 10)))
        return None
    if fault["kind"] == "garbage":
        sys.stdout.write(fault.get("text") or GARBAGE)
        return int(fault.get("exit_code") or 0)
    errors = {tool: text for sched in SCHEDULERS.values() for tool, text in sched.errors.items()}
    msg, code = errors.get(tool, ("error\n", 1))
    text = fault.get("message")
    sys.stderr.write(msg if text is None else (text if text.endswith("\n") else text + "\n"))
    return int(fault["exit_code"]) if fault.get("exit_code") is not None else code


def apply_job_faults(box: dict[str, Any]) -> None:
    """Apply the job faults whose target job exists and is in a fitting state (each once)."""
    now = time.time()
    for fault in box["faults"]:
        if fault.get("kind") not in JOB_FAULTS or fault.get("applied"):
            continue
        sched = SCHEDULERS.get(fault.get("sched", ""))
        if sched is None:
            continue  # a fake this process does not know: its own commands apply it
        job = box["state"][sched.name]["jobs"].get(sched.job_id(str(fault["job"])))
        if job is None:
            continue
        if fault["kind"] == "vanish":
            job["vanished"] = True
            if job.get("running"):
                pg_signal(job.get("pid"), signal.SIGKILL)
            fault["applied"] = now
        elif sched.is_over(job) or sched.apply_fault(fault, job, now):
            fault["applied"] = now  # (over: too late, nothing to do)


def add_fault(fault: dict[str, Any]) -> None:
    """Record a fault in faults.json (a job fault applies at once when it can)."""
    with locked() as box:
        box["faults"].append(fault)
        apply_job_faults(box)


def start_tool(tool: str, argv: list[str]) -> int | None:
    """Every command's prologue: log the call, apply job faults, act out a tool fault (its exit code)."""
    state_dir()
    log_call(tool, argv)
    with locked() as box:
        apply_job_faults(box)
        fault = take_tool_fault(box, tool)
    return run_tool_fault(fault, tool)


def main(tool: str, argv: list[str]) -> int:
    """A command script's body: the prologue, then the registered command."""
    rc = start_tool(tool, argv)
    if rc is not None:
        return rc
    for sched in SCHEDULERS.values():
        if tool in sched.commands:
            return sched.commands[tool](list(argv))
    sys.stderr.write(f"fake: no fake scheduler has a command {tool}\n")
    return 2


FAULT_HELP = {
    "vanish": "the job disappears from queue and history",
    "hold": "hold the job; its process is SIGSTOPped or not started",
    "nodefail": "the job's node dies (SIGKILL)",
    "memlimit": "the job is killed at its memory limit",
}


def fault_cli(argv: list[str], prog: str = "fake fault", job_help: dict[str, str] | None = None) -> int:
    """``fault NAME ...``: inject a fault (see the module's documentation)."""
    parser = argparse.ArgumentParser(prog=prog, description="Inject deterministic faults into the fakes.")
    sub = parser.add_subparsers(dest="name", required=True)
    for name, text in (
        ("error", "TOOL exits non-zero with the real error text"),
        ("garbage", "TOOL prints garbage on stdout"),
        ("hang", "TOOL sleeps SECONDS first"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("tool", help="tool name(s), comma separated, e.g. bjobs or condor_q,condor_history")
        if name == "hang":
            s.add_argument("seconds", type=float)
        s.add_argument("--count", type=int, default=None, help="affect the next N calls (default: all)")
        s.add_argument("--for", dest="for_", type=float, default=None, help="only for the next S seconds")
        s.add_argument("--until", type=float, default=None, help="until this epoch time")
        if name != "hang":
            s.add_argument("--message", "--text", dest="message", default=None)
            s.add_argument("--exit-code", type=int, default=None)
    for name in JOB_FAULTS:
        s = sub.add_parser(name, help={**FAULT_HELP, **(job_help or {})}[name])
        s.add_argument("sched", choices=sorted(SCHEDULERS))
        s.add_argument("job")
        if name in ("hold", "memlimit"):
            s.add_argument("--reason", default=None)
            s.add_argument("--code", type=int, default=None)
            s.add_argument("--subcode", type=int, default=None)
    sub.add_parser("clear", help="remove all faults")
    sub.add_parser("list", help="print faults.json")
    args = parser.parse_args(argv)
    if args.name == "clear":
        with locked() as box:
            box["faults"] = []
        return 0
    if args.name == "list":
        with locked() as box:
            print(json.dumps(box["faults"], indent=1))
        return 0
    fault: dict[str, Any]
    if args.name in TOOL_FAULTS:
        until = args.until if args.until is not None else (time.time() + args.for_ if args.for_ is not None else None)
        fault = {"kind": args.name, "tools": args.tool.split(","), "count": args.count, "until": until}
        if args.name == "hang":
            fault["seconds"] = args.seconds
        else:
            fault.update(message=args.message, exit_code=args.exit_code)
            if args.name == "garbage":
                fault["text"] = args.message
        add_fault(fault)
        return 0
    fault = {"kind": args.name, "sched": args.sched, "job": args.job}
    for key in ("reason", "code", "subcode"):
        if getattr(args, key, None) is not None:
            fault[key] = getattr(args, key)
    add_fault(fault)
    return 0


def cli(argv: list[str], job_help: dict[str, str] | None = None) -> int:
    """``fault ...`` | ``cleanup`` | ``TOOL args...`` | the internal ``_supervise`` and ``_escalate``."""
    if not argv:
        sys.stderr.write("usage: fault ... | cleanup | TOOL args...\n")
        return 2
    if argv[0] == "_supervise":
        with state_folder(argv[3]) if len(argv) > 3 else contextlib.nullcontext():
            try:
                supervise(argv[1], argv[2])
            except Exception as error:  # keep a trace for debugging
                slog(f"supervisor {argv[1]} {argv[2]} crashed: {error!r}")
                raise
        return 0
    if argv[0] == "_escalate":
        time.sleep(float(argv[2]))
        pg_signal(int(argv[1]), signal.SIGKILL)
        return 0
    if argv[0] == "fault":
        state_dir()
        return fault_cli(argv[1:], job_help=job_help)
    if argv[0] == "cleanup":
        state_dir()
        cleanup_jobs()
        return 0
    if any(argv[0] in sched.commands for sched in SCHEDULERS.values()):
        return main(argv[0], argv[1:])
    sys.stderr.write(f"fake: unknown command {argv[0]}\n")
    return 2


# --------------------------------------------------------------------------- the smallest fake


class FakeBatch(FakeScheduler):
    """A ready fake job store: jobs are bash scripts, run for real; a plugin's fake adds only what its
    commands print.  Each job's record (:meth:`jobs`) has ``state`` (pending, running, exited, killed),
    ``rc`` (exit code, 128+N for signal N; None until it ended), ``pid`` and the fields given to
    :meth:`submit`.  Every method takes the lock itself; tool and job faults work as for every fake
    (``CB_FAKE_STATE=<the state folder> python -m containerbatch.testing.fakes fault hold batch 3``).
    """

    name = "batch"
    merge_stderr = False

    def __init__(
        self, state_dir: str | os.PathLike[str], tool: str = "", argv: list[str] | None = None, name: str = ""
    ) -> None:
        self.dir = os.fspath(state_dir)
        os.makedirs(self.dir, exist_ok=True)
        if name:
            self.name = name
        register(self)
        if tool:
            with state_folder(self.dir):
                rc = start_tool(tool, list(argv or []))
            if rc is not None:
                raise SystemExit(rc)

    @classmethod
    def from_env(cls, variable: str, tool: str = "", argv: list[str] | None = None, name: str = "") -> FakeBatch:
        """The fake whose state folder the environment variable ``variable`` names (required; else exit 2).

        With ``tool``, the call is logged and a fault injected for that tool is acted out (the process
        exits with its exit code).
        """
        folder = os.environ.get(variable)
        if not folder:
            sys.stderr.write(f"{tool or 'fake'}: set {variable} to the fake's state folder\n")
            raise SystemExit(2)
        return cls(folder, tool, argv, name)

    def entry(self) -> list[str]:
        if type(self) is FakeBatch:
            return [sys.executable, os.path.abspath(__file__), "--name", self.name]
        return super().entry()

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """This fake's section of the state (``{"next": int, "jobs": {id: job}}``) under the lock."""
        with state_folder(self.dir), locked() as box:
            yield box["state"][self.name]

    def jobs(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every job, with its ``state`` and ``rc``."""
        with self.locked() as section:
            jobs = {k: dict(v) for k, v in section["jobs"].items()}
        for job in jobs.values():
            job["state"] = (
                "killed"
                if job.get("killed") and job.get("final")
                else "exited"
                if job.get("final")
                else "running"
                if job.get("running")
                else "pending"
            )
        return jobs

    def log_call(self, tool: str, argv: list[str]) -> None:
        """Append a call to ``calls.log`` (done already when the fake was made with ``tool``)."""
        with state_folder(self.dir):
            log_call(tool, argv)

    def submit(self, script: str, cwd: str, stdout: str, stderr: str, **fields: Any) -> str:
        """Queue ``script`` (run with bash) and start its supervisor; returns the new job id.

        ``pend_seconds`` among the fields keeps the job pending that long.
        """
        with self.locked() as section:
            job_id = str(section["next"])
            section["next"] += 1
            now = time.time()
            section["jobs"][job_id] = {
                **fields,
                "id": job_id,
                "script": os.path.abspath(script),
                "argv": ["/bin/bash", os.path.abspath(script)],
                "cwd": os.path.abspath(cwd),
                "env": None,
                "stdout": os.path.abspath(stdout),
                "stderr": os.path.abspath(stderr),
                "rc": None,
                "pid": None,
                "submitted": now,
                "start_after": now + float(fields.get("pend_seconds") or 0),
            }
        with state_folder(self.dir):
            spawn_supervisor(self.name, job_id)
        return job_id

    def kill(self, job_id: str, sig: int = signal.SIGTERM) -> bool:
        """Signal the job's process group; a pending job is marked killed.  False: unknown or ended."""
        with self.locked() as section:
            job = section["jobs"].get(job_id)
            if job is None or self.is_over(job):
                return False
            job["killed"] = True
            if not job.get("running"):
                job.update(final="KILLED", rc=None, ended=time.time())
                return True
            pid = job["pid"]
        pg_signal(pid, sig)
        return True

    def finish(self, job: dict[str, Any], rc: int) -> bool:
        killed = bool(job.get("killed")) or rc < 0
        job.update(
            final="KILLED" if killed else "EXITED", killed=killed, rc=128 - rc if rc < 0 else rc, ended=time.time()
        )
        return True

    def launch_failed(self, job: dict[str, Any], error: OSError) -> None:
        job.update(final="EXITED", rc=127, ended=time.time(), running=False)

    def cleanup(self) -> None:
        """Kill every job still running or pending (test teardown)."""
        for job_id, job in self.jobs().items():
            if job["state"] in ("pending", "running"):
                self.kill(job_id, signal.SIGKILL)


def _main(argv: list[str]) -> int:
    """``python -m containerbatch.testing.fakes [--name NAME] fault|cleanup|_supervise ...`` for FakeBatch fakes."""
    name = FakeBatch.name
    if argv[:1] == ["--name"] and len(argv) > 1:
        name, argv = argv[1], argv[2:]
    batch = FakeBatch.__new__(FakeBatch)
    batch.name = name
    register(batch)
    if argv[:1] == ["_supervise"] and len(argv) > 3:
        batch.dir = argv[3]
    return cli(argv)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
