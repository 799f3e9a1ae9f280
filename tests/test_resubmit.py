"""Failure reasons and the resubmission policy (unit level)."""

import pytest

from containerbatch.resubmit import INFRASTRUCTURE, Failure, Reason, ResubmitPolicy, classify
from containerbatch.schedulers.htcondor import HTCondorScheduler
from containerbatch.schedulers.lsf import LSFScheduler
from containerbatch.schedulers.slurm import SlurmScheduler
from containerbatch.spec import Resources
from containerbatch.states import JobState, JobStatus

SLURM, LSF = SlurmScheduler(), LSFScheduler()
CONDOR = {"scheduler": HTCondorScheduler()}


@pytest.mark.parametrize(
    "result,status,code,kwargs,reason",
    [
        ({"status": "failure", "exception": "ValueError()"}, JobStatus(JobState.COMPLETED), 1, {}, "task_error"),
        ({"status": "error", "exception": "ImportError()"}, JobStatus(JobState.COMPLETED), 2, {}, "task_error"),
        (None, JobStatus(JobState.FAILED, "OUT_OF_MEMORY", 0), None, {"scheduler": SLURM}, "out_of_memory"),
        (None, JobStatus(JobState.TIMEOUT, "TIMEOUT"), 143, {"cancelled": True}, "walltime"),
        (None, JobStatus(JobState.FAILED, "NODE_FAIL"), None, {"scheduler": SLURM}, "node_failure"),
        (None, JobStatus(JobState.FAILED, "PREEMPTED"), None, {"scheduler": SLURM}, "preempted"),
        (None, JobStatus(JobState.CANCELLED, "PREEMPTED"), None, {"scheduler": SLURM}, "preempted"),
        (None, JobStatus(JobState.CANCELLED, "CANCELLED", None, "by 1000"), 143, {}, "cancelled"),
        (
            None,
            JobStatus(JobState.FAILED, "EXIT", 137, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"),
            137,
            {"scheduler": LSF},
            "out_of_memory",
        ),
        (
            None,
            JobStatus(JobState.TIMEOUT, "EXIT", 140, "TERM_RUNLIMIT: job killed after reaching LSF run time limit"),
            140,
            {"scheduler": LSF},
            "walltime",
        ),
        (None, JobStatus(JobState.HELD, "34", None, "usage exceeded request_memory"), None, CONDOR, "out_of_memory"),
        (None, JobStatus(JobState.HELD, "5", None, "x (HoldReasonCode 46)"), None, CONDOR, "walltime"),
        (None, JobStatus(JobState.HELD, "35", None, "invalid docker image"), None, CONDOR, "image_error"),
        # one scheduler's words mean nothing to another: LSF's TERM_MEMLIMIT under Slurm is no OOM
        (None, JobStatus(JobState.FAILED, "EXIT", None, "TERM_MEMLIMIT"), None, {"scheduler": SLURM}, "node_failure"),
        (None, JobStatus(JobState.COMPLETED, "exited"), 137, {"oom_killed": True}, "out_of_memory"),
        (None, JobStatus(JobState.FAILED, "failed"), 137, {"memory_limited": True}, "out_of_memory"),
        (None, JobStatus(JobState.FAILED, "failed"), 125, {}, "image_error"),
        (None, JobStatus(JobState.FAILED, "failed"), 127, {}, "image_error"),
        (None, JobStatus(JobState.FAILED, "failed"), 255, {"runtime": "apptainer"}, "image_error"),
        (None, JobStatus(JobState.FAILED, "failed"), 255, {"runtime": "docker"}, "lost"),
        (None, JobStatus(JobState.LOST, "gone"), None, {}, "lost"),
        (None, JobStatus(JobState.FAILED, "failed"), 143, {"cancelled": True}, "cancelled"),
        (None, JobStatus(JobState.COMPLETED, "exited"), 0, {}, "lost"),  # ended without writing result.json
    ],
)
def test_classify(result, status, code, kwargs, reason):
    assert classify(result, status, code, **kwargs).reason.value == reason


def test_default_policy_retries_infrastructure_three_times_and_task_errors_never():
    policy = ResubmitPolicy()
    oom = Failure(Reason.OUT_OF_MEMORY, "", 137)
    assert policy.should_retry(oom, 1) and policy.should_retry(oom, 2) and not policy.should_retry(oom, 3)
    assert not policy.should_retry(Failure(Reason.TASK_ERROR, "", 1), 1)
    assert not policy.should_retry(Failure(Reason.CANCELLED, "", 143), 1)
    assert Reason.TASK_ERROR not in INFRASTRUCTURE


def test_backoff_grows_and_is_capped():
    from tenacity import wait_exponential

    policy = ResubmitPolicy(wait=wait_exponential(multiplier=5, max=30))
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 30, 30]


def _spec(resources):
    from containerbatch.spec import JobSpec

    return JobSpec(
        run_id="r",
        task_id="T_1",
        task_family="T",
        task_module="wf",
        module_file="/wf.py",
        params={},
        attempt=1,
        batch_system="local",
        runtime="host",
        image=None,
        working_dir="/w",
        result_dir="/w/r",
        log_dir="/w/l",
        state_dir="/w/s",
        job_dir="/w/l/T/T_1/attempt-1",
        marker_path="/w/s/m/T_1.1",
        job_name="cb-T",
        executable=("python3",),
        resources=resources,
    )


def test_builtin_hook_doubles_memory_and_walltime_with_caps():
    policy = ResubmitPolicy(memory_cap_mb=3000, walltime_cap_s=5000)
    spec = _spec(Resources(memory_mb=1000, walltime_s=3600, cpus=2))
    after_oom = policy.next_resources(spec, Failure(Reason.OUT_OF_MEMORY, "", 137))
    assert after_oom.memory_mb == 2000 and after_oom.walltime_s == 3600 and after_oom.cpus == 2
    spec2 = _spec(after_oom)
    assert policy.next_resources(spec2, Failure(Reason.OUT_OF_MEMORY, "", 137)).memory_mb == 3000
    assert policy.next_resources(spec, Failure(Reason.WALLTIME, "", 140)).walltime_s == 5000
    assert policy.next_resources(spec, Failure(Reason.NODE_FAILURE, "", None)) == spec.resources


def test_user_hook_changes_next_attempt():
    def to_big_queue(spec, failure):
        return {"queue": "bigmem"} if failure.reason == Reason.OUT_OF_MEMORY else None

    policy = ResubmitPolicy(hooks=(to_big_queue,))
    spec = _spec(Resources(memory_mb=100))
    nxt = policy.next_resources(spec, Failure(Reason.OUT_OF_MEMORY, "", 137))
    assert nxt.queue == "bigmem" and nxt.memory_mb == 200
