"""LSF: bsub argv, parsers fed every captured output in tests/fixtures/lsf, state-map totality."""

from __future__ import annotations

import doctest
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from containerbatch.errors import StatusQueryError, SubmitError
from containerbatch.schedulers import lsf
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.lsf import LSFScheduler
from containerbatch.spec import JobSpec, Resources
from containerbatch.states import JobState, JobStatus

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "lsf").glob("*.json"))
S = JobState


def load(path: Path) -> CommandResult:
    data = json.loads(path.read_text())
    return CommandResult(tuple(data["argv"]), data["exit_code"], data["stdout"], data["stderr"])


def make_spec(tmp_path: Path, resources: Resources | None = None, **settings: object) -> JobSpec:
    job_dir = tmp_path / "logs" / "Fit" / "Fit_a" / "attempt-1"
    return JobSpec(
        run_id="20240101-000000-abcdef",
        task_id="Fit(sample=a b)",
        task_family="Fit",
        task_module="wf",
        module_file=str(tmp_path / "wf.py"),
        params={"sample": "a b"},
        attempt=1,
        batch_system="lsf",
        runtime="host",
        image=None,
        working_dir=str(tmp_path),
        result_dir=str(tmp_path / "results"),
        log_dir=str(tmp_path / "logs"),
        state_dir=str(tmp_path / ".containerbatch"),
        job_dir=str(job_dir),
        marker_path=str(tmp_path / "m"),
        job_name="cb-abcdef-Fit",
        executable=("python3",),
        resources=resources or Resources(),
        settings={"lsf_memory_unit": "MB", "lsf_extra_args": [], **settings},
    )


