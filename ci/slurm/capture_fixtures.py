#!/usr/bin/env python3
"""Capture real Slurm command outputs as parser-test fixtures.

Run on a machine where ci/slurm/setup.sh has started the one-node cluster (or inside the container of
ci/slurm/run.sh, see tests/fixtures/slurm/24.11/README.md).
Writes one JSON file per case to tests/fixtures/slurm/ (CB_SLURM_FIXTURES_OUT: another folder) with the
keys argv, exit_code, stdout, stderr, note.  Arguments: the groups of cases (default all): basic takes
about two minutes because the TIMEOUT case has to wait out Slurm's one-minute minimum walltime; status
(containerbatch's own squeue call) and down (controller not reachable) take seconds.
"""
import json
import os
import subprocess
import sys
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "slurm")
OUT = os.environ.get("CB_SLURM_FIXTURES_OUT") or os.path.normpath(OUT)  # e.g. tests/fixtures/slurm/24.11
JOBDIR = "/tmp/containerbatch-ci/slurm-jobs"
UNKNOWN1, UNKNOWN2 = "9999991", "9999992"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, cwd=JOBDIR)
    return p


def capture(name, argv, note):
    p = run(argv)
    data = {"argv": argv, "exit_code": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "note": note}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"{name}: exit {p.returncode}, {len(p.stdout)} bytes stdout, stderr {p.stderr.strip()[:80]!r}")
    return p


def sbatch(*args):
    p = run(["sbatch", "--parsable", "-o", "/dev/null", *args])
    if p.returncode:
        sys.exit(f"sbatch {args} failed: {p.stderr}")
    return p.stdout.strip().split(";")[0]


def state(jobid):
    p = run(["scontrol", "show", "job", "-o", jobid])
    for tok in p.stdout.split():
        if tok.startswith("JobState="):
            return tok.split("=", 1)[1]
    return None


