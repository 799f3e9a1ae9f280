"""The fake LSF commands (bsub, bjobs, bkill, bhist), built on :mod:`containerbatch.testing.fakes`.

What they print follows the captured examples in tests/fixtures/lsf (and their README's sources).
Knobs: CB_FAKE_CLEAN_PERIOD (s a finished job stays in bjobs, default 3600), CB_FAKE_LSF_GREETING=N
(print N ``Cannot connect to LSF. Please wait ...`` lines before bsub's answer),
CB_FAKE_LSF_DEFAULT_QUEUE (default ``normal``), CB_FAKE_LSF_QUEUES (comma list of valid queues; unset =
any), CB_FAKE_LSF_MINUTE_SECONDS (length of a -W minute, default 60), CB_FAKE_LSF_UNKWN_SECONDS (UNKWN
phase after a node failure, default 1), LSB_BJOBS_CONSISTENT_EXIT_CODE=Y (bjobs exits 255 when
nothing/unknown found).

Faults (``fakesched-fault NAME ... lsf JOB``): ``error`` prints ``Request from non-LSF host rejected``
(exit 255); ``hold``: PSUSP/USUSP (no resume command is faked); ``nodefail``: SIGKILL, STAT UNKWN for
CB_FAKE_LSF_UNKWN_SECONDS, then EXIT with ``TERM_REMOVE_HUNG_JOB: hung job removed from the LSF
system`` (exit code 137); ``memlimit``: SIGKILL, EXIT with ``TERM_MEMLIMIT: job killed after reaching
LSF memory usage limit`` and exit code 137 (as in real job reports).  Job arrays (``-J "name[1-N]"``)
are faked; not faked: #BSUB parsing of a script given as an argument (only ``bsub < script`` reads
#BSUB lines).
"""

import getpass
import json
import os
import re
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
    state_dir,
    suspend,
    terminate,
)

HOST = "fakehost"
REJECTED = ("Request from non-LSF host rejected\n", 255)
TERM = {
    "owner": "TERM_OWNER: job killed by owner",
    "memlimit": "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit",
    "runlimit": "TERM_RUNLIMIT: job killed after reaching LSF run time limit",
    "hung": "TERM_REMOVE_HUNG_JOB: hung job removed from the LSF system",
    "cwd": "TERM_CWD_NOTEXIST: current working directory is not accessible or does not exist on the execution host",
}

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
            "description": opts.get("-Jd", ""),
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
        "job_description": job.get("description", ""),
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


class LsfFake(FakeScheduler):
    """How an LSF job lives: ``final`` DONE/EXIT with ``exit_code`` and ``exit_reason`` (a TERM_* text)."""

    name = "lsf"
    commands = {"bsub": cmd_bsub, "bjobs": cmd_bjobs, "bkill": cmd_bkill, "bhist": cmd_bhist}
    errors = {tool: REJECTED for tool in commands}
    merge_stderr = True  # no -e: the error stream goes to the -o file

    def is_over(self, job):
        return bool(job.get("final"))

    def launch_failed(self, job, error):
        cwd_missing = not os.path.isdir(job["cwd"])
        job.update(
            final="EXIT",
            exit_code=1 if cwd_missing else 127,
            end_time=time.time(),
            running=False,
            exit_reason=TERM["cwd"] if cwd_missing else "",
        )

    def run_limit(self, job):
        if not job.get("runlimit_min"):
            return None
        return job["start_time"] + job["runlimit_min"] * envf("CB_FAKE_LSF_MINUTE_SECONDS", 60)

    def on_run_limit(self, job):
        job.setdefault("kill_reason", TERM["runlimit"])
        return signal.SIGUSR2

    def finish(self, job, rc):
        code = rc if rc >= 0 else 128 - rc
        reason = job.get("kill_reason", "")
        job.update(
            final="DONE" if code == 0 and not reason else "EXIT",
            exit_code=code,
            exit_reason=reason,
            end_time=time.time(),
        )
        return True

    def apply_fault(self, fault, job, now):
        kind = fault["kind"]
        if kind == "hold":
            suspend(job)
            return True
        if not job.get("running"):
            return False  # nodefail/memlimit wait for the job to run
        if kind == "nodefail":
            job["kill_reason"] = TERM["hung"]
            job["unkwn_until"] = now + envf("CB_FAKE_LSF_UNKWN_SECONDS", 1)
        else:
            job["kill_reason"] = TERM["memlimit"]  # real job reports show exit code 137
        kill_now(job)
        return True


FAKE = register(LsfFake())

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
