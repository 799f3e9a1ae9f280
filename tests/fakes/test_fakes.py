"""Tests of the LSF and HTCondor fakes in tests/fakes/bin (see fakesched.py)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BIN = HERE / "bin"
FIXTURES = HERE.parent / "fixtures"
TOOLS = [
    "bsub",
    "bjobs",
    "bkill",
    "bhist",
    "condor_submit",
    "condor_q",
    "condor_history",
    "condor_rm",
    "condor_release",
    "fakesched-fault",
]


class Fake:
    def __init__(self, root, state):
        self.root, self.state = root, state

    def run(self, *argv, stdin=None, env=None, timeout=10):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run(
            [str(a) for a in argv], input=stdin, capture_output=True, text=True, env=e, cwd=self.root, timeout=timeout
        )

    def fault(self, *args):
        r = self.run("fakesched-fault", *args)
        assert r.returncode == 0, r.stderr

    def gated_script(self, name, code=3, extra=""):
        """A /bin/sh script that writes a file, waits for <name>.go, then exits with code."""
        path = self.root / (name + ".sh")
        gate = self.root / (name + ".go")
        path.write_text(
            "#!/bin/sh\n"
            "echo started >> %s.ran\n"
            "echo out-line\necho err-line >&2\n%s\n"
            "i=0; while [ ! -e %s ] && [ $i -lt 300 ]; do sleep 0.02; i=$((i+1)); done\n"
            "exit %d\n" % (self.root / name, extra, gate, code)
        )
        path.chmod(0o755)
        return path, gate

    def calls(self):
        p = self.state / "calls.log"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@pytest.fixture
def fake(tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("CB_FAKE_STATE", str(state))
    monkeypatch.setenv("PATH", "%s:%s" % (BIN, os.environ["PATH"]))
    for k in list(os.environ):
        if (
            k.startswith("CB_FAKE_")
            and k != "CB_FAKE_STATE"
            or k in ("LSB_BJOBS_CONSISTENT_EXIT_CODE", "LSB_BJOBS_FORMAT")
        ):
            monkeypatch.delenv(k)
    monkeypatch.setenv("CB_FAKE_KILL_GRACE", "0.5")
    f = Fake(tmp_path, state)
    yield f
    subprocess.run([sys.executable, str(HERE / "fakesched.py"), "cleanup"], env=dict(os.environ), timeout=10)


def wait_for(pred, timeout=8.0, interval=0.05):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("condition not met within %ss (last value %r)" % (timeout, last))


def lsf_rec(fake, jid, fields="jobid stat exit_code exit_reason"):
    r = fake.run("bjobs", "-json", "-a", "-o", fields, jid)
    return json.loads(r.stdout)["RECORDS"][0]


def lsf_stat_is(fake, jid, stat):
    return lambda: (lambda r: r if r.get("STAT") == stat else None)(lsf_rec(fake, jid))


def condor_ad(
    fake, jid, attrs="ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,HoldReason,HoldReasonCode,NumJobStarts"
):
    q = fake.run("condor_q", "-json", "-attributes", attrs, jid)
    assert q.returncode == 0, q.stderr
    if q.stdout:
        return "queue", json.loads(q.stdout)[0]
    h = fake.run("condor_history", "-json", "-attributes", attrs, jid)
    ads = json.loads(h.stdout)
    return ("history", ads[0]) if ads else (None, None)


def condor_status_is(fake, jid, status, where=None):
    def check():
        w, ad = condor_ad(fake, jid)
        return (w, ad) if ad and ad["JobStatus"] == status and (where is None or w == where) else None

    return check


def norm(s):
    return re.sub(r"\d+", "N", s)


def load_fixture(kind, name):
    return json.loads((FIXTURES / kind / (name + ".json")).read_text())


# ------------------------------------------------------------------ general


def test_tools_are_executable_python3_scripts():
    for t in TOOLS:
        p = BIN / t
        assert p.exists() and os.access(p, os.X_OK), t
        assert p.read_text().startswith("#!/usr/bin/env python3\n"), t


def test_state_dir_required(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CB_FAKE_STATE"}
    r = subprocess.run([str(BIN / "bjobs")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2 and "CB_FAKE_STATE is not set" in r.stderr


def test_calls_log_counts_invocations(fake):
    fake.run("bjobs", "-a")
    fake.run("condor_q", "-json", "7")
    fake.run("condor_q", "-json", "8")
    calls = fake.calls()
    assert [c["tool"] for c in calls] == ["bjobs", "condor_q", "condor_q"]
    assert calls[1]["argv"] == ["-json", "7"]


# ------------------------------------------------------------------ LSF


def test_lsf_submit_run_exit_and_bhist(fake):
    script, gate = fake.gated_script("j", code=3, extra='echo "id=$LSB_JOBID" > id.txt')
    r = fake.run("bsub", "-J", "myjob", "-o", "out.%J", "-n", "2", "-M", "2000", "-R", "rusage[mem=2000]", str(script))
    assert r.returncode == 0 and r.stdout == "Job <1> is submitted to default queue <normal>.\n"
    assert re.match(r"Job <(\d+)> is submitted to .*queue", r.stdout)
    wait_for(lsf_stat_is(fake, "1", "RUN"))
    assert (
        fake.run(
            "bjobs", "-noheader", "-a", "-o", "jobid stat exit_code exit_reason job_name queue delimiter='^'", "1"
        ).stdout
        == "1^RUN^-^-^myjob^normal\n"
    )
    gate.touch()
    rec = wait_for(lsf_stat_is(fake, "1", "EXIT"))
    assert rec == {"JOBID": "1", "STAT": "EXIT", "EXIT_CODE": "3", "EXIT_REASON": ""}
    assert (
        fake.run("bjobs", "-noheader", "-a", "-o", "jobid stat exit_code exit_reason delimiter='^'", "1").stdout
        == "1^EXIT^3^-\n"
    )
    assert (fake.root / "j.ran").read_text() == "started\n"
    assert (fake.root / "out.1").read_text() == "out-line\nerr-line\n"  # stderr joins stdout without -e
    assert (fake.root / "id.txt").read_text() == "id=1\n"
    h = fake.run("bhist", "-l", "1")
    assert h.returncode == 0 and "Exited with exit code 3." in h.stdout and "Job <1>, Job Name <myjob>" in h.stdout
    assert "MEMLIMIT" in h.stdout
    assert "Summary of time in seconds" in fake.run("bhist", "1").stdout


def test_bsub_stdin_directives_command_line_wins(fake):
    script = "#!/bin/sh\n#BSUB -J fromscript\n#BSUB -q long\n#BSUB -o so.%J\n#BSUB -e se.%J\necho hi\necho oops >&2\n"
    r = fake.run("bsub", "-q", "short", stdin=script)
    assert r.stdout == "Job <1> is submitted to queue <short>.\n"
    rec = wait_for(lsf_stat_is(fake, "1", "DONE"))
    assert rec["EXIT_CODE"] == "" and rec["EXIT_REASON"] == ""
    out = fake.run("bjobs", "-noheader", "-a", "-o", "jobid stat exit_code job_name queue delimiter='^'", "1").stdout
    assert out == "1^DONE^-^fromscript^short\n"
    assert (fake.root / "so.1").read_text() == "hi\n" and (fake.root / "se.1").read_text() == "oops\n"
    assert "Done successfully" in fake.run("bhist", "-l", "1").stdout


def test_bsub_cwd_env_and_overwrite(fake):
    (fake.root / "w").mkdir()
    (fake.root / "w" / "o.txt").write_text("old content\n")
    r = fake.run(
        "bsub",
        "-cwd",
        "w",
        "-oo",
        "o.txt",
        "-env",
        "all, FOO=bar, ~HOME",
        'echo "$FOO $PWD ${HOME:-nohome} $LSB_JOBID"',
        env={"HOME": "/root"},
    )
    assert r.returncode == 0
    wait_for(lsf_stat_is(fake, "1", "DONE"))
    assert (fake.root / "w" / "o.txt").read_text() == "bar %s nohome 1\n" % (fake.root / "w")


def test_bkill_messages_and_state(fake):
    script, gate = fake.gated_script("k")
    fake.run("bsub", "-o", "k.out", str(script))
    wait_for(lsf_stat_is(fake, "1", "RUN"))
    r = fake.run("bkill", "1")
    assert (r.returncode, r.stdout, r.stderr) == (0, "Job <1> is being terminated\n", "")
    rec = wait_for(lsf_stat_is(fake, "1", "EXIT"))
    assert rec["EXIT_REASON"] == "TERM_OWNER: job killed by owner" and rec["EXIT_CODE"] == "143"
    r = fake.run("bkill", "1", "66")
    assert r.returncode == 255
    assert r.stderr == "Job <1>: Job has already finished\nJob <66>: No matching job found\n"
    assert "Completed <exit>; TERM_OWNER: job killed by owner." in fake.run("bhist", "-l", "1").stdout


def test_bkill_pending_job(fake):
    fake.fault("hold", "lsf", "1")  # keeps job 1 from starting (PSUSP)
    fake.run("bsub", "true")
    assert lsf_rec(fake, "1")["STAT"] == "PSUSP"
    assert fake.run("bkill", "1").stdout == "Job <1> is being terminated\n"
    assert lsf_rec(fake, "1")["STAT"] == "EXIT"


def test_bjobs_messages_and_clean_period(fake):
    r = fake.run("bjobs")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "No unfinished job found\n")
    r = fake.run("bjobs", env={"LSB_BJOBS_CONSISTENT_EXIT_CODE": "Y"})
    assert r.returncode == 255
    r = fake.run("bjobs", "-noheader", "-o", "jobid stat delimiter='^'", "5")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "Job <5> is not found\n")
    r = fake.run("bjobs", "-json", "-o", "jobid stat", "5")
    assert json.loads(r.stdout) == {
        "COMMAND": "bjobs",
        "JOBS": 1,
        "RECORDS": [{"JOBID": "5", "ERROR": "Job <5> is not found"}],
    }
    fake.run("bsub", "true")
    wait_for(lsf_stat_is(fake, "1", "DONE"))
    r = fake.run("bjobs", "1")  # finished jobs need -a
    assert r.stdout == "" and r.stderr == "No unfinished job found\n"
    r = fake.run("bjobs", "-noheader", "-a", "-o", "jobid stat delimiter='^'", "1", "5")
    assert (r.returncode, r.stdout, r.stderr) == (255, "1^DONE\n", "Job <5> is not found\n")
    r = fake.run("bjobs", "-a", "-o", "jobid stat delimiter='^'", "1", env={"CB_FAKE_CLEAN_PERIOD": "0"})
    assert r.stdout == "" and r.stderr == "Job <1> is not found\n"
    assert "Done successfully" in fake.run("bhist", "-l", "1", env={"CB_FAKE_CLEAN_PERIOD": "0"}).stdout
    r = fake.run("bjobs", "-json", "-noheader", "-o", "jobid")
    assert r.returncode == 255


def test_bsub_greeting_and_queues(fake):
    r = fake.run("bsub", "-q", "pub.1h", "true", env={"CB_FAKE_LSF_GREETING": "2"})
    assert r.stdout == ("Cannot connect to LSF. Please wait ...\n" * 2) + "Job <1> is submitted to queue <pub.1h>.\n"
    r = fake.run("bsub", "-q", "nope", "true", env={"CB_FAKE_LSF_QUEUES": "normal,long"})
    assert r.returncode == 255 and "No such queue" in r.stderr


def test_lsf_tool_faults(fake):
    fake.fault("error", "bjobs", "--count", "2")
    for _ in range(2):
        r = fake.run("bjobs", "-a")
        assert (r.returncode, r.stderr) == (255, "Request from non-LSF host rejected\n")
    assert fake.run("bjobs", "-a").returncode == 0
    fake.fault("error", "bjobs", "--for", "0.4", "--message", "LSF is down. Please wait ...")
    assert fake.run("bjobs").stderr == "LSF is down. Please wait ...\n"
    time.sleep(0.5)
    assert fake.run("bjobs").returncode == 0
    fake.fault("hang", "bhist", "1", "--count", "1")
    t0 = time.time()
    fake.run("bhist")
    assert time.time() - t0 >= 1.0
    fake.fault("garbage", "bjobs", "--count", "1")
    r = fake.run("bjobs", "-json", "-o", "jobid")
    with pytest.raises(ValueError):
        json.loads(r.stdout)
    fake.fault("error", "bsub", "--count", "1")
    r = fake.run("bsub", "true")
    assert (r.returncode, r.stdout, r.stderr) == (255, "", "Request from non-LSF host rejected\n")
    assert fake.run("bsub", "true").stdout.startswith("Job <1> is submitted")  # failed submit made no job


def test_lsf_job_faults(fake):
    s1, g1 = fake.gated_script("a")
    s2, g2 = fake.gated_script("b")
    s3, g3 = fake.gated_script("c")
    for s in (s1, s2, s3):
        fake.run("bsub", "-M", "1000", str(s))
    for j in "123":
        wait_for(lsf_stat_is(fake, j, "RUN"))
    fake.fault("memlimit", "lsf", "1")
    rec = wait_for(lsf_stat_is(fake, "1", "EXIT"))
    assert rec["EXIT_REASON"] == "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"
    assert rec["EXIT_CODE"] == "137"
    assert (
        "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit" in fake.run("bhist", "-l", "-UF", "1").stdout
    )
    fake.fault("nodefail", "lsf", "2")
    wait_for(lsf_stat_is(fake, "2", "UNKWN"))
    rec = wait_for(lsf_stat_is(fake, "2", "EXIT"))
    assert rec["EXIT_REASON"].startswith("TERM_REMOVE_HUNG_JOB")
    fake.fault("vanish", "lsf", "3")
    r = fake.run("bjobs", "-a", "3")
    assert r.stderr == "Job <3> is not found\n"
    assert fake.run("bhist", "-l", "3").stdout == ""


def test_lsf_hold_suspends_running_job(fake):
    s, g = fake.gated_script("h")
    fake.run("bsub", str(s))
    wait_for(lsf_stat_is(fake, "1", "RUN"))
    fake.fault("hold", "lsf", "1")
    assert lsf_rec(fake, "1")["STAT"] == "USUSP"


def test_lsf_runlimit(fake):
    s, g = fake.gated_script("r")
    fake.run("bsub", "-W", "1", str(s), env={"CB_FAKE_LSF_MINUTE_SECONDS": "0.3"})
    rec = wait_for(lsf_stat_is(fake, "1", "EXIT"))
    assert rec["EXIT_REASON"] == "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    assert rec["EXIT_CODE"] == "140"


# ------------------------------------------------------------------ HTCondor

SUB = '''\
executable = {exe}
arguments = "one 'two three' 'it''s' ""q"""
output = out.$(Cluster).$(Process)
error = err.$(Cluster)
log = job.log
environment = "A1=1 B2='x y'"
request_memory = 2G
request_cpus = 2
batch_name = mybatch
+JobFlavour = "longlunch"
MY.MaxRuntime = 3600
queue
'''


def test_condor_submit_run_complete_history(fake):
    exe, gate = fake.gated_script(
        "c", code=3, extra='for x in "$@"; do echo "[$x]"; done; echo "$A1|$B2|$CONDOR_JOBID"'
    )
    (fake.root / "job.sub").write_text(SUB.format(exe=exe.name))
    r = fake.run("condor_submit", "job.sub")
    assert (r.returncode, r.stdout) == (0, "Submitting job(s).\n1 job(s) submitted to cluster 1.\n")
    wait_for(condor_status_is(fake, "1", 2, "queue"))
    q = fake.run("condor_q", "-json", "-attributes", "ClusterId,ProcId,JobStatus,JobBatchName", "1")
    assert q.stdout == '[\n{\n  "ClusterId": 1,\n  "JobBatchName": "mybatch",\n  "JobStatus": 2,\n  "ProcId": 0\n}\n]\n'
    gate.touch()
    where, ad = wait_for(condor_status_is(fake, "1.0", 4))
    assert where == "history" and ad["ExitCode"] == 3 and ad["ExitBySignal"] is False
    assert fake.run("condor_q", "-json", "1").stdout == ""  # finished jobs leave the queue
    full = json.loads(fake.run("condor_history", "-json", "-match", "1", "1").stdout)[0]
    assert full["JobFlavour"] == "longlunch" and full["MaxRuntime"] == 3600 and full["RequestMemory"] == 2048
    assert full["RequestCpus"] == 2 and full["CompletionDate"] > 0 and full["Owner"]
    assert (fake.root / "out.1.0").read_text() == 'out-line\n[one]\n[two three]\n[it\'s]\n["q"]\n1|x y|1.0\n'
    assert (fake.root / "err.1").read_text() == "err-line\n"
    log = (fake.root / "job.log").read_text()
    assert log.startswith("000 (001.000.000)") and "(1) Normal termination (return value 3)" in log


def test_condor_queue_n_constraint_rm(fake):
    exe, gate = fake.gated_script("m")
    (fake.root / "m.sub").write_text("executable = %s\nbatch_name = b1\nqueue 3\n" % exe)
    assert fake.run("condor_submit", "m.sub").stdout == "Submitting job(s)...\n3 job(s) submitted to cluster 1.\n"
    assert fake.run("condor_submit", "-terse", "m.sub").stdout == "2.0 - 2.2\n"
    out = fake.run(
        "condor_q", "-json", "-constraint", 'JobBatchName == "b1" && ClusterId == 1', "-attributes", "ClusterId,ProcId"
    ).stdout
    assert out.count("\n,\n") == 2 and len(json.loads(out)) == 3
    assert fake.run("condor_q", "1.1", "-af", "ClusterId", "ProcId", "ExitCode").stdout == "1 1 undefined\n"
    r = fake.run("condor_rm", "1")
    assert (r.returncode, r.stdout) == (0, "All jobs in cluster 1 have been marked for removal\n")
    r = fake.run("condor_rm", "2.1")
    assert (r.returncode, r.stdout) == (0, "Job 2.1 marked for removal\n")
    wait_for(condor_status_is(fake, "1.2", 3, "history"))
    r = fake.run("condor_rm", "1.0")
    assert (r.returncode, r.stderr) == (1, "Job 1.0 not found\n")
    r = fake.run("condor_rm", "1")
    assert (r.returncode, r.stderr) == (1, "\nCouldn't find/remove all jobs in cluster 1\n")
    hist = json.loads(fake.run("condor_history", "-json", "-constraint", "JobStatus == 3").stdout)
    assert len(hist) == 4 and all("RemoveReason" in a for a in hist)


def test_condor_nothing_printed_when_no_match(fake):
    r = fake.run("condor_q", "-json", "99")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = fake.run("condor_q", "-json", "-constraint", 'JobBatchName == "none"', "-attributes", "ClusterId")
    assert r.stdout == ""
    r = fake.run("condor_history", "-json", "-match", "1", "99")
    assert (r.returncode, r.stdout) == (0, "[\n]\n")


def test_condor_submit_errors(fake):
    (fake.root / "bad.sub").write_text("executable = does-not-exist\nqueue\n")
    r = fake.run("condor_submit", "bad.sub")
    # HTCondor 25.14.1 (tests/fixtures/htcondor/25.14.1/condor_submit_relative_executable.json)
    assert r.returncode == 1 and "ERROR: Can't access executable file does-not-exist" in r.stderr
    assert r.stdout == "Submitting job(s)"
    (fake.root / "ok.sub").write_text("executable = /bin/true\nqueue\n")
    fake.fault("error", "condor_submit", "--count", "1")
    r = fake.run("condor_submit", "ok.sub")
    assert r.returncode == 1 and "ERROR" in r.stderr
    assert fake.run("condor_submit", "ok.sub").stdout.endswith("submitted to cluster 1.\n")


def test_condor_query_faults(fake):
    fake.fault("error", "condor_q,condor_history", "--count", "2")
    r = fake.run("condor_q", "-json")
    assert r.returncode == 1 and "SECMAN:2007:Failed to end classad message." in r.stderr
    assert fake.run("condor_history", "-json").returncode == 1
    assert fake.run("condor_q", "-json").returncode == 0
    fake.fault("garbage", "condor_q", "--count", "1")
    with pytest.raises(ValueError):
        json.loads(fake.run("condor_q", "-json").stdout)
    fake.fault("hang", "condor_q", "1", "--count", "1")
    t0 = time.time()
    fake.run("condor_q", "-json")
    assert time.time() - t0 >= 1.0


def test_condor_hold_before_start_then_release(fake):
    fake.fault("hold", "condor", "1", "--reason", "held for test", "--code", "1")
    (fake.root / "t.sub").write_text("executable = /bin/true\nqueue\n")
    fake.run("condor_submit", "t.sub")
    time.sleep(0.3)
    w, ad = condor_ad(fake, "1")
    assert ad["JobStatus"] == 5 and ad["HoldReason"] == "held for test" and ad["HoldReasonCode"] == 1
    r = fake.run("condor_release", "1")
    assert (r.returncode, r.stdout) == (0, "All jobs in cluster 1 have been released\n")
    w, ad = wait_for(condor_status_is(fake, "1", 4, "history"))
    assert ad["ExitCode"] == 0 and "HoldReason" not in ad


def test_condor_hold_running_job_stops_it(fake):
    exe, gate = fake.gated_script("s", code=0)
    (fake.root / "s.sub").write_text("executable = %s\nqueue\n" % exe)
    fake.run("condor_submit", "s.sub")
    wait_for(condor_status_is(fake, "1", 2))
    fake.fault("hold", "condor", "1.0", "--reason", "Job failed transfer", "--code", "13")
    gate.touch()
    time.sleep(0.4)  # the process is stopped: it cannot notice the gate
    w, ad = condor_ad(fake, "1")
    assert ad["JobStatus"] == 5 and ad["HoldReasonCode"] == 13
    assert fake.run("condor_release", "1.0").stdout == "Job 1.0 released\n"
    wait_for(condor_status_is(fake, "1", 4, "history"))


def test_condor_memlimit_hold_then_rm(fake):
    exe, gate = fake.gated_script("x")
    (fake.root / "x.sub").write_text("executable = %s\nrequest_memory = 100\nqueue\n" % exe)
    fake.run("condor_submit", "x.sub")
    wait_for(condor_status_is(fake, "1", 2))
    fake.fault("memlimit", "condor", "1")
    w, ad = wait_for(condor_status_is(fake, "1", 5))
    assert ad["HoldReasonCode"] == 34 and "cgroup memory limit of 100 megabytes" in ad["HoldReason"]
    assert fake.run("condor_rm", "1").returncode == 0
    w, ad = wait_for(condor_status_is(fake, "1", 3, "history"))
    assert "ExitCode" not in ad


def test_condor_nodefail_requeues_and_reruns(fake):
    exe, gate = fake.gated_script("n", code=0)
    (fake.root / "n.sub").write_text("executable = %s\nqueue\n" % exe)
    fake.run("condor_submit", "n.sub")
    wait_for(condor_status_is(fake, "1", 2))
    fake.fault("nodefail", "condor", "1")
    wait_for(lambda: (fake.root / "n.ran").read_text().count("started") == 2)  # rerun from scratch
    gate.touch()
    w, ad = wait_for(condor_status_is(fake, "1", 4, "history"))
    assert ad["NumJobStarts"] == 2 and ad["ExitCode"] == 0


def test_condor_vanish(fake):
    (fake.root / "v.sub").write_text("executable = /bin/true\nqueue\n")
    fake.run("condor_submit", "v.sub")
    fake.fault("vanish", "condor", "1")
    time.sleep(0.3)
    assert condor_ad(fake, "1") == (None, None)
    # the queue is empty now: what the real condor_rm says then (tests/fixtures/htcondor/*/condor_rm_empty_queue.json)
    r = fake.run("condor_rm", "1.0")
    assert (r.returncode, r.stderr) == (0, "condor_rm:0:There are no jobs in the queue\n")


def test_condor_queue_linger(fake):
    (fake.root / "l.sub").write_text("executable = /bin/true\nqueue\n")
    fake.run("condor_submit", "l.sub", env={})
    w, ad = wait_for(condor_status_is(fake, "1", 4))
    r = fake.run("condor_q", "-json", "1", env={"CB_FAKE_QUEUE_LINGER": "60"})
    assert json.loads(r.stdout)[0]["JobStatus"] == 4


# ------------------------------------------------------------------ fixtures


@pytest.mark.parametrize(
    "path",
    sorted(list(FIXTURES.glob("lsf/*.json")) + list(FIXTURES.glob("htcondor/*.json"))),
    ids=lambda p: "%s/%s" % (p.parent.name, p.stem),
)
def test_fixture_files_wellformed(path):
    d = json.loads(path.read_text())
    assert set(d) == {"argv", "exit_code", "stdout", "stderr", "source"}
    assert isinstance(d["argv"], list) and isinstance(d["exit_code"], int) and d["source"]


def test_fake_outputs_match_lsf_fixtures(fake):
    def same(name, r):
        fx = load_fixture("lsf", name)
        assert (r.returncode, norm(r.stdout), norm(r.stderr)) == (
            fx["exit_code"],
            norm(fx["stdout"]),
            norm(fx["stderr"]),
        ), name

    same("bsub_submitted_queue", fake.run("bsub", "-q", "pub.1h", "true"))
    same("bsub_submitted_default_queue", fake.run("bsub", "true", env={"CB_FAKE_LSF_DEFAULT_QUEUE": "s"}))
    same("bsub_greeting_then_submitted", fake.run("bsub", "true", env={"CB_FAKE_LSF_GREETING": "2"}))
    wait_for(lsf_stat_is(fake, "1", "DONE"))
    same(
        "bjobs_noheader_delimiter",
        fake.run("bjobs", "-noheader", "-a", "-o", "jobid stat exit_code delimiter='^'", "1"),
    )
    same(
        "bjobs_delimiter_partial_unknown",
        fake.run("bjobs", "-noheader", "-a", "-o", "jobid stat delimiter='^'", "1", "9"),
    )
    same("bjobs_unknown_id_exit0", fake.run("bjobs", "-noheader", "-o", "jobid stat delimiter='^'", "9"))
    same("bjobs_unknown_id_consistent", fake.run("bjobs", "9", env={"LSB_BJOBS_CONSISTENT_EXIT_CODE": "Y"}))
    r = fake.run("bjobs", "-json", "-a", "-o", "jobid stat exit_code", "1")
    fx = json.loads(load_fixture("lsf", "bjobs_json_done")["stdout"])
    got = json.loads(r.stdout)
    got["RECORDS"][0]["JOBID"] = fx["RECORDS"][0]["JOBID"]
    assert got == fx
    same("bkill_already_finished", fake.run("bkill", "1"))
    same("bkill_no_matching_job", fake.run("bkill", "99"))
    s, g = fake.gated_script("f")
    fake.run("bsub", str(s))
    wait_for(lsf_stat_is(fake, "4", "RUN"))
    same("bkill_terminated", fake.run("bkill", "4"))
    wait_for(lsf_stat_is(fake, "4", "EXIT"))
    fake.fault("error", "bsub", "--count", "1")
    same("bsub_non_lsf_host", fake.run("bsub", "true"))
    fake.run("bkill", "-s", "KILL", "4")
    h = fake.run("bhist", "-l", "4").stdout
    assert re.search(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d: Submitted from host <", h, re.M)


def test_fake_outputs_match_htcondor_fixtures(fake, monkeypatch):
    monkeypatch.setenv("CB_FAKE_CONDOR_VERSION", "legacy")  # these fixtures hold older versions' texts

    def same(name, r):
        fx = load_fixture("htcondor", name)
        assert (r.returncode, norm(r.stdout), norm(r.stderr)) == (
            fx["exit_code"],
            norm(fx["stdout"]),
            norm(fx["stderr"]),
        ), name

    (fake.root / "one.sub").write_text("executable = /bin/true\nqueue\n")
    (fake.root / "three.sub").write_text("executable = /bin/sleep\narguments = 5\nqueue 3\n")
    same("condor_submit_one", fake.run("condor_submit", "one.sub"))
    same("condor_submit_three", fake.run("condor_submit", "three.sub"))
    same("condor_submit_terse", fake.run("condor_submit", "-terse", "three.sub"))
    same("condor_q_json_no_match", fake.run("condor_q", "-json", "42"))
    same("condor_history_json_no_match", fake.run("condor_history", "-json", "-match", "1", "42"))
    r = fake.run("condor_q", "-json", "-attributes", "ClusterId,ProcId,JobStatus", "2.0", "2.1")
    fx = load_fixture("htcondor", "condor_q_json_two")["stdout"]
    assert norm(r.stdout) == norm(fx)
    same("condor_q_af", fake.run("condor_q", "2.2", "-af", "ClusterId", "ProcId", "JobStatus", "ExitCode"))
    same("condor_rm_proc", fake.run("condor_rm", "3.0"))
    same("condor_rm_cluster", fake.run("condor_rm", "2"))
    wait_for(condor_status_is(fake, "2.0", 3, "history"))
    same("condor_rm_proc_not_found", fake.run("condor_rm", "2.0"))
    same("condor_rm_cluster_not_found", fake.run("condor_rm", "2"))
    fake.fault("error", "condor_q", "--count", "1")
    r = fake.run("condor_q")
    fx = load_fixture("htcondor", "condor_q_secman_2007")
    assert r.returncode == fx["exit_code"]
    assert re.fullmatch(
        r"-- Failed to fetch ads from: <[^>]+> : \S+\nSECMAN:2007:Failed to end classad message\.\n", r.stderr
    )
    assert re.fullmatch(
        r"-- Failed to fetch ads from: <[^>]+> : \S+\nSECMAN:2007:Failed to end classad message\.\n", fx["stderr"]
    )
    exe, gate = fake.gated_script("mm")
    (fake.root / "mm.sub").write_text("executable = %s\nrequest_memory = 10624\nqueue\n" % exe)
    fake.run("condor_submit", "mm.sub")
    wait_for(condor_status_is(fake, "4", 2))
    fake.fault("memlimit", "condor", "4")
    wait_for(condor_status_is(fake, "4", 5))
    r = fake.run("condor_q", "4.0", "-af", "HoldReasonCode", "HoldReason")
    fx = load_fixture("htcondor", "condor_q_hold_reason_cgroup_memory")["stdout"]
    pat = r"34 Error from slot\S+: Job has gone over cgroup memory limit of 10624 megabytes\. (Peak|Last measured) usage: \d+ megabytes\.  Consider resubmitting with a higher request_memory\.\n"  # noqa: E501
    assert re.fullmatch(pat, r.stdout) and re.fullmatch(pat, fx)


def test_faults_json_written_directly_and_module_cli(fake):
    fake.state.mkdir(exist_ok=True)
    (fake.state / "faults.json").write_text(
        json.dumps([{"kind": "error", "tools": ["condor_q"], "count": 1, "message": "boom", "exit_code": 3}])
    )
    r = fake.run("condor_q", "-json")
    assert (r.returncode, r.stderr) == (3, "boom\n")
    assert fake.run("condor_q", "-json").returncode == 0
    r = subprocess.run(
        [sys.executable, "-m", "fakesched", "fault", "error", "bhist", "--count", "1"],
        cwd=HERE,
        env=dict(os.environ),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert fake.run("bhist").returncode == 255


def test_condor_missing_transfer_input_holds_and_environment_ad(fake):
    (fake.root / "t.sub").write_text(
        "executable = /bin/true\nshould_transfer_files = YES\n"
        "transfer_input_files = missing.dat\nenvironment = \"A=1 B='x y'\"\nqueue\n"
    )
    fake.run("condor_submit", "t.sub")
    ad = json.loads(fake.run("condor_q", "-json", "1").stdout)[0]
    assert ad["JobStatus"] == 5 and ad["HoldReasonCode"] == 13 and "missing.dat" in ad["HoldReason"]
    assert ad["Environment"] == "A=1 B='x y'"


def test_condor_file_transfer_runs_in_scratch_and_brings_outputs_back(fake):
    """should_transfer_files = YES: scratch folder with inputs; listed outputs come back (remapped), then done."""
    (fake.root / "in").mkdir()
    (fake.root / "in" / "a.txt").write_text("A")
    (fake.root / "b.txt").write_text("B")
    (fake.root / "job.sh").write_text(
        "#!/bin/bash\n"
        'test "$PWD" = "$_CONDOR_SCRATCH_DIR" || exit 3\n'
        "test -f in/a.txt && test -f b.txt && test ! -e t.sub || exit 4\n"
        "cat in/a.txt b.txt > out.txt; echo done > marker; echo left > not_listed\n"
    )
    (fake.root / "job.sh").chmod(0o755)
    (fake.root / "t.sub").write_text(
        "executable = job.sh\nshould_transfer_files = YES\nwhen_to_transfer_output = ON_EXIT\n"
        f"transfer_input_files = in,{fake.root}/b.txt\ntransfer_output_files = out.txt,marker\n"
        f'transfer_output_remaps = "marker = {fake.root}/marks/m.1"\nqueue\n'
    )
    (fake.root / "marks").mkdir()
    fake.run("condor_submit", "t.sub")
    _, ad = wait_for(condor_status_is(fake, "1", 4))
    assert ad["ExitCode"] == 0
    assert (fake.root / "out.txt").read_text() == "AB"
    assert (fake.root / "marks" / "m.1").read_text() == "done\n"
    assert not (fake.root / "not_listed").exists() and not (fake.root / "marker").exists()
    assert not any((fake.state / "execute").iterdir())  # the scratch folder is gone


def test_condor_missing_output_holds_with_code_12(fake):
    (fake.root / "t.sub").write_text(
        "executable = /bin/true\nshould_transfer_files = YES\ntransfer_output_files = never.txt\nqueue\n"
    )
    fake.run("condor_submit", "t.sub")
    _, ad = wait_for(condor_status_is(fake, "1", 5))
    assert ad["HoldReasonCode"] == 12 and "never.txt" in ad["HoldReason"]
