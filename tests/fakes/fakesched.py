"""Shared logic of the fake LSF and HTCondor command-line tools.

The fakes in ``tests/fakes/bin`` (bsub, bjobs, bkill, bhist, condor_submit,
condor_q, condor_history, condor_rm, condor_release) are thin wrappers that
call :func:`main`.  Design after psij-python's ``tests/plugins1/_batch_test``:

* All state lives in ``$CB_FAKE_STATE`` (required): ``state.json`` guarded by
  ``fcntl.flock`` on ``state.lock``; ``faults.json`` (injected faults, same
  lock); ``calls.log`` (one JSON line per tool invocation); ``supervisor.log``.
* Submitting really runs the job: a detached supervisor process
  (``python3 fakesched.py _supervise SCHED ID``, own session) starts the job in
  its own process group, waits for it and records the outcome under the lock.
* Output formats follow /work/shared/reference/SCHEDULERS.md and the captured
  examples in tests/fixtures/{lsf,htcondor}.

Environment knobs: CB_FAKE_CLEAN_PERIOD (LSF, s, default 3600),
CB_FAKE_QUEUE_LINGER (HTCondor, s, default 0), CB_FAKE_LSF_GREETING=N (print N
``Cannot connect to LSF. Please wait ...`` lines before bsub's answer),
CB_FAKE_LSF_DEFAULT_QUEUE (default ``normal``), CB_FAKE_LSF_QUEUES (comma list
of valid queues; unset = any), CB_FAKE_LSF_MINUTE_SECONDS (length of a -W
minute, default 60), CB_FAKE_LSF_UNKWN_SECONDS (UNKWN phase after a node
failure, default 1), CB_FAKE_REQUEUE_DELAY (HTCondor idle time after a node
failure, default 0.5), CB_FAKE_KILL_GRACE (s between SIGTERM and SIGKILL,
default 2), CB_FAKE_PEND_SECONDS (delay before a job starts, default 0),
LSB_BJOBS_CONSISTENT_EXIT_CODE=Y (bjobs exits 255 when nothing/unknown found).

Faults: ``python3 -m fakesched fault NAME ...`` (from tests/fakes), ``bin/fakesched-fault NAME ...``
or entries written to ``$CB_FAKE_STATE/faults.json``; all deterministic:

* ``error TOOL[,TOOL] [--count N] [--for S|--until T] [--message M] [--exit-code C]``: the tool
  fails with the real text (LSF: ``Request from non-LSF host rejected``, exit 255; condor_q/history:
  ``-- Failed to fetch ads from: <...> : host`` + ``SECMAN:2007:Failed to end classad message.``,
  exit 1; condor_submit/rm/release: ``ERROR: Can't find address of local schedd``, exit 1).
  ``error bsub`` / ``error condor_submit`` are the submit failures (no job is created).
* ``hang TOOL SECONDS [--count N]``: the tool sleeps first, then answers normally.
* ``garbage TOOL [--count N] [--text T]``: unparsable stdout, exit 0.
* ``vanish lsf|condor JOB``: the job is gone from bjobs/bhist or condor_q/condor_history
  (its process is killed).
* ``hold lsf|condor JOB [--reason R --code C --subcode S]``: HTCondor JobStatus 5 with the given
  HoldReason/HoldReasonCode (default: user hold, code 1); a running process is SIGSTOPped, a
  job not started yet stays unstarted. ``condor_release`` resumes it (SIGCONT, JobStatus 2) or
  lets it start (1 -> 2). LSF shows PSUSP/USUSP (no resume command is faked).
* ``nodefail lsf|condor JOB``: the process group gets SIGKILL. LSF: STAT UNKWN for
  CB_FAKE_LSF_UNKWN_SECONDS, then EXIT with exit_reason ``TERM_REMOVE_HUNG_JOB: hung job removed
  from the LSF system`` (exit code 137). HTCondor (what a vanilla job does when its execute node
  dies): back to idle (JobStatus 1, NumShadowExceptions+1), then it is run again from scratch
  (NumJobStarts 2), which the library must tolerate.
* ``memlimit lsf|condor JOB``: LSF: SIGKILL, EXIT with ``TERM_MEMLIMIT: job killed after reaching
  LSF memory usage limit`` and exit code 137 (as in real job reports). HTCondor: process killed,
  job held with HoldReasonCode 34, HoldReasonSubCode 0 and ``Error from slot1_1@fakehost: Job has
  gone over cgroup memory limit of N megabytes. Peak usage: M megabytes.  Consider resubmitting
  with a higher request_memory.`` (override with --reason/--code, e.g. code 21 and ``Error from
  ...: memory usage exceeded request_memory`` for startd-policy holds).
* ``clear``, ``list``; ``fakesched cleanup`` kills every job the fakes started.

Job faults in faults.json apply as soon as the job exists (hold) or runs (nodefail, memlimit).
File transfer (``should_transfer_files = YES``): the job runs in a fresh scratch folder under
``$CB_FAKE_STATE/execute`` (``_CONDOR_SCRATCH_DIR``) holding the executable and ``transfer_input_files``
(a folder with a trailing ``/`` gives its contents); at exit ``transfer_output_files`` (or, unset, the
top-level files the job created) go back to initialdir or where ``transfer_output_remaps`` says, before
the job counts as completed (``CB_FAKE_TRANSFER_REVERSED=1``: in reverse order, 2 s apart); a missing
output holds the job (code 12), a missing input at submit (code 13); the scratch folder is removed.
Otherwise jobs run in initialdir (shared filesystem).
Not faked: LSF job arrays, bsub #BSUB parsing of a script given as an argument (only ``bsub <
script`` reads #BSUB lines), ``queue ... from/in/matching`` in submit files.
Container jobs (container_image/docker_image) run as ``apptainer exec IMAGE exe args`` when an
``apptainer`` is on PATH, else directly.
"""

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "fakehost"
SCHEDD_ADDR = "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=fakehost&noUDP&sock=schedd_4242_a1b2>"
LSF_TOOLS = ("bsub", "bjobs", "bkill", "bhist")
CONDOR_TOOLS = (
    "condor_submit",
    "condor_q",
    "condor_history",
    "condor_rm",
    "condor_release",
    "condor_status",
    "condor_hold",
)
DEFAULT_ERRORS = {
    "bsub": ("Request from non-LSF host rejected\n", 255),
    "bjobs": ("Request from non-LSF host rejected\n", 255),
    "bhist": ("Request from non-LSF host rejected\n", 255),
    "bkill": ("Request from non-LSF host rejected\n", 255),
    "condor_q": (
        "-- Failed to fetch ads from: %s : %s\nSECMAN:2007:Failed to end classad message.\n" % (SCHEDD_ADDR, HOST),
        1,
    ),
    "condor_history": (
        "-- Failed to fetch ads from: %s : %s\nSECMAN:2007:Failed to end classad message.\n" % (SCHEDD_ADDR, HOST),
        1,
    ),
    "condor_submit": ("\nERROR: Can't find address of local schedd\n", 1),
    "condor_rm": ("\nERROR: Can't find address of local schedd\n", 1),
    "condor_release": ("\nERROR: Can't find address of local schedd\n", 1),
    "condor_hold": ("\nERROR: Can't find address of local schedd\n", 1),
    "condor_status": ("Error: communication error\nCEDAR:6001:Failed to connect to <127.0.0.1:9618>\n", 1),
}
GARBAGE = '\x00\x1b[0m<html><head><title>502 Bad Gateway</title></head>\n{"COMMAND":"bjo\n'
TERM = {
    "owner": "TERM_OWNER: job killed by owner",
    "memlimit": "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
    "runlimit": "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
    "hung": "TERM_REMOVE_HUNG_JOB: hung job removed from the LSF system",
    "cwd": "TERM_CWD_NOTEXIST: current working directory is not accessible or does not exist on the execution host",
}


