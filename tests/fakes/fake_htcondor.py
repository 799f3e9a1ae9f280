"""The fake HTCondor commands (condor_submit, condor_q, condor_history, condor_rm, condor_release,
condor_hold, condor_status), built on :mod:`containerbatch.testing.fakes`.

What they print follows the captured examples in tests/fixtures/htcondor/<version>/ (whose version:
CB_FAKE_CONDOR_VERSION, see :func:`condor_version`; tests/test_htcondor_scenario.py compares fake and
real).  Knobs: CB_FAKE_QUEUE_LINGER (s a finished job stays in condor_q, default 0),
CB_FAKE_REQUEUE_DELAY (idle time after a node failure, default 0.5), CB_FAKE_CONDOR_SLOT (JSON: the one
slot's attributes for condor_status), CB_FAKE_TRANSFER_REVERSED=1 (outputs come back in reverse
order, 2 s apart).

Faults (``fakesched-fault NAME ... condor JOB``): ``error`` prints the real texts (condor_q/history:
``-- Failed to fetch ads from: <...> : host`` + ``SECMAN:2007:Failed to end classad message.``, exit 1;
condor_submit/rm/release/hold: ``ERROR: Can't find address of local schedd``, exit 1); ``hold``:
JobStatus 5 with the given HoldReason/HoldReasonCode (default: user hold, code 1), ``condor_release``
resumes it (SIGCONT, JobStatus 2) or lets it start (1 -> 2); ``nodefail`` (what a vanilla job does when
its execute node dies): back to idle (JobStatus 1, NumShadowExceptions+1), then run again from scratch
(NumJobStarts 2); ``memlimit``: killed and held with HoldReasonCode 34, HoldReasonSubCode 0 and ``Error
from slot1_1@fakehost: Job has gone over cgroup memory limit of N megabytes. Peak usage: M megabytes.
Consider resubmitting with a higher request_memory.`` (override with --reason/--code, e.g. code 21 and
``Error from ...: memory usage exceeded request_memory`` for startd-policy holds).

File transfer (``should_transfer_files = YES``): the job runs in a fresh scratch folder under
``$CB_FAKE_STATE/execute`` (``_CONDOR_SCRATCH_DIR``) holding the executable and ``transfer_input_files``
(a folder with a trailing ``/`` gives its contents); at exit ``transfer_output_files`` (or, unset, the
top-level files the job created) go back to initialdir or where ``transfer_output_remaps`` says, before
the job counts as completed; a missing output holds the job (code 12), a missing input at submit (code
13); the scratch folder is removed.  Otherwise jobs run in initialdir (shared filesystem).  Container
jobs (container_image/docker_image) run as ``apptainer exec IMAGE exe args`` when an ``apptainer`` is on
PATH, else directly.  Not faked: ``queue ... from/in/matching`` in submit files.
"""

import getpass
import json
import os
import re
import shutil
import signal
import sys
import time

from containerbatch.testing.fakes import (
    FakeScheduler,
    apply_job_faults,
    cli,
    envf,
    kill_now,
    locked,
    pg_signal,
    register,
    spawn_supervisor,
    start_process,
    state_dir,
    suspend,
    terminate,
)

HOST = "fakehost"
SCHEDD_ADDR = "<127.0.0.1:9618?addrs=127.0.0.1-9618&alias=fakehost&noUDP&sock=schedd_4242_a1b2>"
FETCH_FAILED = (
    "-- Failed to fetch ads from: %s : %s\nSECMAN:2007:Failed to end classad message.\n" % (SCHEDD_ADDR, HOST),
    1,
)
NO_SCHEDD = ("\nERROR: Can't find address of local schedd\n", 1)