# What each fixture must parse to: (parser, job ids asked, expected {id: (state, native, exit code, reason)}),
# or ("submit", job id | SubmitError), ("kill", raises?).  Every fixture file needs an entry here.
EXPECTED: dict[str, tuple] = {
    "bhist_l_memlimit.json": (
        "history",
        ["7"],
        {"7": (S.FAILED, "EXIT TERM_MEMLIMIT", 1, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit")},
    ),
    "bhist_summary.json": ("history", ["1962"], {}),
    "bjobs_default_table.json": ("status", ["111"], {}),  # not our -o format: nothing is made up from it
    "bjobs_delimiter_partial_unknown.json": ("status", ["1", "2"], {"1": (S.COMPLETED, "DONE", 0, "")}),
    "bjobs_json_done.json": ("status", ["22005"], {"22005": (S.COMPLETED, "DONE", 0, "")}),
    "bjobs_json_done_finish_time.json": ("status", ["22005"], {"22005": (S.COMPLETED, "DONE", 0, "")}),
    # no JOBID column: the one record answers the one id asked
    "bjobs_json_exit_term_owner.json": (
        "status",
        ["12345678"],
        {"12345678": (S.CANCELLED, "EXIT TERM_OWNER", None, "TERM_OWNER: job killed by owner")},
    ),
    "bjobs_json_running_record.json": ("status", ["806290"], {"806290": (S.RUNNING, "RUN", None, "")}),
    "bjobs_no_unfinished.json": ("status", ["5"], {}),
    "bjobs_no_unfinished_consistent.json": ("status", ["5"], {}),
    "bjobs_noheader_delimiter.json": ("status", ["1"], {"1": (S.COMPLETED, "DONE", 0, "")}),
    "bjobs_unknown_id_consistent.json": ("status", ["123"], {}),
    "bjobs_unknown_id_exit0.json": ("status", ["1"], {}),
    "bkill_already_finished.json": ("kill", False),
    "bkill_no_matching_job.json": ("kill", False),
    "bkill_signaled.json": ("kill", False),
    "bkill_terminated.json": ("kill", False),
    "bsub_greeting_then_submitted.json": ("submit", "12345678"),
    "bsub_non_lsf_host.json": ("submit", SubmitError),
    "bsub_submitted_default_queue.json": ("submit", "72065926"),
    "bsub_submitted_queue.json": ("submit", "473713"),
    # the job report LSF appends to the -o file has the same wording as bhist -l
    "job_report_memlimit.json": (
        "history",
        ["9"],
        {"9": (S.FAILED, "EXIT TERM_MEMLIMIT", 137, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit")},
    ),
    "job_report_runlimit.json": (
        "history",
        ["9"],
        {"9": (S.TIMEOUT, "EXIT TERM_RUNLIMIT", 140, "TERM_RUNLIMIT: job killed after reaching LSF run time limit")},
    ),
    "job_report_term_owner.json": (
        "history",
        ["9"],
        {"9": (S.CANCELLED, "EXIT TERM_OWNER", 143, "TERM_OWNER: job killed by owner")},
    ),
}


def test_fixtures_present_and_all_expected():
    assert FIXTURES, "tests/fixtures/lsf holds no captured outputs"
    assert {p.name for p in FIXTURES} == set(EXPECTED), "every LSF fixture needs an expectation (and vice versa)"


class FakeRun(LSFScheduler):
    """An LSFScheduler whose commands answer from a fixture."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__({})
        self.result = result
        self.calls: list[list[str]] = []

    def _run(self, argv, stdin=None):
        self.calls.append(list(argv))
        return self.result


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture(path: Path):
    result = load(path)
    kind, *rest = EXPECTED[path.name]
    sched = LSFScheduler({})
    if kind == "submit":
        if rest[0] is SubmitError:
            with pytest.raises(SubmitError) as info:
                sched.parse_submit(result)
            assert info.value.transient  # "Request from non-LSF host rejected"
        else:
            assert sched.parse_submit(result) == rest[0]
        return
    if kind == "kill":
        FakeRun(result).kill(["11"])  # raises on a real failure
        return
    ids, expected = rest
    if kind == "status":
        # a -noheader capture is read as the fallback format, a -json one as JSON
        sched.use_json = "-json" in result.argv
        got = sched.parse_status(result, ids)
    else:
        got = sched.parse_history(result, ids)
    assert {k: (v.state, v.native, v.exit_code, v.reason) for k, v in got.items()} == expected


def test_garbage_and_errors_are_transient_status_errors():
    sched = LSFScheduler({})
    garbage = CommandResult(("bjobs", "-json"), 0, '<html>502 Bad Gateway</html>\n{"COMMAND":"bjo\n', "")
    with pytest.raises(StatusQueryError) as info:
        sched.parse_status(garbage, ["1"])
    assert info.value.transient
    rejected = CommandResult(("bjobs", "-json"), 255, "", "Request from non-LSF host rejected\n")
    with pytest.raises(StatusQueryError):
        sched.parse_status(rejected, ["1"])
    assert sched.use_json  # an error that is not about -json does not switch formats
    with pytest.raises(StatusQueryError):
        sched.parse_history(CommandResult(("bhist",), 255, "", "Request from non-LSF host rejected\n"), ["1"])
    with pytest.raises(Exception, match="bkill failed"):
        FakeRun(CommandResult(("bkill", "1"), 255, "", "Request from non-LSF host rejected\n")).kill(["1"])


def test_json_records_with_errors_are_absent():
    out = (
        '{"COMMAND":"bjobs","JOBS":2,"RECORDS":[{"JOBID":"12","STAT":"EXIT","EXIT_CODE":"3",'
        '"EXIT_REASON":""},{"JOBID":"13","ERROR":"Job <13> is not found"}]}'
    )
    got = LSFScheduler({}).parse_status(CommandResult(("bjobs", "-json"), 0, out, ""), ["12", "13"])
    assert got == {"12": JobStatus(S.FAILED, "EXIT", 3, "")}


def test_old_lsf_without_json_falls_back_and_remembers():
    sched = LSFScheduler({})
    assert sched.status_argv(["1", "2"]) == ["bjobs", "-json", "-a", "-o", "jobid stat exit_code exit_reason", "1", "2"]
    old = CommandResult(tuple(sched.status_argv(["1"])), 255, "", "-json: Illegal option.\nUsage: bjobs [-h] ...\n")
    with pytest.raises(StatusQueryError) as info:
        sched.parse_status(old, ["1"])
    assert info.value.transient  # the poller asks again at once, the new way
    argv = sched.status_argv(["1", "2"])
    assert argv == ["bjobs", "-noheader", "-a", "-o", "jobid stat exit_code exit_reason delimiter='^'", "1", "2"]
    out = "1^EXIT^140^TERM_RUNLIMIT: job killed after reaching LSF run time limit\n2^RUN^-^-\n"
    got = sched.parse_status(CommandResult(tuple(argv), 0, out, ""), ["1", "2"])
    assert got["1"] == JobStatus(
        S.TIMEOUT, "EXIT TERM_RUNLIMIT", 140, "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
    )
    assert got["2"] == JobStatus(S.RUNNING, "RUN", None, "")


def test_query_is_one_bjobs_and_one_bhist(tmp_path):
    """Ids gone from bjobs are asked of bhist, all in one call each."""
    answers = {
        "bjobs": CommandResult(
            (),
            0,
            '{"RECORDS":[{"JOBID":"1","STAT":"RUN","EXIT_CODE":"","EXIT_REASON":""},'
            '{"JOBID":"2","ERROR":"Job <2> is not found"},'
            '{"JOBID":"3","ERROR":"Job <3> is not found"}]}',
            "",
        ),
        "bhist": CommandResult(
            (),
            0,
            "Job <2>, User <u>;\n Mon: Done successfully. The CPU time used is 1s;\n"
            "------------------------------------------------------------------------------\n"
            "Job <3>, User <u>;\n Mon: Exited with exit code 2. The CPU time;\n",
            "",
        ),
    }
    calls = []

    class Sched(LSFScheduler):
        def _run(self, argv, stdin=None):
            calls.append(list(argv))
            return replace(answers[argv[0]], argv=tuple(argv))

    got = Sched({}).query(["1", "2", "3"])
    assert [c[0] for c in calls] == ["bjobs", "bhist"]
    assert calls[1] == ["bhist", "-l", "-n", "1", "2", "3"]
    assert {k: v.state for k, v in got.items()} == {"1": S.RUNNING, "2": S.COMPLETED, "3": S.FAILED}
    assert got["3"].exit_code == 2


def test_bhist_wrapped_long_format_multiple_jobs():
    text = (
        "\nJob <41>, Job Name <cb-x-Fit>, User <u>, Project <default>, Command </tmp/a b/j\n"
        "                     ob.sh>\n"
        "Mon Jan  1 00:00:01: Exited with exit code 137. The CPU time used is 0.0 secon\n"
        "                     ds;\n"
        "Mon Jan  1 00:00:01: Completed <exit>; TERM_MEMLIMIT: job killed after reachi\n"
        "                     ng LSF memory usage limit.\n"
        "------------------------------------------------------------------------------\n\n"
        "Job <42>, Job Name <cb-x-Fit>, User <u>, Project <default>, Command <job.sh>\n"
        "Mon Jan  1 00:00:02: Done successfully. The CPU time used is 0.0 seconds;\n"
    )
    got = LSFScheduler({}).parse_history(CommandResult(("bhist",), 0, text, ""), ["41", "42", "43"])
    assert got == {
        "41": JobStatus(
            S.FAILED, "EXIT TERM_MEMLIMIT", 137, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit"
        ),
        "42": JobStatus(S.COMPLETED, "DONE", 0, ""),
    }


def test_bsub_argv_golden(tmp_path):
    res = Resources(memory_mb=2048, cpus=4, walltime_s=5400, gpus=1, queue="long q", account="proj")
    spec = make_spec(tmp_path, res, lsf_extra_args=["-app", "a b", "-R", "select[type==any]"])
    job_dir = spec.job_dir
    assert LSFScheduler({}).submit_argv(spec) == [
        "bsub",
        "-J",
        "cb-abcdef-Fit",
        "-o",
        f"{job_dir}/stdout",
        "-e",
        f"{job_dir}/stderr",
        "-q",
        "long q",
        "-P",
        "proj",
        "-W",
        "1:30",
        "-n",
        "4",
        "-M",
        "2048",
        "-R",
        "rusage[mem=2048] span[hosts=1]",
        "-gpu",
        "num=1",
        "-app",
        "a b",
        "-R",
        "select[type==any]",
        f"{job_dir}/job.sh",
    ]


@pytest.mark.parametrize(("unit", "amount"), [("KB", "262144"), ("MB", "256"), ("GB", "1")])
def test_memory_unit(tmp_path, unit, amount):
    argv = LSFScheduler({}).submit_argv(make_spec(tmp_path, Resources(memory_mb=256), lsf_memory_unit=unit))
    assert argv[argv.index("-M") + 1] == amount
    assert argv[argv.index("-R") + 1] == f"rusage[mem={amount}]"


def test_minimal_argv_and_array_brackets(tmp_path):
    spec = make_spec(tmp_path)
    argv = LSFScheduler({}).submit_argv(replace(spec, job_name="name[1-10]"))
    assert argv == ["bsub", "-J", "name_1-10_", "-o", spec.stdout_path, "-e", spec.stderr_path, spec.script_path]


@pytest.mark.parametrize("native", sorted(LSFScheduler.STATE_MAP))
def test_every_native_state_maps(native):
    status = LSFScheduler({}).status_of(native, "", "")
    assert status.state == LSFScheduler.STATE_MAP[native]
    assert status.native == native


def test_state_map_is_total_and_unknown_is_not_failure(caplog):
    listed = {
        "PEND",
        "PROV",
        "PSUSP",
        "RUN",
        "USUSP",
        "SSUSP",
        "DONE",
        "EXIT",
        "UNKWN",
        "WAIT",
        "ZOMBI",
        "POST_DONE",
        "POST_ERR",
        "PDONE",
    }
    assert listed <= set(LSFScheduler.STATE_MAP)
    assert LSFScheduler.STATE_MAP["UNKWN"] == S.UNKNOWN and not S.UNKNOWN.is_final
    with caplog.at_level(logging.WARNING):
        assert LSFScheduler({}).status_of("NEWSTATE", "", "").state == S.UNKNOWN
    assert "NEWSTATE" in caplog.text and LSFScheduler.DOCS_URL in caplog.text


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("TERM_RUNLIMIT: job killed after reaching LSF run time limit", S.TIMEOUT),
        ("TERM_MEMLIMIT: job killed after reaching LSF memory usage limit", S.FAILED),
        ("TERM_OWNER: job killed by owner", S.CANCELLED),
        ("TERM_ADMIN: job killed by root or LSF administrator", S.CANCELLED),
        ("TERM_REMOVE_HUNG_JOB: hung job removed from the LSF system", S.FAILED),
        ("", S.FAILED),
    ],
)
def test_exit_reasons(reason, state):
    status = LSFScheduler({}).status_of("EXIT", "1", reason)
    assert status.state == state and status.reason == reason
    assert status.native == ("EXIT " + reason.split(":")[0]).strip()


def test_doctests():
    assert doctest.testmod(lsf).failed == 0