def envf(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


# --------------------------------------------------------------------------- state


def state_dir():
    d = os.environ.get("CB_FAKE_STATE")
    if not d:
        sys.stderr.write(
            "fakesched: CB_FAKE_STATE is not set; export CB_FAKE_STATE=<directory> for the fake scheduler state\n"
        )
        sys.exit(2)
    os.makedirs(d, exist_ok=True)
    return d


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default


def _write_json(path, data):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked():
    """Yield {'state': ..., 'faults': [...]} under the lock; write back on exit."""
    d = state_dir()
    with open(os.path.join(d, "state.lock"), "a+") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        box = {
            "state": _read_json(os.path.join(d, "state.json"), {}),
            "faults": _read_json(os.path.join(d, "faults.json"), []),
        }
        box["state"].setdefault("lsf", {"next": 1, "jobs": {}})
        box["state"].setdefault("condor", {"next": 1, "jobs": {}})
        before = json.dumps(box["faults"], sort_keys=True)
        yield box
        _write_json(os.path.join(d, "state.json"), box["state"])
        if json.dumps(box["faults"], sort_keys=True) != before or not os.path.exists(os.path.join(d, "faults.json")):
            _write_json(os.path.join(d, "faults.json"), box["faults"])


def log_call(tool, argv):
    line = json.dumps({"tool": tool, "argv": list(argv), "time": time.time()}) + "\n"
    fd = os.open(os.path.join(state_dir(), "calls.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def slog(msg):
    with open(os.path.join(state_dir(), "supervisor.log"), "a") as f:
        f.write("%s %d %s\n" % (time.strftime("%H:%M:%S"), os.getpid(), msg))


# --------------------------------------------------------------------------- faults


def _fault_active(f, now):
    if f.get("count") is not None and f["count"] <= 0:
        return False
    return f.get("until") is None or now < f["until"]


def take_tool_fault(box, tool):
    """Return (and consume one use of) the first active fault for this tool."""
    now = time.time()
    for f in box["faults"]:
        if f.get("kind") in ("error", "hang", "garbage") and tool in f.get("tools", []) and _fault_active(f, now):
            if f.get("count") is not None:
                f["count"] -= 1
            return dict(f)
    return None


def run_tool_fault(f, tool):
    """Act out a tool fault. Returns an exit code to stop with, or None to go on."""
    if f is None:
        return None
    if f["kind"] == "hang":
        time.sleep(float(f.get("seconds", 10)))
        return None
    if f["kind"] == "garbage":
        sys.stdout.write(f.get("text") or GARBAGE)
        return int(f.get("exit_code") or 0)
    msg, code = DEFAULT_ERRORS.get(tool, ("error\n", 1))
    text = f.get("message")
    sys.stderr.write(msg if text is None else (text if text.endswith("\n") else text + "\n"))
    return int(f["exit_code"]) if f.get("exit_code") is not None else code


def pg_signal(pid, sig):
    if not pid:
        return False
    try:
        os.killpg(int(pid), sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def spawn_escalation(pid, grace=None):
    """SIGKILL the process group after the grace period, from a detached helper."""
    grace = envf("CB_FAKE_KILL_GRACE", 2) if grace is None else grace
    subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fakesched.py"), "_escalate", str(pid), str(grace)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def terminate(pid, first=signal.SIGTERM):
    if pg_signal(pid, first):
        pg_signal(pid, signal.SIGCONT)
        spawn_escalation(pid)


def apply_job_faults(box):
    """Apply job faults from faults.json whose target job is in a fitting state."""
    now = time.time()
    for f in box["faults"]:
        if f.get("kind") not in ("vanish", "hold", "nodefail", "memlimit") or f.get("applied"):
            continue
        sched, jid = f["sched"], str(f["job"])
        if sched == "condor" and "." not in jid:
            jid += ".0"
        job = box["state"][sched]["jobs"].get(jid)
        if job is None:
            continue
        done = job.get("final") or job.get("JobStatus") in (3, 4)
        running = job.get("running")
        kind = f["kind"]
        if kind == "vanish":
            job["vanished"] = True
            if running:
                pg_signal(job.get("pid"), signal.SIGKILL)
            f["applied"] = now
        elif done:
            f["applied"] = now  # too late: nothing to do
        elif kind == "hold":
            if sched == "condor":
                job.update(
                    JobStatus=5,
                    LastJobStatus=job.get("JobStatus", 1),
                    EnteredCurrentStatus=int(now),
                    HoldReason=f.get("reason") or "via condor_hold (by user %s)" % job["Owner"],
                    HoldReasonCode=int(f.get("code") if f.get("code") is not None else 1),
                    HoldReasonSubCode=int(f.get("subcode") or 0),
                )
                ulog_event(
                    job,
                    "012",
                    "Job was held.\n\t%s\n\tCode %d Subcode %d"
                    % (job["HoldReason"], job["HoldReasonCode"], job["HoldReasonSubCode"]),
                )
            job["suspended"] = True
            if running:
                pg_signal(job.get("pid"), signal.SIGSTOP)
            f["applied"] = now
        elif not running:
            continue  # nodefail/memlimit wait for the job to run
        elif kind == "nodefail":
            if sched == "lsf":
                job["kill_reason"] = TERM["hung"]
                job["unkwn_until"] = now + envf("CB_FAKE_LSF_UNKWN_SECONDS", 1)
            else:
                job["requeue"] = True
            pg_signal(job.get("pid"), signal.SIGKILL)
            pg_signal(job.get("pid"), signal.SIGCONT)
            f["applied"] = now
        elif kind == "memlimit":
            if sched == "lsf":
                job["kill_reason"] = TERM["memlimit"]  # real job reports show exit code 137
                pg_signal(job.get("pid"), signal.SIGKILL)
                pg_signal(job.get("pid"), signal.SIGCONT)
            else:
                mem = job.get("RequestMemory") if isinstance(job.get("RequestMemory"), int) else 128
                reason = f.get("reason") or (
                    "Error from slot1_1@%s: Job has gone over cgroup memory limit of %d megabytes. "
                    "Peak usage: %d megabytes.  Consider resubmitting with a higher request_memory."
                    % (HOST, mem, mem + 1)
                )
                job.update(
                    JobStatus=5,
                    LastJobStatus=2,
                    EnteredCurrentStatus=int(now),
                    HoldReason=reason,
                    HoldReasonCode=int(f.get("code") if f.get("code") is not None else 34),
                    HoldReasonSubCode=int(f.get("subcode") or 0),
                )
                ulog_event(
                    job,
                    "012",
                    "Job was held.\n\t%s\n\tCode %d Subcode %d"
                    % (reason, job["HoldReasonCode"], job["HoldReasonSubCode"]),
                )
                pg_signal(job.get("pid"), signal.SIGKILL)
                pg_signal(job.get("pid"), signal.SIGCONT)
            f["applied"] = now


def start_tool(tool, argv):
    """Common prologue: log the call, apply job faults, act out tool faults."""
    state_dir()
    log_call(tool, argv)
    with locked() as box:
        apply_job_faults(box)
        f = take_tool_fault(box, tool)
    return run_tool_fault(f, tool)


# --------------------------------------------------------------------------- supervisor


def spawn_supervisor(sched, jid):
    subprocess.Popen(
        [sys.executable, os.path.join(HERE, "fakesched.py"), "_supervise", sched, jid],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        env=dict(os.environ),
    )


def _open_out(path, append, default=os.devnull):
    path = path or default
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        raise OSError(2, "No such file or directory", path)
    return open(path, "ab" if append else "wb")


def supervise(sched, jid):
    pend = envf("CB_FAKE_PEND_SECONDS", 0)
    if pend:
        time.sleep(pend)
    while True:
        proc = None
        with locked() as box:
            job = box["state"][sched]["jobs"].get(jid)
            if job is None:
                return
            job["sup_pid"] = os.getpid()
            apply_job_faults(box)
            if job.get("final") or job.get("vanished") or job.get("JobStatus") in (3, 4):
                job["running"] = False
                return
            if job.get("suspended") or job.get("JobStatus") == 5 or time.time() < job.get("start_after", 0):
                proc = "wait"
            else:
                try:
                    proc = _launch(sched, job)
                except OSError as e:
                    _launch_failed(sched, job, e)
                    return
                apply_job_faults(box)
        if proc == "wait":
            time.sleep(0.1)
            continue
        rc = _wait(sched, jid, proc)
        with locked() as box:
            job = box["state"][sched]["jobs"][jid]
            job["running"] = False
            if sched == "lsf":
                _finish_lsf(job, rc)
                return
            if _finish_condor(job, rc):
                return


def parse_remaps(text):
    """transfer_output_remaps = "name = dest ; name2 = dest2" (\\; and \\= escape) -> dict."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    remaps = {}
    for part in re.split(r"(?<!\\);", text):
        pieces = re.split(r"(?<!\\)=", part, maxsplit=1)
        if len(pieces) == 2 and pieces[0].strip():
            name, dest = (re.sub(r"\\([;=\\])", r"\1", x.strip()) for x in pieces)
            remaps[name] = dest
    return remaps


def _copy_in(src, scratch):
    """What the starter does with one transfer_input_files entry."""
    if src.endswith("/"):  # a folder's contents
        for child in os.listdir(src):
            _copy_in(os.path.join(src, child), scratch)
        return
    dest = os.path.join(scratch, os.path.basename(src.rstrip("/")))
    if os.path.isdir(src):
        shutil.copytree(src, dest, symlinks=False, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest)


def _stage_in(job):
    """File transfer: a fresh scratch folder with the executable and the input files; the job runs there."""
    t = job["transfer"]
    scratch = os.path.join(state_dir(), "execute", "dir_%s_%d" % (job["id"], job.get("NumJobStarts", 0) + 1))
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    argv = list(job["argv"])
    if t.get("exe"):
        _copy_in(t["exe"], scratch)
        exe = os.path.join(scratch, os.path.basename(t["exe"]))
        argv = [exe if a == t["exe"] else a for a in argv]
    for src in t["inputs"]:
        _copy_in(src, scratch)
    job["scratch"] = scratch
    job["scratch_started"] = time.time()
    env = dict(job["env"], _CONDOR_SCRATCH_DIR=scratch)
    return scratch, argv, env


def _stage_out(job):
    """Bring the outputs back into Iwd (or where transfer_output_remaps says); None, or a hold reason."""
    t, scratch = job["transfer"], job.get("scratch")
    if not scratch or not os.path.isdir(scratch):
        return None
    names = t["outputs"]
    if names is None:  # every file of the scratch folder's top level the job created or changed
        skip = {os.path.basename(p.rstrip("/")) for p in t["inputs"] if not p.endswith("/")}
        names = [
            n
            for n in sorted(os.listdir(scratch))
            if os.path.isfile(os.path.join(scratch, n))
            and n not in skip
            and os.path.getmtime(os.path.join(scratch, n)) >= job["scratch_started"] - 1
            and (not t.get("exe") or n != os.path.basename(t["exe"]))
        ]
    if os.environ.get("CB_FAKE_TRANSFER_REVERSED"):  # the last listed output lands first, 2 s ahead
        names = list(reversed(names))
    for i, name in enumerate(names):
        if i and os.environ.get("CB_FAKE_TRANSFER_REVERSED"):
            time.sleep(2)
        src = os.path.join(scratch, name.rstrip("/"))
        if not os.path.exists(src):
            return (
                "Error from slot1_1@%s: STARTER at 127.0.0.1 failed to send file(s) to <127.0.0.1:9618>: "
                "error reading from %s: (errno 2) No such file or directory; SHADOW failed to receive file(s) "
                "from <127.0.0.1:9618>" % (HOST, src)
            )
        dest = t["remaps"].get(name) or os.path.basename(name.rstrip("/"))
        dest = dest if os.path.isabs(dest) else os.path.join(job["Iwd"], dest)
        if os.path.isdir(src):
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)
    return None


def _drop_scratch(job):
    if job.get("scratch"):
        shutil.rmtree(job.pop("scratch"), ignore_errors=True)


def _launch(sched, job):
    cwd = job["cwd"]
    if not os.path.isdir(cwd):
        raise OSError(2, "No such file or directory", cwd)
    argv, env = job["argv"], job["env"]
    if job.get("transfer"):
        cwd, argv, env = _stage_in(job)
    out = _open_out(job.get("stdout"), job.get("stdout_append", False))
    if job.get("stderr"):
        err = _open_out(job["stderr"], job.get("stderr_append", False))
    elif sched == "lsf":
        err = subprocess.STDOUT
    else:
        err = _open_out(None, False)
    try:
        p = subprocess.Popen(
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
        if err not in (subprocess.STDOUT,):
            err.close()
    now = time.time()
    job.update(pid=p.pid, running=True, start_time=now, suspended=False)
    if sched == "condor":
        job.update(
            JobStatus=2,
            LastJobStatus=1,
            EnteredCurrentStatus=int(now),
            JobStartDate=int(now),
            NumJobStarts=job.get("NumJobStarts", 0) + 1,
            RemoteHost="slot1_1@" + HOST,
        )
        job.pop("HoldReason", None), job.pop("HoldReasonCode", None), job.pop("HoldReasonSubCode", None)
        ulog_event(job, "001", "Job executing on host: " + SCHEDD_ADDR)
    slog("started %s %s pid %d" % (sched, job.get("id"), p.pid))
    return p


def _launch_failed(sched, job, e):
    now = time.time()
    slog("launch of %s %s failed: %s" % (sched, job.get("id"), e))
    if sched == "lsf":
        cwd_missing = not os.path.isdir(job["cwd"])
        job.update(
            final="EXIT",
            exit_code=1 if cwd_missing else 127,
            end_time=now,
            running=False,
            exit_reason=TERM["cwd"] if cwd_missing else "",
        )
    else:
        code, sub = (14, e.errno or 2) if not os.path.isdir(job["cwd"]) else (6, e.errno or 2)
        reason = "Error from slot1_1@%s: Failed to execute '%s': (errno=%d: '%s')" % (
            HOST,
            job["Cmd"],
            e.errno or 2,
            e.strerror or str(e),
        )
        job.update(
            JobStatus=5,
            LastJobStatus=1,
            EnteredCurrentStatus=int(now),
            HoldReason=reason,
            HoldReasonCode=code,
            HoldReasonSubCode=sub,
            running=False,
        )
        ulog_event(job, "012", "Job was held.\n\t%s\n\tCode %d Subcode %d" % (reason, code, sub))


def _wait(sched, jid, proc):
    limit = None
    with locked() as box:
        job = box["state"][sched]["jobs"][jid]
        if sched == "lsf" and job.get("runlimit_min"):
            limit = job["start_time"] + job["runlimit_min"] * envf("CB_FAKE_LSF_MINUTE_SECONDS", 60)
    while True:
        try:
            return proc.wait(timeout=None if limit is None else max(0.05, limit - time.time()))
        except subprocess.TimeoutExpired:
            with locked() as box:
                job = box["state"][sched]["jobs"][jid]
                job.setdefault("kill_reason", TERM["runlimit"])
            terminate(proc.pid, signal.SIGUSR2)
            limit = None


def _finish_lsf(job, rc):
    code = rc if rc >= 0 else 128 - rc
    reason = job.get("kill_reason", "")
    job.update(
        final="DONE" if code == 0 and not reason else "EXIT", exit_code=code, exit_reason=reason, end_time=time.time()
    )
    slog("finished lsf %s rc %s" % (job["id"], rc))


def _finish_condor(job, rc):
    """Record the end of a run; True when the job is over (else: loop again)."""
    now = int(time.time())
    if job.get("requeue"):
        _drop_scratch(job)
        job.update(
            requeue=False,
            JobStatus=1,
            LastJobStatus=2,
            EnteredCurrentStatus=now,
            start_after=time.time() + envf("CB_FAKE_REQUEUE_DELAY", 0.5),
            NumShadowExceptions=job.get("NumShadowExceptions", 0) + 1,
        )
        ulog_event(job, "007", "Shadow exception!\n\tCan no longer talk to condor_starter <%s>" % HOST)
        return False
    if job.get("JobStatus") == 5:
        _drop_scratch(job)
        return False  # held (memory limit): wait for condor_release or condor_rm
    if job.get("JobStatus") == 3:
        _drop_scratch(job)
        job["CompletionDate"] = 0
        return True
    if job.get("transfer"):
        reason = _stage_out(job)
        _drop_scratch(job)
        if reason:  # a listed output is missing: HTCondor holds the job (code 12)
            job.update(
                JobStatus=5,
                LastJobStatus=2,
                EnteredCurrentStatus=now,
                HoldReason=reason,
                HoldReasonCode=12,
                HoldReasonSubCode=2,
            )
            ulog_event(job, "012", "Job was held.\n\t%s\n\tCode 12 Subcode 2" % reason)
            return False
    job.update(
        JobStatus=4,
        LastJobStatus=2,
        EnteredCurrentStatus=now,
        CompletionDate=now,
        ExitBySignal=rc < 0,
        RemoteWallClockTime=float(now - job.get("JobStartDate", now)),
    )
    if rc < 0:
        job["ExitSignal"] = -rc
        ulog_event(job, "005", "Job terminated.\n\t(0) Abnormal termination (signal %d)\n\t(0) No core file" % -rc)
    else:
        job["ExitCode"] = rc
        ulog_event(job, "005", "Job terminated.\n\t(1) Normal termination (return value %d)" % rc)
    return True


def ulog_event(job, code, text):
    path = job.get("UserLog")
    if not path:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        with open(path, "a") as f:
            f.write("%s (%03d.%03d.000) %s %s\n...\n" % (code, job["ClusterId"], job["ProcId"], stamp, text))
    except OSError:
        pass


def cleanup_jobs():
    """Kill every job and supervisor the fakes started (for test teardown)."""
    with locked() as box:
        for sched in ("lsf", "condor"):
            for job in box["state"][sched]["jobs"].values():
                if job.get("running"):
                    pg_signal(job.get("pid"), signal.SIGKILL)
                    pg_signal(job.get("pid"), signal.SIGCONT)
                if job.get("sup_pid") and not job.get("final") and job.get("JobStatus") not in (3, 4):
                    with contextlib.suppress(OSError):
                        os.kill(job["sup_pid"], signal.SIGKILL)


# --------------------------------------------------------------------------- LSF

BSUB_NOARG = {
    "-B",
    "-N",
    "-r",
    "-rn",
    "-x",
    "-H",
    "-K",
    "-I",
    "-Ip",
    "-Is",
    "-IS",
    "-ISp",
    "-ISs",
    "-tty",
    "-hl",
    "-ti",
    "-Zs",
    "-ar",
}


def parse_bsub_opts(tokens):
    """Split bsub argv into ({opt: value or [values]}, command argv)."""
    opts, i = {}, 0
    while i < len(tokens):
        t = tokens[i]
        if not t.startswith("-") or t == "-":
            break
        if t in BSUB_NOARG:
            opts[t] = True
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ValueError("%s: option requires an argument" % t)
        if t == "-R":
            opts.setdefault("-R", []).append(tokens[i + 1])
        else:
            opts[t] = tokens[i + 1]
        i += 2
    return opts, tokens[i:]


def bsub_lines_opts(text):
    """#BSUB lines of a script read from stdin."""
    toks = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#BSUB"):
            toks += shlex_split(s[5:].split(" #", 1)[0])
    return parse_bsub_opts(toks)[0]


def shlex_split(s):
    import shlex

    try:
        return shlex.split(s)
    except ValueError:
        return s.split()


def parse_mem(v):
    m = re.match(r"^\s*([\d.]+)\s*([KMGTPE]?)B?\s*(!?)\s*$", str(v), re.I)
    return v if not m else {"value": float(m.group(1)), "unit": (m.group(2) or "KB").upper(), "hard": bool(m.group(3))}


def lsf_env(spec):
    base = dict(os.environ)
    if spec is None:
        return base
    items = [x.strip() for x in spec.split(",") if x.strip()]
    if any(x.lower() == "none" for x in items):
        return {}
    env = base if any(x.lower() == "all" for x in items) else {}
    for x in items:
        if x.lower() == "all":
            continue
        if x.startswith("~"):
            env.pop(x[1:], None)
        elif "=" in x:
            k, v = x.split("=", 1)
            env[k.strip()] = v.strip().strip("'\"")
        elif x in os.environ:
            env[x] = os.environ[x]
    return env


def cmd_bsub(argv):
    try:
        opts, cmd = parse_bsub_opts(argv)
    except ValueError as e:
        sys.stderr.write("%s. Job not submitted.\n" % e)
        return 255
    script = None
    if not cmd:
        script = sys.stdin.read() if not sys.stdin.isatty() else ""
        if not script.strip():
            sys.stderr.write("bsub: no command given. Job not submitted.\n")
            return 255
        merged = bsub_lines_opts(script)
        merged.update(opts)  # command-line flags win
        opts = merged
    queue = opts.get("-q")
    valid = [q.strip() for q in os.environ.get("CB_FAKE_LSF_QUEUES", "").split(",") if q.strip()]
    if queue and valid and queue not in valid:
        sys.stderr.write("%s: No such queue. Job not submitted.\n" % queue)
        return 255
    greet = int(envf("CB_FAKE_LSF_GREETING", 0))
    with locked() as box:
        lsf = box["state"]["lsf"]
        jid = str(lsf["next"])
        lsf["next"] += 1
        subdir = os.getcwd()

        def subst(p):
            p = p.replace("%J", jid).replace("%I", "0")
            return p if os.path.isabs(p) else os.path.join(cwd, p)

        cwd = opts.get("-cwd")
        cwd = os.path.join(subdir, cwd.replace("%J", jid).replace("%I", "0")) if cwd else subdir
        out = opts.get("-oo") or opts.get("-o")
        err = opts.get("-eo") or opts.get("-e")
        out, err = (subst(out) if out else None), (subst(err) if err else None)
        if out and os.path.isdir(out):
            out = os.path.join(out, "%s.out" % jid)
        if err and os.path.isdir(err):
            err = os.path.join(err, "%s.err" % jid)
        if script is not None:
            path = os.path.join(state_dir(), "lsf-job-%s.script" % jid)
            with open(path, "w") as f:
                f.write(script)
            os.chmod(path, 0o700)
            run = [path] if script.startswith("#!") else ["/bin/sh", path]
            command = script
        else:
            command = " ".join(cmd)
            run = ["/bin/sh", "-c", command]
        name = opts.get("-J") or (cmd[0] if cmd else "NONAME")
        qname = queue or os.environ.get("CB_FAKE_LSF_DEFAULT_QUEUE", "normal")
        env = lsf_env(opts.get("-env"))
        env.update(
            LSB_JOBID=jid,
            LSB_JOBNAME=name,
            LSB_QUEUE=qname,
            LSB_SUBCWD=subdir,
            LS_SUBCWD=subdir,
            LSB_MAX_NUM_PROCESSORS=str(opts.get("-n", "1")),
            LSB_HOSTS=HOST,
            LSB_MCPU_HOSTS="%s 1" % HOST,
            LSB_JOBINDEX="0",
        )
        runlimit = None
        if opts.get("-W"):
            parts = [int(x) for x in re.findall(r"\d+", opts["-W"].split("/")[0])]
            runlimit = parts[0] * 60 + parts[1] if len(parts) > 1 else parts[0]
        job = {
            "id": jid,
            "name": name,
            "queue": qname,
            "queue_given": bool(queue),
            "command": command,
            "argv": run,
            "cwd": cwd,
            "subcwd": subdir,
            "stdout": out,
            "stderr": err,
            "stdout_append": "-oo" not in opts,
            "stderr_append": "-eo" not in opts,
            "env": env,
            "submit_time": time.time(),
            "user": getpass.getuser(),
            "nslots": int(opts.get("-n", 1)),
            "mem_limit": parse_mem(opts["-M"]) if "-M" in opts else None,
            "resreq": opts.get("-R", []),
            "runlimit_min": runlimit,
            "project": opts.get("-P", "default"),
            "suspended": bool(opts.get("-H")),
            "memory_enforced": bool(os.environ.get("CB_FAKE_ENFORCE_MEMORY")) and "-M" in opts,
        }
        keys = [jid]
        array = re.fullmatch(r"(.*)\[(\d+)(?:-(\d+))?\](?:%\d+)?", name)
        if array:  # a job array: one element per index, "ID[i]", as bjobs/bkill/bhist name them
            keys = []
            for index in range(int(array.group(2)), int(array.group(3) or array.group(2)) + 1):
                element = json.loads(json.dumps(job))
                element["index"] = index
                element["env"]["LSB_JOBINDEX"] = str(index)
                element["name"] = "%s[%d]" % (array.group(1), index)
                for key in ("stdout", "stderr"):
                    if element.get(key):
                        element[key] = (
                            (
                                opts.get("-oo" if key == "stdout" else "-eo")
                                or opts.get("-o" if key == "stdout" else "-e")
                            )
                            .replace("%J", jid)
                            .replace("%I", str(index))
                        )
                        if not os.path.isabs(element[key]):
                            element[key] = os.path.join(cwd, element[key])
                lsf["jobs"]["%s[%d]" % (jid, index)] = element
                keys.append("%s[%d]" % (jid, index))
        else:
            lsf["jobs"][jid] = job
        apply_job_faults(box)
    for key in keys:
        spawn_supervisor("lsf", key)
    sys.stdout.write("Cannot connect to LSF. Please wait ...\n" * greet)
    if queue:
        sys.stdout.write("Job <%s> is submitted to queue <%s>.\n" % (jid, qname))
    else:
        sys.stdout.write("Job <%s> is submitted to default queue <%s>.\n" % (jid, qname))
    return 0


def lsf_select(jobs, x):
    """The jobs an id names: a job, one array element ``ID[i]``, or every element of array ``ID``."""
    if x in jobs:
        return [jobs[x]]
    base = re.sub(r"\[.*\]$", "", x)
    if base != x:
        return []
    return [j for j in jobs.values() if j["id"] == x]


def lsf_key(job):
    return (int(job["id"]), job.get("index", 0))


def lsf_stat(job, now):
    if job.get("final"):
        if job.get("unkwn_until") and now < job["unkwn_until"]:
            return "UNKWN"
        return job["final"]
    if job.get("unkwn_until"):
        return "UNKWN"
    if job.get("suspended"):
        return "USUSP" if job.get("running") else "PSUSP"
    return "RUN" if job.get("running") else "PEND"


def lsf_finished(job, now):
    return lsf_stat(job, now) in ("DONE", "EXIT")


def _lsf_time(t):
    return time.strftime("%b %d %H:%M", time.localtime(t)) if t else ""


def lsf_field(job, field, now):
    stat = lsf_stat(job, now)
    done = stat in ("DONE", "EXIT")
    ec = job.get("exit_code")
    vals = {
        "jobid": job["id"],
        "stat": stat,
        "user": job["user"],
        "queue": job["queue"],
        "job_name": job["name"],
        "exit_code": str(ec) if done and ec else "",
        "exit_reason": job.get("exit_reason", "") if done else "",
        "from_host": HOST,
        "exec_host": HOST if job.get("start_time") else "",
        "submit_time": _lsf_time(job["submit_time"]),
        "start_time": _lsf_time(job.get("start_time")),
        "finish_time": _lsf_time(job.get("end_time")) if done else "",
        "command": job["command"],
        "proj_name": job["project"],
        "exec_cwd": job["cwd"] if job.get("start_time") else "",
        "output_file": job.get("stdout") or "",
        "error_file": job.get("stderr") or "",
        "jobindex": str(job.get("index", 0)),
        "nreq_slot": str(job["nslots"]),
        "slots": str(job["nslots"]),
        "pids": str(job["pid"]) if job.get("running") else "",
        "memlimit": str(job["mem_limit"]["value"]) + " " + job["mem_limit"]["unit"][0]
        if isinstance(job.get("mem_limit"), dict)
        else "",
        "pend_reason": "" if job.get("start_time") else "New job is waiting for scheduling;",
    }
    return vals.get(field.lower(), "")


def parse_o(spec):
    fields, delim = [], None
    for tok in re.findall(r"delimiter='[^']*'|delimiter=\"[^\"]*\"|\S+", spec):
        if tok.startswith("delimiter="):
            delim = tok[len("delimiter=") :][1:-1]
        else:
            fields.append(tok.split(":")[0].lower())
    return fields, delim


def cmd_bjobs(argv):
    opts = {"-a": False, "-json": False, "-noheader": False, "-o": None, "-J": None, "-d": False}
    ids, i = [], 0
    while i < len(argv):
        t = argv[i]
        if t in ("-o", "-J", "-q", "-u", "-m"):
            opts[t] = argv[i + 1]
            i += 2
            continue
        if t in ("-a", "-json", "-noheader", "-d", "-w", "-W", "-UF", "-hms", "-r", "-p", "-s", "-X"):
            opts[t] = True
        elif t.startswith("-"):
            sys.stderr.write("%s: Illegal option\n" % t)
            return 255
        else:
            ids.append(t)
        i += 1
    if opts["-json"] and opts["-noheader"]:
        sys.stderr.write("The -json option conflicts with -noheader.\n")  # unconfirmed text
        return 255
    spec = opts["-o"] or os.environ.get("LSB_BJOBS_FORMAT")
    fields, delim = parse_o(spec) if spec else (None, None)
    clean = envf("CB_FAKE_CLEAN_PERIOD", 3600)
    now = time.time()
    with locked() as box:
        jobs = box["state"]["lsf"]["jobs"]

        def visible(j):
            if j.get("vanished"):
                return False
            if lsf_finished(j, now):
                return (opts["-a"] or opts["-d"]) and now - j.get("end_time", now) < clean
            return not opts["-d"]

        rows, errors, unfinished_hidden = [], [], False
        if ids:
            for x in ids:
                found = lsf_select(jobs, x)
                live = [j for j in found if not j.get("vanished")]
                live = [j for j in live if not (lsf_finished(j, now) and now - j.get("end_time", now) >= clean)]
                if not live:
                    errors.append(x)
                for j in live:
                    if visible(j):
                        rows.append(j)
                    else:
                        unfinished_hidden = True
        else:
            rows = sorted((j for j in jobs.values() if visible(j)), key=lsf_key)
        if opts["-J"]:
            rows = [j for j in rows if j["name"] == opts["-J"]]
    consistent = os.environ.get("LSB_BJOBS_CONSISTENT_EXIT_CODE", "N").upper().startswith("Y")
    if opts["-json"]:
        fields = fields or ["jobid", "user", "stat", "queue", "from_host", "exec_host", "job_name", "submit_time"]
        recs = [[(f.upper(), lsf_field(j, f, now)) for f in fields] for j in rows]
        recs += [[("JOBID", x), ("ERROR", "Job <%s> is not found" % x)] for x in errors]
        body = ",\n".join(
            "    {\n" + ",\n".join("      %s:%s" % (json.dumps(k), json.dumps(v)) for k, v in r) + "\n    }"
            for r in recs
        )
        sys.stdout.write(
            '{\n  "COMMAND":"bjobs",\n  "JOBS":%d,\n  "RECORDS":[\n%s%s  ]\n}\n'
            % (len(recs), body, "\n" if recs else "")
        )
    else:
        for x in errors:
            sys.stderr.write("Job <%s> is not found\n" % x)
        if rows:
            if fields is None:
                fields = ["jobid", "user", "stat", "queue", "from_host", "exec_host", "job_name", "submit_time"]
                widths = [7, 7, 5, 10, 11, 11, 10, 12]
            else:
                widths = None
            table = [[lsf_field(j, f, now) for f in fields] for j in rows]
            if delim is not None:
                lines = [delim.join(v or "-" for v in r) for r in table]
                header = delim.join(f.upper() for f in fields)
            else:
                ws = widths or [max([len(f)] + [len(r[k] or "-") for r in table]) + 1 for k, f in enumerate(fields)]
                fmt = lambda r: " ".join((v or "-").ljust(w) for v, w in zip(r, ws)).rstrip()
                lines = [fmt(r) for r in table]
                header = fmt([f.upper() for f in fields])
            if not opts["-noheader"]:
                sys.stdout.write(header + "\n")
            sys.stdout.write("".join(line + "\n" for line in lines))
        elif not errors or unfinished_hidden:
            sys.stderr.write("No unfinished job found\n")
    if errors or not rows:
        if consistent or (errors and rows):
            return 255
    return 0


def _wrap80(line):
    if len(line) <= 80:
        return line
    out, rest = [line[:80]], line[80:]
    while rest:
        out.append(" " * 21 + rest[:59])
        rest = rest[59:]
    return "\n".join(out)


def bhist_long(job, now, uf):
    t = lambda x: time.strftime("%a %b %e %H:%M:%S", time.localtime(x))
    lsf_stat(job, now)
    L = [
        "Job <%s>, Job Name <%s>, User <%s>, Project <%s>, Command <%s>"
        % (
            job["id"] + ("[%d]" % job["index"] if "index" in job else ""),
            job["name"],
            job["user"],
            job["project"],
            job["command"].strip().replace("\n", "; "),
        )
    ]
    sub = "%s: Submitted from host <%s>, to Queue <%s>, CWD <%s>" % (
        t(job["submit_time"]),
        HOST,
        job["queue"],
        job["subcwd"],
    )
    if job.get("stdout"):
        sub += ", Output File <%s>" % job["stdout"]
    if job.get("stderr"):
        sub += ", Error File <%s>" % job["stderr"]
    if job["resreq"]:
        sub += ", Requested Resources <%s>" % " ".join(job["resreq"])
    L.append(sub + ";")
    if isinstance(job.get("mem_limit"), dict):
        pass
    if job.get("start_time"):
        st = job["start_time"]
        L.append(
            "%s: Dispatched %d Task(s) on Host(s) <%s>, Allocated %d Slot(s) on Host(s) <%s>, "
            "Effective RES_REQ <select[type == local] order[r15s:pg] >;"
            % (t(st), job["nslots"], HOST, job["nslots"], HOST)
        )
        L.append("%s: Starting (Pid %s);" % (t(st), job.get("pid")))
        L.append(
            "%s: Running with execution home <%s>, Execution CWD <%s>, Execution Pid <%s>;"
            % (t(st), os.path.expanduser("~"), job["cwd"], job.get("pid"))
        )
    if job.get("final"):
        et = job.get("end_time", now)
        if job.get("kill_reason") == TERM["owner"]:
            L.append(
                "%s: Signal <KILL> requested by user or administrator <%s>;"
                % (t(job.get("kill_time", et)), job["user"])
            )
        if job["final"] == "DONE":
            L.append("%s: Done successfully. The CPU time used is 0.0 seconds;" % t(et))
            L.append("%s: Post job process done successfully;" % t(et))
        else:
            if job.get("exit_code") is None:  # killed while pending (unconfirmed wording)
                L.append("%s: Exited; job has been forced to exit. The CPU time used is 0.0 seconds;" % t(et))
            else:
                L.append("%s: Exited with exit code %s. The CPU time used is 0.0 seconds;" % (t(et), job["exit_code"]))
            L.append(
                "%s: Completed <exit>%s" % (t(et), "; %s." % job["exit_reason"] if job.get("exit_reason") else ";")
            )
    if isinstance(job.get("mem_limit"), dict):
        L += ["", "", " MEMLIMIT", "    %g %s " % (job["mem_limit"]["value"], job["mem_limit"]["unit"][0])]
    end = job.get("end_time", now) if job.get("final") else now
    run = int(end - job["start_time"]) if job.get("start_time") else 0
    pend = int((job.get("start_time") or end) - job["submit_time"])
    unk = 0
    L += [
        "",
        "Summary of time in seconds spent in various states by  %s" % t(end),
        "  PEND     PSUSP    RUN      USUSP    SSUSP    UNKWN    TOTAL",
        "  %-8d %-8d %-8d %-8d %-8d %-8d %d" % (pend, 0, run, 0, 0, unk, pend + run),
    ]
    text = "\n".join(L if uf else [_wrap80(x) for x in L])
    return text + "\n"


def cmd_bhist(argv):
    long_, uf, ids = False, False, []
    i = 0
    while i < len(argv):
        t = argv[i]
        if t in ("-n", "-S", "-C", "-D", "-J", "-q", "-u", "-m"):
            i += 2
            continue
        if t == "-l":
            long_ = True
        elif t == "-UF":
            uf = long_ = True
        elif not t.startswith("-"):
            ids.append(t)
        i += 1
    now = time.time()
    with locked() as box:
        jobs = box["state"]["lsf"]["jobs"]
        sel = (
            [j for x in ids for j in lsf_select(jobs, x) if not j.get("vanished")]
            if ids
            else sorted((j for j in jobs.values() if not j.get("vanished")), key=lsf_key)
        )
    if not sel:
        sys.stderr.write("No matching job found\n")
        return 0
    if long_:
        sys.stdout.write(("-" * 78 + "\n\n").join("\n" + bhist_long(j, now, uf) for j in sel))
    else:
        sys.stdout.write(
            "Summary of time in seconds spent in various states:\n"
            "JOBID   USER    JOB_NAME  PEND    PSUSP   RUN     USUSP   SSUSP   UNKWN   TOTAL\n"
        )
        for j in sel:
            end = j.get("end_time", now) if j.get("final") else now
            run = int(end - j["start_time"]) if j.get("start_time") else 0
            pend = int((j.get("start_time") or end) - j["submit_time"])
            name = j["name"] if len(j["name"]) <= 8 else "*" + j["name"][-7:]
            sys.stdout.write(
                "%-7s %-7s %-9s %-7d %-7d %-7d %-7d %-7d %-7d %d\n"
                % (j["id"], j["user"][:7], name, pend, 0, run, 0, 0, 0, pend + run)
            )
    return 0


SIGNAMES = {s.name[3:]: s for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}


def cmd_bkill(argv):
    sig, ids, i = None, [], 0
    while i < len(argv):
        t = argv[i]
        if t == "-s":
            sig = argv[i + 1]
            i += 2
            continue
        if t in ("-C", "-J", "-q", "-u", "-m", "-g", "-app", "-sla"):
            i += 2
            continue
        if not t.startswith("-"):
            ids.append(t)
        i += 1
    signum = None
    if sig:
        signum = int(sig) if sig.isdigit() else SIGNAMES.get(sig.upper().replace("SIG", "", 1))
    failed = False
    now = time.time()
    with locked() as box:
        jobs = box["state"]["lsf"]["jobs"]
        for x, j in [(given, j) for given in ids for j in (lsf_select(jobs, given) or [None])]:
            if (
                j is None
                or j.get("vanished")
                or (lsf_finished(j, now) and now - j["end_time"] >= envf("CB_FAKE_CLEAN_PERIOD", 3600))
            ):
                sys.stderr.write("Job <%s>: No matching job found\n" % x)
                failed = True
            elif lsf_finished(j, now) or j.get("final"):
                sys.stderr.write("Job <%s>: Job has already finished\n" % x)
                failed = True
            elif signum not in (None, signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                pg_signal(j.get("pid"), signum)
                sys.stdout.write("Job <%s> is being signaled\n" % x)
            else:
                j["kill_reason"], j["kill_time"] = TERM["owner"], now
                if j.get("running"):
                    terminate(j.get("pid"), signum or signal.SIGTERM)
                else:
                    j.update(final="EXIT", exit_code=None, exit_reason=TERM["owner"], end_time=now)
                sys.stdout.write("Job <%s> is being terminated\n" % x)
    return 255 if failed else 0


# --------------------------------------------------------------------------- HTCondor submit


def split_args_new(s):
    """HTCondor new-syntax argument/environment tokenizer (content inside the outer quotes)."""
    out, cur, have, inq, i = [], [], False, False, 0
    while i < len(s):
        c = s[i]
        if c == '"' and s[i + 1 : i + 2] == '"':
            cur.append('"')
            have = True
            i += 2
            continue
        if c == "'":
            if inq and s[i + 1 : i + 2] == "'":
                cur.append("'")
                i += 2
                continue
            inq, have = not inq, True
            i += 1
            continue
        if c.isspace() and not inq:
            if have:
                out.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if inq:
        raise ValueError("unterminated single quote")
    if have:
        out.append("".join(cur))
    return out


def parse_arguments(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return split_args_new(v[1:-1])
    return [a.replace('\\"', '"') for a in v.split()]


def parse_environment(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        toks = split_args_new(v[1:-1])
    else:
        toks = [t for t in v.split(";") if t.strip()]
    env = {}
    for t in toks:
        if "=" in t:
            k, val = t.split("=", 1)
            env[k.strip()] = val
    return env


def classad_literal(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1].replace('\\"', '"')
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if re.fullmatch(r"-?\d+\.\d*([eE]-?\d+)?", v):
        return float(v)
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() == "undefined":
        return None
    return {"expr": v}


def mem_mib(v, default_unit="M"):
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(v), re.I)
    if not m:
        return {"expr": str(v)}
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
    return int(float(m.group(1)) * scale[(m.group(2) or default_unit).upper()])


def parse_submit(text):
    """Return (list of (settings dict, custom attrs dict, count)) per queue statement."""
    settings, custom, queues = {}, {}, []
    lines, buf = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    if buf:
        lines.append(buf)
    for number, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if queues:  # real text (25.14.1): one queue statement, at the end
            raise ValueError("on Line %d of the submit file: Extra data found after queue statement" % (number + 1))
        m = re.match(r"(?i)^queue\b\s*(\d*)\s*(.*)$", s)
        if m:
            if m.group(2):
                raise ValueError("queue %s: only 'queue [N]' is supported by the fake" % m.group(2))
            queues.append((dict(settings), dict(custom), int(m.group(1) or 1)))
            continue
        if "=" not in s:
            raise ValueError("Illegal submit file line: %s" % s)
        k, v = s.split("=", 1)
        k, v = k.strip(), v.strip()
        if k.startswith("+"):
            custom[k[1:]] = v
        elif k.lower().startswith("my."):
            custom[k[3:]] = v
        else:
            settings[k.lower()] = v
    return queues


def expand(v, macros, depth=0):
    def rep(m):
        name, _, default = m.group(1).partition(":")
        val = macros.get(name.lower())
        return str(default if val is None else expand(str(val), macros, depth + 1)) if depth < 10 else ""

    # innermost first, as condor_submit: $(cb_dir_$(Process)) is cb_dir_0 in proc 0
    for _ in range(10):
        v, n = re.subn(r"\$\(([^()$]+)\)", rep, v)
        if not n:
            break
    return v


def cmd_condor_submit(argv):
    terse, batch, path, extra = False, None, None, []
    i = 0
    while i < len(argv):
        t = argv[i]
        if t == "-terse":
            terse = True
        elif t in ("-batch-name", "-batch_name"):
            batch = argv[i + 1]
            i += 1
        elif t in ("-append", "-a"):
            extra.append(argv[i + 1])
            i += 1
        elif t in ("-file",):
            path = argv[i + 1]
            i += 1
        elif "=" in t and not t.startswith("-"):
            extra.append(t)
        elif t.startswith("-") and t != "-":
            pass
        else:
            path = t
        i += 1
    try:
        text = sys.stdin.read() if path in (None, "-") else open(path).read()
    except OSError as e:
        sys.stderr.write("\nERROR: Failed to open command file (%s)\n" % e.strerror)
        return 1
    if extra:
        lines = text.splitlines()
        qi = next((k for k, l in enumerate(lines) if re.match(r"(?i)^\s*queue\b", l)), len(lines))
        text = "\n".join(lines[:qi] + extra + lines[qi:])
    try:
        queues = parse_submit(text)
    except ValueError as e:
        sys.stderr.write("\nERROR: %s\n" % e)
        return 1
    if not queues:
        sys.stderr.write("\nERROR: no queue statement in submit file\n")  # unconfirmed text
        return 1
    subdir = os.getcwd()
    owner = getpass.getuser()
    with locked() as box:
        cond = box["state"]["condor"]
        cluster = cond["next"]
        procs, proc = [], 0
        for settings, custom, count in queues:
            for _ in range(count):
                macros = dict(settings)
                macros.update(cluster=cluster, clusterid=cluster, process=proc, procid=proc)
                g = lambda k, d=None: expand(settings[k], macros) if k in settings else d
                if not g("executable"):
                    sys.stderr.write("\nERROR: No 'executable' parameter was provided\n")  # unconfirmed text
                    return 1
                if g("container_image") and g("docker_image"):
                    sys.stderr.write("\nERROR: container_image and docker_image cannot both be set\n")  # unconfirmed
                    return 1
                iwd = os.path.join(subdir, g("initialdir", ".") or ".")
                iwd = os.path.normpath(iwd)
                absi = lambda p: p if p is None or os.path.isabs(p) else os.path.join(iwd, p)
                exe = g("executable")
                # as the real condor_submit (25.14.1, 23.9.6): a relative executable is found from its own
                # working directory, not from initialdir
                exe_path = exe if os.path.isabs(exe) else os.path.normpath(os.path.join(subdir, exe))
                universe = (g("universe", "vanilla") or "vanilla").lower()
                if (
                    universe == "container"
                    and (g("should_transfer_files", "IF_NEEDED") or "").upper() == "NO"
                    and (g("transfer_container", "true") or "").lower() not in ("false", "no", "0")
                ):
                    sys.stdout.write("Submitting job(s)")
                    # the container image counts as an input file (real text, 25.14.1; see tests/fixtures/htcondor)
                    sys.stderr.write(
                        '\nERROR: you specified files you want Condor to transfer via \n"transfer_input_files", '
                        "but you disabled should_transfer_files. \n"
                    )
                    return 1
                if (
                    universe == "vanilla"
                    and not os.path.exists(exe_path)
                    and g("transfer_executable", "true").lower() != "false"
                ):
                    # real texts (the name as the submit file gives it), by CB_FAKE_CONDOR_VERSION (default 25.14.1)
                    sys.stdout.write("Submitting job(s)")
                    if not condor_version().startswith("25."):
                        sys.stderr.write("\nERROR: Executable file %s does not exist\n" % exe)
                    else:
                        sys.stderr.write("\nERROR: Can't access executable file %s: No such file or directory\n" % exe)
                    return 1
                try:
                    args = parse_arguments(g("arguments", "") or "")
                    envd = parse_environment(g("environment", "") or "")
                except ValueError as e:
                    sys.stderr.write("\nERROR: %s\n" % e)
                    return 1
                getenv = (g("getenv", "false") or "false").strip()
                if getenv.lower() in ("true", "yes", "1"):
                    env = dict(os.environ)
                elif getenv.lower() in ("false", "no", "0"):
                    env = {}
                else:
                    env = {k: os.environ[k] for k in re.split(r"[\s,]+", getenv) if k in os.environ}
                env.update(envd)
                jid = "%d.%d" % (cluster, proc)
                ncpu = int(g("request_cpus", "1") or 1)
                env.update(
                    CONDOR_JOBID=jid,
                    _CONDOR_SCRATCH_DIR=iwd,
                    BATCH_SYSTEM="HTCondor",
                    OMP_NUM_THREADS=str(ncpu),
                    _CONDOR_SLOT="slot1_1",
                )
                image = g("container_image") or g("docker_image")
                run = [exe_path] + args
                if (
                    image
                    and universe in ("container", "vanilla", "docker")
                    and shutil.which("apptainer", path=os.environ.get("PATH"))
                ):
                    run = [shutil.which("apptainer"), "exec", image] + run
                now = int(time.time())
                ad = {
                    "ClusterId": cluster,
                    "ProcId": proc,
                    "JobStatus": 1,
                    "LastJobStatus": 0,
                    "Cmd": exe_path,
                    "Args": " ".join(args),
                    "Arguments": g("arguments", "") or "",
                    "Iwd": iwd,
                    "Owner": owner,
                    "User": "%s@%s" % (owner, HOST),
                    "QDate": now,
                    "EnteredCurrentStatus": now,
                    "CompletionDate": 0,
                    "ExitBySignal": False,  # the real schedd's default, shown from submission on
                    "JobUniverse": 5,  # also for universe = container (WantContainer, ContainerImage), as the real
                    "RequestCpus": ncpu,
                    "NumJobStarts": 0,
                    "RequestMemory": mem_mib(g("request_memory"))
                    if g("request_memory")
                    else {"expr": "ifthenelse(MemoryUsage =!= undefined,MemoryUsage,(ImageSize + 1023) / 1024)"},
                    "RequestDisk": mem_mib(g("request_disk"), "K") if g("request_disk") else {"expr": "DiskUsage"},
                    "Out": g("output", "/dev/null"),
                    "Err": g("error", "/dev/null"),
                    "GlobalJobId": "%s#%s#%d" % (HOST, jid, now),
                    "MaxHosts": 1,
                    "MinHosts": 1,
                }
                if g("log"):
                    ad["UserLog"] = absi(g("log"))
                if batch or g("batch_name"):
                    ad["JobBatchName"] = batch or g("batch_name")
                if g("container_image"):
                    ad.update(ContainerImage=g("container_image"), WantContainer=True)
                if g("docker_image"):
                    ad.update(DockerImage=g("docker_image"), WantDocker=True)
                if g("transfer_input_files"):
                    ad["TransferInput"] = g("transfer_input_files")
                if g("max_retries"):
                    ad["JobMaxRetries"] = int(g("max_retries"))
                if envd:
                    ad["Environment"] = " ".join(
                        "%s=%s" % (k, "'%s'" % v.replace("'", "''") if re.search(r"[\s']", v) else v)
                        for k, v in envd.items()
                    )
                for k, v in custom.items():
                    ad[k] = classad_literal(expand(v, macros))
                job = dict(ad)
                job.update(
                    id=jid,
                    argv=run,
                    cwd=iwd,
                    env=env,
                    stdout=absi(g("output")),
                    stderr=absi(g("error")),
                    stdout_append=False,
                    stderr_append=False,
                    memory_enforced=bool(os.environ.get("CB_FAKE_ENFORCE_MEMORY")) and bool(g("request_memory")),
                )
                if (g("should_transfer_files", "IF_NEEDED") or "").strip().upper() in ("YES", "TRUE"):
                    outputs = g("transfer_output_files")
                    job["transfer"] = {
                        "inputs": [
                            absi(f.strip()) + ("/" if f.strip().endswith("/") else "")
                            for f in (g("transfer_input_files") or "").split(",")
                            if f.strip()
                        ],
                        "outputs": None if outputs is None else [f.strip() for f in outputs.split(",") if f.strip()],
                        "remaps": parse_remaps(g("transfer_output_remaps") or ""),
                        "exe": exe_path if g("transfer_executable", "true").lower() != "false" else None,
                    }
                missing = [
                    f.strip()
                    for f in (g("transfer_input_files") or "").split(",")
                    if f.strip() and "://" not in f and not os.path.exists(absi(f.strip()))
                ]
                if missing and (g("should_transfer_files", "IF_NEEDED") or "").upper() != "NO":
                    job.update(
                        JobStatus=5,
                        HoldReasonCode=13,
                        HoldReasonSubCode=2,
                        suspended=False,
                        HoldReason="Error from slot1_1@%s: SHADOW at 127.0.0.1 failed to send file(s) to "
                        "<127.0.0.1:9618>: error reading from %s: (errno 2) No such file or "
                        "directory; STARTER failed to receive file(s) from <127.0.0.1:9618>" % (HOST, absi(missing[0])),
                    )
                cond["jobs"][jid] = job
                ulog_event(job, "000", "Job submitted from host: " + SCHEDD_ADDR)
                procs.append(jid)
                proc += 1
        cond["next"] = cluster + 1
        apply_job_faults(box)
    for jid in procs:
        spawn_supervisor("condor", jid)
    if terse:
        sys.stdout.write("%s - %s\n" % (procs[0], procs[-1]))
    else:
        sys.stdout.write(
            "Submitting job(s)%s\n%d job(s) submitted to cluster %d.\n" % ("." * len(procs), len(procs), cluster)
        )
        if condor_version().startswith("25."):
            sys.stderr.write("To monitor your job(s), run: condor_watch_q -clusters %d\n" % cluster)  # 25.14.1
    return 0


# --------------------------------------------------------------------------- HTCondor queries

AD_KEYS = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "LastJobStatus",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "JobBatchName",
    "Cmd",
    "Args",
    "Arguments",
    "Iwd",
    "Owner",
    "User",
    "QDate",
    "EnteredCurrentStatus",
    "CompletionDate",
    "JobStartDate",
    "RequestMemory",
    "RequestCpus",
    "RequestDisk",
    "Out",
    "Err",
    "UserLog",
    "GlobalJobId",
    "JobUniverse",
    "NumJobStarts",
    "RemoveReason",
    "ContainerImage",
    "WantContainer",
    "DockerImage",
    "WantDocker",
    "TransferInput",
    "JobMaxRetries",
    "Environment",
    "RemoteHost",
    "RemoteWallClockTime",
    "NumShadowExceptions",
    "MaxHosts",
    "MinHosts",
    "ReleaseReason",
)
INTERNAL = {
    "id",
    "argv",
    "cwd",
    "env",
    "stdout",
    "stderr",
    "stdout_append",
    "stderr_append",
    "pid",
    "running",
    "sup_pid",
    "vanished",
    "suspended",
    "requeue",
    "start_after",
    "start_time",
    "memory_enforced",
}


def condor_ad(job):
    ad = {k: v for k, v in job.items() if k not in INTERNAL}
    if job.get("JobStatus") != 2:
        ad.pop("RemoteHost", None)
    return ad


def in_queue(job, now):
    if job.get("vanished"):
        return False
    if job.get("JobStatus") in (3, 4):
        return bool(job.get("running")) or now - job.get("EnteredCurrentStatus", 0) < envf("CB_FAKE_QUEUE_LINGER", 0)
    return True


def in_history(job, now):
    return not job.get("vanished") and job.get("JobStatus") in (3, 4) and not in_queue(job, now)


class _CI(str):
    def __eq__(self, o):
        return isinstance(o, str) and self.lower() == o.lower()

    def __ne__(self, o):
        return not self.__eq__(o)

    __hash__ = str.__hash__


def compile_constraint(expr):
    """Translate a (simple) ClassAd expression to a Python predicate over an ad."""
    toks = re.findall(r'"(?:\\.|[^"\\])*"|=\?=|=!=|==|!=|<=|>=|&&|\|\||[()<>!+\-*/]|[A-Za-z_][\w.]*|\d+\.?\d*', expr)
    out = []
    for t in toks:
        if t.startswith('"'):
            out.append("_CI(%r)" % t[1:-1].replace('\\"', '"'))
        elif t in ("==", "=?="):
            out.append("==")
        elif t in ("!=", "=!="):
            out.append("!=")
        elif t == "&&":
            out.append(" and ")
        elif t == "||":
            out.append(" or ")
        elif t == "!":
            out.append(" not ")
        elif re.match(r"[A-Za-z_]", t):
            low = t.lower()
            out.append({"true": "True", "false": "False", "undefined": "None"}.get(low, "_a(%r)" % t))
        else:
            out.append(t)
    code = compile(" ".join(out), "<constraint>", "eval")

    def pred(ad):
        lower = {k.lower(): v for k, v in ad.items()}

        def _a(name):
            v = lower.get(
                name.lower().split(".", 1)[-1] if name.lower().startswith(("my.", "target.")) else name.lower()
            )
            return _CI(v) if isinstance(v, str) else v

        try:
            return bool(eval(code, {"__builtins__": {}}, {"_a": _a, "_CI": _CI}))
        except Exception:
            return False

    return pred


def _json_value(v):
    if isinstance(v, dict) and "expr" in v:
        return "/Expr(%s)/" % v["expr"]
    return v


def format_ads_json(ads):
    parts = [
        "{\n"
        + ",\n".join(
            "  %s: %s" % (json.dumps(k), json.dumps(_json_value(v)))
            for k, v in sorted(ad.items(), key=lambda kv: kv[0].lower())
        )
        + "\n}"
        for ad in ads
    ]
    return "[\n" + "\n,\n".join(parts) + ("\n" if parts else "") + "]\n"


def _af_value(v):
    if v is None:
        return "undefined"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return v["expr"]
    return str(v)


def _long_value(v):
    if isinstance(v, str):
        return json.dumps(v)
    return _af_value(v)


def parse_query_args(argv, history=False):
    o = {
        "json": False,
        "jsonl": False,
        "long": False,
        "attrs": None,
        "af": None,
        "constraints": [],
        "ids": [],
        "owners": [],
        "limit": None,
        "hold": False,
    }
    i = 0
    while i < len(argv):
        t = argv[i]
        if t in ("-json",):
            o["json"] = True
        elif t == "-jsonl":
            o["jsonl"] = True
        elif t in ("-l", "-long"):
            o["long"] = True
        elif t in ("-attributes", "-attrs"):
            o["attrs"] = [a for a in re.split(r"[\s,]+", argv[i + 1]) if a]
            i += 1
        elif t.startswith("-af") or t.startswith("-autoformat"):
            o["af"] = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                o["af"].append(argv[i + 1])
                i += 1
        elif t == "-constraint":
            o["constraints"].append(argv[i + 1])
            i += 1
        elif t in ("-match", "-limit"):
            o["limit"] = int(argv[i + 1])
            i += 1
        elif t == "-hold":
            o["hold"] = True
        elif t in ("-name", "-pool", "-since", "-completedsince", "-file", "-batch", "-format"):
            i += 1
        elif t.startswith("-"):
            pass
        elif re.fullmatch(r"\d+(\.\d+)?", t):
            o["ids"].append(t)
        else:
            o["owners"].append(t)
        i += 1
    return o


def select_ads(jobs, o, where):
    preds = [compile_constraint(c) for c in o["constraints"]]
    now = time.time()
    sel = []
    for jid, job in jobs.items():
        if not where(job, now):
            continue
        if o["ids"] and not any(x == jid or ("." not in x and jid.split(".")[0] == x) for x in o["ids"]):
            continue
        if o["owners"] and job.get("Owner") not in o["owners"]:
            continue
        if o["hold"] and job.get("JobStatus") != 5:
            continue
        ad = condor_ad(job)
        if all(p(ad) for p in preds):
            sel.append(ad)
    return sel


def print_ads(ads, o, history):
    if o["attrs"] is not None:
        keep = {a.lower() for a in o["attrs"]}
        ads = [{k: v for k, v in ad.items() if k.lower() in keep} for ad in ads]
    if o["af"] is not None:
        for ad in ads:
            lower = {k.lower(): v for k, v in ad.items()}
            sys.stdout.write(" ".join(_af_value(lower.get(a.lower())) for a in o["af"]) + "\n")
    elif o["jsonl"]:
        for ad in ads:
            sys.stdout.write(json.dumps({k: _json_value(v) for k, v in sorted(ad.items())}) + "\n")
    elif o["json"]:
        if ads or history:
            sys.stdout.write(format_ads_json(ads))
    elif o["long"]:
        for ad in ads:
            sys.stdout.write("".join("%s = %s\n" % (k, _long_value(v)) for k, v in sorted(ad.items())) + "\n")
    else:
        st = {1: "I", 2: "R", 3: "X", 4: "C", 5: "H", 6: ">", 7: "S"}
        if not history:
            sys.stdout.write("\n\n-- Schedd: %s : %s @ %s\n" % (HOST, SCHEDD_ADDR, time.strftime("%m/%d/%y %H:%M:%S")))
        sys.stdout.write(" ID          OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD\n")
        for ad in ads:
            sys.stdout.write(
                "%-12s %-16s %s   0+00:00:00 %s  0    0.0 %s\n"
                % (
                    "%d.%d" % (ad["ClusterId"], ad["ProcId"]),
                    ad["Owner"][:16],
                    time.strftime("%m/%d %H:%M", time.localtime(ad["QDate"])),
                    st.get(ad["JobStatus"], "?"),
                    os.path.basename(ad["Cmd"]),
                )
            )
        if not history:
            n = lambda s: sum(1 for a in ads if a["JobStatus"] == s)
            sys.stdout.write(
                "\nTotal for query: %d jobs; %d completed, %d removed, %d idle, %d running, %d held, "
                "%d suspended\n\n" % (len(ads), n(4), n(3), n(1), n(2), n(5), n(7))
            )


def cmd_condor_q(argv):
    o = parse_query_args(argv)
    with locked() as box:
        ads = select_ads(box["state"]["condor"]["jobs"], o, in_queue)
    ads.sort(key=lambda a: (a["ClusterId"], a["ProcId"]))
    print_ads(ads, o, history=False)
    return 0


def cmd_condor_history(argv):
    o = parse_query_args(argv, history=True)
    with locked() as box:
        ads = select_ads(box["state"]["condor"]["jobs"], o, in_history)
    ads.sort(key=lambda a: (a.get("EnteredCurrentStatus", 0), a["ClusterId"], a["ProcId"]), reverse=True)
    if o["limit"] is not None:
        ads = ads[: o["limit"]]
    print_ads(ads, o, history=True)
    return 0


def _targets(jobs, x, now):
    if "." in x:
        j = jobs.get(x)
        return [j] if j and in_queue(j, now) and j["JobStatus"] not in (3, 4) else []
    return [j for k, j in jobs.items() if k.split(".")[0] == x and in_queue(j, now) and j["JobStatus"] not in (3, 4)]


def cmd_condor_rm(argv):
    return _condor_act(argv, "remove")


def cmd_condor_release(argv):
    return _condor_act(argv, "release")


def cmd_condor_hold(argv):
    return _condor_act(argv, "hold")


def _condor_act(argv, action):
    ids = [a for a in argv if not a.startswith("-")]
    constraint = None
    if "-constraint" in argv:
        constraint = argv[argv.index("-constraint") + 1]
        ids = [a for a in ids if a != constraint]
    rc, now = 0, time.time()
    user = getpass.getuser()
    with locked() as box:
        jobs = box["state"]["condor"]["jobs"]
        if constraint is not None:
            p = compile_constraint(constraint)
            hits = [j for j in jobs.values() if in_queue(j, now) and j["JobStatus"] not in (3, 4) and p(condor_ad(j))]
            groups = [(None, hits)]
        else:
            groups = [(x, _targets(jobs, x, now)) for x in ids]
        empty = not any(in_queue(j, now) for j in jobs.values())
        if action == "remove" and ids and empty and condor_version() != "legacy":
            # the real condor_rm (25.14.1, 23.9.6) when the queue is empty, whatever the ids
            sys.stderr.write("condor_rm:0:There are no jobs in the queue\n")
            return 0
        for x, hits in groups:
            if action == "hold":
                ok = [j for j in hits if j["JobStatus"] in (1, 2, 7)]
                for j in ok:
                    j.update(
                        JobStatus=5,
                        LastJobStatus=j["JobStatus"],
                        EnteredCurrentStatus=int(now),
                        HoldReason="via condor_hold (by user %s)" % user,
                        HoldReasonCode=1,
                        HoldReasonSubCode=0,
                        suspended=True,
                    )
                    ulog_event(j, "012", "Job was held.\n\tvia condor_hold (by user %s)\n\tCode 1 Subcode 0" % user)
                    if j.get("running"):  # the real one evicts the job (SIGTERM); the fake stops it until release
                        j.update(ExitBySignal=True, ExitSignal=15)
                        pg_signal(j.get("pid"), signal.SIGSTOP)
                word, fail = "held", (not ok)
            elif action == "release":
                ok = [j for j in hits if j["JobStatus"] == 5]
                for j in ok:
                    j.update(
                        JobStatus=1,
                        LastJobStatus=5,
                        EnteredCurrentStatus=int(now),
                        suspended=False,
                        ReleaseReason="via condor_release (by user %s)" % user,
                    )
                    for k in ("HoldReason", "HoldReasonCode", "HoldReasonSubCode"):
                        j.pop(k, None)
                    ulog_event(j, "013", "Job was released.\n\tvia condor_release (by user %s)" % user)
                    if j.get("running"):
                        j["JobStatus"] = 2
                        pg_signal(j.get("pid"), signal.SIGCONT)
                word, fail = "released", (not ok)
            else:
                ok = hits
                for j in ok:
                    j.update(
                        JobStatus=3,
                        LastJobStatus=j["JobStatus"],
                        EnteredCurrentStatus=int(now),
                        RemoveReason="via condor_rm (by user %s)" % user,
                    )
                    ulog_event(j, "009", "Job was aborted.\n\tvia condor_rm (by user %s)" % user)
                    if j.get("running"):
                        terminate(j.get("pid"))
                word, fail = "marked for removal", (not ok)
            verb = action
            if x is None:
                if fail:
                    sys.stderr.write("Couldn't find/%s all jobs matching constraint %s\n" % (verb, constraint))
                else:
                    sys.stdout.write("All jobs matching constraint %s have been %s\n" % (constraint, word))
            elif "." in x:
                if fail:
                    if hits and action == "release":
                        sys.stderr.write("Job %s not held to be released\n" % x)
                    else:
                        sys.stderr.write("Job %s not found\n" % x)
                else:
                    sys.stdout.write("Job %s %s\n" % (x, word))
            elif fail:
                # 25.14.1 and 23.9.6 (tests/fixtures/htcondor/*/condor_rm_gone.json); older ones end with "."
                form = (
                    "Couldn't find/%s all jobs in cluster %s.\n"
                    if condor_version() == "legacy"
                    else ("\nCouldn't find/%s all jobs in cluster %s\n")
                )
                sys.stderr.write(form % (verb, x))
            else:
                sys.stdout.write("All jobs in cluster %s have been %s\n" % (x, word))
            rc = rc or (1 if fail else 0)
    if not ids and constraint is None:
        sys.stderr.write(
            "Usage: condor_%s [options] [cluster | cluster.proc | user ...]\n"
            % ("rm" if action == "remove" else action)
        )
        return 1
    return rc


# --------------------------------------------------------------------------- entry points


def condor_version():
    """Whose texts the HTCondor fakes print: CB_FAKE_CONDOR_VERSION 25.14.1 (default) or 23.9.6, captured in
    tests/fixtures/htcondor/<version>/, or ``legacy``: the older forms of the docs-sourced fixtures there."""
    return os.environ.get("CB_FAKE_CONDOR_VERSION") or "25.14.1"


def _slot_ad():
    """The fake pool's one slot: CB_FAKE_CONDOR_SLOT (JSON) overrides the default attributes."""
    ad = {"Name": "slot1@fakehost", "Machine": "fakehost", "HasSingularity": True, "HasSIF": True}
    ad.update(json.loads(os.environ.get("CB_FAKE_CONDOR_SLOT") or "{}"))
    return ad


def _slot_matches(constraint, ad):
    """Evaluate the constraints containerbatch sends: ``Attr =?= true`` terms joined by && and ||."""
    if constraint is None:
        return True
    text = constraint
    for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?=\s*=\?=)", constraint):
        text = re.sub(r"\b%s\s*=\?=\s*true\b" % name, "True" if ad.get(name) is True else "False", text)
    text = text.replace("&&", " and ").replace("||", " or ")
    if not re.fullmatch(r"[\sA-Za-z()]*", text) or set(re.findall(r"[A-Za-z]+", text)) - {"True", "False", "and", "or"}:
        sys.stderr.write("condor_status: fake cannot evaluate constraint %r\n" % constraint)
        raise SystemExit(1)
    return eval(text)  # only True/False/and/or/parentheses remain


def cmd_condor_status(argv):
    constraint, attrs, i = None, [], 0
    while i < len(argv):
        if argv[i] in ("-constraint", "-const"):
            constraint = argv[i + 1]
            i += 1
        elif argv[i] in ("-af", "-autoformat"):
            attrs = argv[i + 1 :]
            break
        i += 1
    ad = _slot_ad()
    if _slot_matches(constraint, ad):
        if attrs:
            print(
                " ".join(
                    str(ad.get(a, "undefined")).lower() if isinstance(ad.get(a), bool) else str(ad.get(a, "undefined"))
                    for a in attrs
                )
            )
        else:
            print(ad["Name"])
    return 0


COMMANDS = {
    "bsub": cmd_bsub,
    "bjobs": cmd_bjobs,
    "bkill": cmd_bkill,
    "bhist": cmd_bhist,
    "condor_submit": cmd_condor_submit,
    "condor_q": cmd_condor_q,
    "condor_history": cmd_condor_history,
    "condor_rm": cmd_condor_rm,
    "condor_release": cmd_condor_release,
    "condor_status": cmd_condor_status,
    "condor_hold": cmd_condor_hold,
}


def main(tool, argv):
    """Entry point of the fake tools in bin/."""
    rc = start_tool(tool, argv)
    if rc is not None:
        return rc
    return COMMANDS[tool](list(argv))


def add_fault(fault):
    with locked() as box:
        box["faults"].append(fault)
        apply_job_faults(box)


def fault_cli(argv):
    p = argparse.ArgumentParser(prog="fakesched fault", description="Inject deterministic faults into the fakes.")
    sub = p.add_subparsers(dest="name", required=True)
    for name, hlp in (
        ("error", "TOOL exits non-zero with the real error text"),
        ("garbage", "TOOL prints garbage on stdout"),
        ("hang", "TOOL sleeps SECONDS first"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("tool", help="tool name(s), comma separated, e.g. bjobs or condor_q,condor_history")
        if name == "hang":
            s.add_argument("seconds", type=float)
        s.add_argument("--count", type=int, default=None, help="affect the next N calls (default: all)")
        s.add_argument("--for", dest="for_", type=float, default=None, help="only for the next S seconds")
        s.add_argument("--until", type=float, default=None, help="until this epoch time")
        if name != "hang":
            s.add_argument("--message", "--text", dest="message", default=None)
            s.add_argument("--exit-code", type=int, default=None)
    for name, hlp in (
        ("vanish", "the job disappears from queue and history"),
        ("hold", "hold the job (HTCondor JobStatus 5; LSF PSUSP/USUSP); process SIGSTOPped or not started"),
        (
            "nodefail",
            "the job's node dies (SIGKILL). LSF: UNKWN then EXIT TERM_REMOVE_HUNG_JOB; "
            "HTCondor: back to idle, then rerun",
        ),
        ("memlimit", "memory-limit kill. LSF: EXIT TERM_MEMLIMIT (SIGKILL, exit 137); HTCondor: held, code 34"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("sched", choices=["lsf", "condor"])
        s.add_argument("job")
        if name in ("hold", "memlimit"):
            s.add_argument("--reason", default=None)
            s.add_argument("--code", type=int, default=None)
            s.add_argument("--subcode", type=int, default=None)
    sub.add_parser("clear", help="remove all faults")
    sub.add_parser("list", help="print faults.json")
    a = p.parse_args(argv)
    if a.name == "clear":
        with locked() as box:
            box["faults"] = []
        return 0
    if a.name == "list":
        with locked() as box:
            print(json.dumps(box["faults"], indent=1))
        return 0
    if a.name in ("error", "garbage", "hang"):
        until = a.until if a.until is not None else (time.time() + a.for_ if a.for_ is not None else None)
        f = {"kind": a.name, "tools": a.tool.split(","), "count": a.count, "until": until}
        if a.name == "hang":
            f["seconds"] = a.seconds
        else:
            f.update(message=a.message, exit_code=a.exit_code)
            if a.name == "garbage":
                f["text"] = a.message
        add_fault(f)
        return 0
    f = {"kind": a.name, "sched": a.sched, "job": a.job}
    for k in ("reason", "code", "subcode"):
        if getattr(a, k, None) is not None:
            f[k] = getattr(a, k)
    add_fault(f)
    return 0


def cli(argv):
    if not argv:
        sys.stderr.write("usage: fakesched fault ... | cleanup | TOOL args...\n")
        return 2
    if argv[0] == "_supervise":
        try:
            supervise(argv[1], argv[2])
        except Exception as e:  # keep a trace for debugging
            slog("supervisor %s %s crashed: %r" % (argv[1], argv[2], e))
            raise
        return 0
    if argv[0] == "_escalate":
        time.sleep(float(argv[2]))
        pg_signal(int(argv[1]), signal.SIGKILL)
        return 0
    if argv[0] == "fault":
        state_dir()
        return fault_cli(argv[1:])
    if argv[0] == "cleanup":
        state_dir()
        cleanup_jobs()
        return 0
    if argv[0] in COMMANDS:
        return main(argv[0], argv[1:])
    sys.stderr.write("fakesched: unknown command %s\n" % argv[0])
    return 2


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