def _held(job, now, reason, code, subcode, last):
    job.update(
        JobStatus=5,
        LastJobStatus=last,
        EnteredCurrentStatus=int(now),
        HoldReason=reason,
        HoldReasonCode=code,
        HoldReasonSubCode=subcode,
    )
    ulog_event(job, "012", "Job was held.\n\t%s\n\tCode %d Subcode %d" % (reason, code, subcode))


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
    if not o["ids"] and not o["owners"] and "-allusers" not in argv:
        # condor_q (8.5+) shows only the current user's jobs unless given ids, owners or -allusers
        # (CONDOR_Q_ONLY_MY_JOBS = false in the real configuration turns that off)
        o["owners"] = [getpass.getuser()]
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


class CondorFake(FakeScheduler):
    """How an HTCondor job lives: its job ad (JobStatus 1 idle, 2 running, 3 removed, 4 completed, 5 held)."""

    name = "condor"
    commands = {
        "condor_submit": cmd_condor_submit,
        "condor_q": cmd_condor_q,
        "condor_history": cmd_condor_history,
        "condor_rm": cmd_condor_rm,
        "condor_release": cmd_condor_release,
        "condor_status": cmd_condor_status,
        "condor_hold": cmd_condor_hold,
    }
    errors = {
        "condor_q": FETCH_FAILED,
        "condor_history": FETCH_FAILED,
        "condor_submit": NO_SCHEDD,
        "condor_rm": NO_SCHEDD,
        "condor_release": NO_SCHEDD,
        "condor_hold": NO_SCHEDD,
        "condor_status": ("Error: communication error\nCEDAR:6001:Failed to connect to <127.0.0.1:9618>\n", 1),
    }

    def job_id(self, text):
        return text if "." in text else text + ".0"

    def is_over(self, job):
        return bool(job.get("final")) or job.get("JobStatus") in (3, 4)

    def is_waiting(self, job):
        return bool(job.get("suspended")) or job.get("JobStatus") == 5 or time.time() < job.get("start_after", 0)

    def launch(self, job):
        if not os.path.isdir(job["cwd"]):
            raise OSError(2, "No such file or directory", job["cwd"])
        cwd, argv, env = job["cwd"], job["argv"], job["env"]
        if job.get("transfer"):
            cwd, argv, env = _stage_in(job)
        proc = start_process(self.name, job, argv, cwd, env, merge_stderr=False)
        now = time.time()
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
        return proc

    def launch_failed(self, job, error):
        code, sub = (14, error.errno or 2) if not os.path.isdir(job["cwd"]) else (6, error.errno or 2)
        reason = "Error from slot1_1@%s: Failed to execute '%s': (errno=%d: '%s')" % (
            HOST,
            job["Cmd"],
            error.errno or 2,
            error.strerror or str(error),
        )
        job["running"] = False
        _held(job, time.time(), reason, code, sub, last=1)

    def finish(self, job, rc):
        return _finish_condor(job, rc)

    def apply_fault(self, fault, job, now):
        kind = fault["kind"]
        if kind == "hold":
            reason = fault.get("reason") or "via condor_hold (by user %s)" % job["Owner"]
            code = int(fault.get("code") if fault.get("code") is not None else 1)
            _held(job, now, reason, code, int(fault.get("subcode") or 0), last=job.get("JobStatus", 1))
            suspend(job)
            return True
        if not job.get("running"):
            return False  # nodefail/memlimit wait for the job to run
        if kind == "nodefail":
            job["requeue"] = True
            kill_now(job)
            return True
        mem = job.get("RequestMemory") if isinstance(job.get("RequestMemory"), int) else 128
        reason = fault.get("reason") or (
            "Error from slot1_1@%s: Job has gone over cgroup memory limit of %d megabytes. "
            "Peak usage: %d megabytes.  Consider resubmitting with a higher request_memory." % (HOST, mem, mem + 1)
        )
        code = int(fault.get("code") if fault.get("code") is not None else 34)
        _held(job, now, reason, code, int(fault.get("subcode") or 0), last=2)
        kill_now(job)
        return True


FAKE = register(CondorFake())

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