def wait_state(jobid, wanted, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(jobid)
        if s in wanted:
            return s
        time.sleep(0.5)
    sys.exit(f"job {jobid} not in {wanted} after {timeout}s (is {state(jobid)})")


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(JOBDIR, exist_ok=True)
    # Slowest first: Slurm's minimum walltime is one minute.
    timeout_job = sbatch("--time=1", "--wrap", "sleep 300")

    capture("sbatch_parsable_success", ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"],
            "Success: stdout is the job id (no cluster suffix on a single-cluster setup).")
    capture("sbatch_invalid_option", ["sbatch", "--parsable", "--no-such-option", "--wrap", "true"],
            "Unknown command-line option: rejected by sbatch itself, nothing submitted.")
    capture("sbatch_invalid_partition", ["sbatch", "--parsable", "-p", "nosuchpartition", "--wrap", "true"],
            "Partition does not exist: rejected by slurmctld.")

    # 8 CPUs configured, the timeout job holds 1: a 4-CPU job runs, a second
    # one has to wait for it.
    running = sbatch("-c", "4", "--wrap", "sleep 30")
    wait_state(running, {"RUNNING"}, 30)
    pending = sbatch("-c", "4", "--wrap", "sleep 30")
    time.sleep(1)
    capture("squeue_pending_running", ["squeue", "-h", "-o", "%i %T", "-j", f"{running},{pending}"],
            f"Job {running} RUNNING, job {pending} PENDING (waiting for CPUs).")
    capture("squeue_unknown_one", ["squeue", "-h", "-o", "%i %T", "-j", UNKNOWN1],
            "Exactly one job id, never existed (or purged after MinJobAge): exit 1 with an error.")
    capture("squeue_unknown_two", ["squeue", "-h", "-o", "%i %T", "-j", f"{UNKNOWN1},{UNKNOWN2}"],
            "Two job ids, neither exists: unlike the one-id case, squeue says nothing and exits 0.")
    capture("squeue_known_and_unknown", ["squeue", "-h", "-o", "%i %T", "-j", f"{running},{UNKNOWN1}"],
            f"Job {running} exists (RUNNING), {UNKNOWN1} does not: only the known job is listed, exit 0.")
    for j in (running, pending):
        run(["scancel", j])

    array = sbatch("--array=0-20%2", "--wrap", "sleep 5")
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = run(["squeue", "-h", "-o", "%i %T", "-j", array]).stdout
        if "RUNNING" in rows and "PENDING" in rows:
            break
        time.sleep(0.5)
    capture("squeue_array", ["squeue", "-h", "-o", "%i %T", "-j", array],
            f"Array job {array} --array=0-20%2 of 'sleep 5': running tasks are listed as "
            f"{array}_N, the not-yet-started remainder as one {array}_[x-y%2] PENDING row.")
    run(["scancel", array])

    completed = sbatch("--wrap", "true")
    failed = sbatch("--wrap", "exit 3")
    cancelled = sbatch("--wrap", "sleep 300")
    wait_state(completed, {"COMPLETED"}, 30)
    wait_state(failed, {"FAILED"}, 30)
    wait_state(cancelled, {"RUNNING"}, 30)
    run(["scancel", cancelled])
    wait_state(cancelled, {"CANCELLED"}, 30)

    capture("scontrol_show_job_completed", ["scontrol", "show", "job", completed],
            "Finished with exit 0: JobState=COMPLETED ExitCode=0:0.")
    capture("scontrol_show_job_failed", ["scontrol", "show", "job", failed],
            "Batch script ran 'exit 3': JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0.")
    capture("scontrol_show_job_cancelled", ["scontrol", "show", "job", cancelled],
            "scancel while RUNNING: JobState=CANCELLED; ExitCode=0:15 (signal 15).")
    capture("scontrol_show_job_unknown", ["scontrol", "show", "job", UNKNOWN1],
            "Job id that never existed (same answer once a job is purged after MinJobAge).")
    capture("scontrol_show_job_oneline_completed", ["scontrol", "show", "job", "-o", completed],
            "One-line form (-o): one job per line, fields separated by single spaces.")
    capture("scontrol_show_job_oneline_several", ["scontrol", "show", "job", "-o", f"{completed},{failed},{cancelled}"],
            "Several ids as one comma-separated argument: Slurm 22.05 scontrol does not accept a list "
            "and fails with 'Invalid job id specified'; query jobs one at a time (or use squeue).")
    capture("sacct_accounting_disabled", ["sacct", "-n", "-P", "-X", "-j", completed, "-o", "JobID,State,ExitCode"],
            "AccountingStorageType=accounting_storage/none: sacct cannot answer.")
    capture("scancel_unknown", ["scancel", UNKNOWN1],
            "scancel of a job id that does not exist: silent, exit 0 (the error is only shown with -v).")
    capture("scancel_unknown_verbose", ["scancel", "-v", UNKNOWN1],
            "Same with -v: the error is printed on stderr, but the exit code is still 0.")

    print(f"waiting for job {timeout_job} to hit its 1-minute limit ...", flush=True)
    wait_state(timeout_job, {"TIMEOUT"}, 240)
    capture("scontrol_show_job_timeout", ["scontrol", "show", "job", timeout_job],
            "--time=1 with 'sleep 300': killed at the walltime, JobState=TIMEOUT Reason=TimeLimit.")
    capture("squeue_finished_states", ["squeue", "-h", "-t", "all", "-o", "%i %T",
                                       "-j", f"{completed},{failed},{cancelled},{timeout_job}"],
            "squeue -t all still lists finished jobs (within MinJobAge=300 s) with their end states.")


def own_status_calls():
    """containerbatch's own status call (SlurmScheduler.status_argv) over every state, and one unknown id."""
    ids = [sbatch("--wrap", "true"), sbatch("--wrap", "exit 3"), sbatch("--wrap", "sleep 300")]
    wait_state(ids[0], {"COMPLETED"}, 30)
    wait_state(ids[1], {"FAILED"}, 30)
    wait_state(ids[2], {"RUNNING"}, 30)
    run(["scancel", ids[2]])
    wait_state(ids[2], {"CANCELLED"}, 30)
    ids += [sbatch("--wrap", "sleep 30"), sbatch("--wrap", "sleep 30"), sbatch("--hold", "--wrap", "true")]
    wait_state(ids[3], {"RUNNING"}, 30)
    wait_state(ids[4], {"RUNNING"}, 30)
    own = ["squeue", "-h", "-a", "-t", "all", "-o", "%i %T %r", "-j"]
    capture("squeue_all_states_reason", [*own, ",".join([*ids, UNKNOWN1])],
            f"containerbatch's own status call: {ids[0]} exit 0, {ids[1]} exit 3, {ids[2]} scancelled, "
            f"{ids[3]},{ids[4]} sleep 30, {ids[5]} --hold, {UNKNOWN1} never existed. Third column is the reason "
            "(None when there is none).")
    capture("squeue_one_unknown_all_states", [*own, UNKNOWN1],
            "containerbatch's own status call, one id that never existed: exit 1 even with -t all.")
    run(["scancel", *ids[3:]])


def controller_down():
    """The client pointed at a port nobody listens on (a copy of slurm.conf through SLURM_CONF)."""
    conf = os.path.join(JOBDIR, "slurm-dead-port.conf")
    with open(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")) as f:
        text = "".join(line for line in f if not line.startswith("SlurmctldPort="))
    with open(conf, "w") as f:
        f.write(text + "SlurmctldPort=1\n")
    os.environ["SLURM_CONF"] = conf
    try:
        capture("sbatch_controller_down", ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"],
                "slurmctld not reachable at submit (client pointed at a dead port via SLURM_CONF): transient.")
        capture("squeue_controller_down", ["squeue", "-h", "-a", "-t", "all", "-o", "%i %T %r", "-j", "1,2"],
                "slurmctld not reachable (client pointed at a port nobody listens on via SLURM_CONF): transient.")
    finally:
        del os.environ["SLURM_CONF"]
        os.unlink(conf)


GROUPS = {"basic": main, "status": own_status_calls, "down": controller_down}

if __name__ == "__main__":
    # groups of cases to capture (default: all): basic (about two minutes), status, down
    wanted = sys.argv[1:] or list(GROUPS)
    unknown = [g for g in wanted if g not in GROUPS]
    if unknown:
        sys.exit(f"unknown case group(s) {unknown}; choose from {list(GROUPS)}")
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(JOBDIR, exist_ok=True)
    for group in wanted:
        GROUPS[group]()
    print(f"done with {run(['sbatch', '--version']).stdout.strip()}")
