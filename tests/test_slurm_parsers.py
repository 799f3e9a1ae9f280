"""Slurm scheduler without a cluster: parsers fed captured real outputs, the state map, directives and argv."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from containerbatch import jobscript
from containerbatch.errors import ConfigError, SchedulerError, StatusQueryError, SubmitError
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.slurm import STATE_MAP, SlurmScheduler, directive_quote, format_walltime
from containerbatch.spec import JobSpec, Resources
from containerbatch.states import JobState

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"
FILES = sorted(FIXTURES.glob("*.json"))
S = JobState


def load(name_or_path: str | Path) -> CommandResult:
    path = name_or_path if isinstance(name_or_path, Path) else FIXTURES / f"{name_or_path}.json"
    data = json.loads(path.read_text())
    return CommandResult(tuple(data["argv"]), data["exit_code"], data["stdout"], data["stderr"])


def _ids(result: CommandResult) -> list[str]:
    return result.argv[result.argv.index("-j") + 1].split(",")


def parse(result: CommandResult) -> Any:
    """Feed a captured output to the parser of its command; errors come back as ('error', type, transient)."""
    sched = SlurmScheduler()
    try:
        tool = result.argv[0]
        if tool == "sbatch":
            return sched.parse_submit(result)
        if tool == "squeue":
            found = sched.parse_status(result, _ids(result))
        elif tool == "sacct":
            found = sched.parse_history(result, _ids(result))
        elif tool == "scontrol":
            status = sched.parse_scontrol(result)
            return None if status is None else (status.state, status.native, status.exit_code, status.reason)
        elif tool == "scancel":
            sched._run = lambda argv, stdin=None: result  # type: ignore[method-assign]
            return sched.kill(list(result.argv[1:]))
        else:
            raise AssertionError(f"no parser for {tool}")
    except SchedulerError as exc:
        return ("error", type(exc).__name__, exc.transient)
    return {job: (st.state, st.native, st.exit_code, st.reason) for job, st in found.items()}


EXPECTED: dict[str, Any] = {
    "sacct_accounting_disabled": ("error", "StatusQueryError", True),  # query() turns it into the fallback
    "sbatch_controller_down": ("error", "SubmitError", True),
    "sbatch_invalid_option": ("error", "SubmitError", False),
    "sbatch_invalid_partition": ("error", "SubmitError", False),
    "sbatch_parsable_success": "168",
    "scancel_unknown": None,
    "scancel_unknown_verbose": None,
    "scontrol_show_job_cancelled": (S.CANCELLED, "CANCELLED", 143, ""),
    "scontrol_show_job_completed": (S.COMPLETED, "COMPLETED", 0, ""),
    "scontrol_show_job_failed": (S.FAILED, "FAILED", 3, "NonZeroExitCode"),
    "scontrol_show_job_oneline_completed": (S.COMPLETED, "COMPLETED", 0, ""),
    "scontrol_show_job_oneline_several": None,  # a list is refused ("Invalid job id"): we never send one
    "scontrol_show_job_timeout": (S.TIMEOUT, "TIMEOUT", 143, "TimeLimit"),
    "scontrol_show_job_unknown": None,
    "squeue_all_states_reason": {
        "334": (S.COMPLETED, "COMPLETED", None, ""),
        "335": (S.FAILED, "FAILED", None, "NonZeroExitCode"),
        "336": (S.CANCELLED, "CANCELLED", None, ""),
        "337": (S.RUNNING, "RUNNING", None, ""),
        "338": (S.RUNNING, "RUNNING", None, ""),
        "339": (S.PENDING, "PENDING", None, "JobHeldUser"),
    },
    "squeue_array": {"171": (S.RUNNING, "RUNNING", None, "")},
    "squeue_controller_down": ("error", "StatusQueryError", True),
    "squeue_finished_states": {
        "176": (S.CANCELLED, "CANCELLED", None, ""),
        "174": (S.COMPLETED, "COMPLETED", None, ""),
        "175": (S.FAILED, "FAILED", None, ""),
        "167": (S.TIMEOUT, "TIMEOUT", None, ""),
    },
    "squeue_known_and_unknown": {"169": (S.RUNNING, "RUNNING", None, "")},
    "squeue_one_unknown_all_states": {},
    "squeue_pending_running": {"169": (S.RUNNING, "RUNNING", None, ""), "170": (S.PENDING, "PENDING", None, "")},
    "squeue_unknown_one": {},
    "squeue_unknown_two": {},
}


def test_fixtures_present():
    assert len(FILES) >= 15, f"captured Slurm outputs missing in {FIXTURES}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_captured_output(path: Path):
    assert path.stem in EXPECTED, f"{path.name} has no expected result here: add one to EXPECTED"
    assert parse(load(path)) == EXPECTED[path.stem]


# the same cases captured from other Slurm versions (tests/fixtures/slurm/<version>/, e.g. 24.11 from Debian
# trixie's slurm-wlm in ci/slurm's container): same results, other job ids
VERSIONED = sorted(FIXTURES.glob("*/*.json"))


def test_other_versions_captured():
    assert {p.parent.name for p in VERSIONED} >= {"24.11"}


@pytest.mark.parametrize("path", VERSIONED, ids=[f"{p.parent.name}/{p.stem}" for p in VERSIONED])
def test_every_captured_output_of_other_versions(path: Path):
    assert path.stem in EXPECTED, f"{path} has no expected result here: add one to EXPECTED"
    got, want = parse(load(path)), EXPECTED[path.stem]
    if isinstance(want, dict):  # per job: compare the states, whatever the ids
        assert isinstance(got, dict) and sorted(got.values(), key=repr) == sorted(want.values(), key=repr)
    elif path.stem == "sbatch_parsable_success":
        assert isinstance(got, str) and got.isdigit()
    else:
        assert got == want


# -- documented formats that this one-node cluster cannot produce (no accounting, one cluster) ----------------
def _result(argv: list[str], code: int, out: str, err: str = "") -> CommandResult:
    return CommandResult(tuple(argv), code, out, err)


def test_submit_with_cluster_suffix():
    assert SlurmScheduler().parse_submit(_result(["sbatch"], 0, "123;cluster\n")) == "123"


def test_submit_socket_timeout_is_transient():
    res = _result(
        ["sbatch"], 1, "", "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n"
    )
    with pytest.raises(SubmitError) as info:
        SlurmScheduler().parse_submit(res)
    assert info.value.transient


def test_sacct_rows():
    out = (
        "10|COMPLETED|0:0\n11|CANCELLED by 1000|0:15\n12|OUT_OF_MEMORY|0:125\n13_[2-5]|PENDING|0:0\n"
        "13_1|RUNNING|0:0\n14|NODE_FAIL|1:0\n15|PREEMPTED|0:9\n"
    )
    ids = ["10", "11", "12", "13", "14", "15"]
    got = SlurmScheduler().parse_history(_result(["sacct"], 0, out), ids)
    assert {k: (v.state, v.native, v.exit_code, v.reason) for k, v in got.items()} == {
        "10": (S.COMPLETED, "COMPLETED", 0, ""),
        "11": (S.CANCELLED, "CANCELLED", 143, "by 1000"),
        "12": (S.FAILED, "OUT_OF_MEMORY", 253, ""),
        "13": (S.RUNNING, "RUNNING", 0, ""),
        "14": (S.FAILED, "NODE_FAIL", 1, ""),
        "15": (S.CANCELLED, "PREEMPTED", 137, ""),
    }


class Replay(SlurmScheduler):
    """Answers commands from a table instead of running them; records the calls."""

    def __init__(self, answers: dict[str, CommandResult]) -> None:
        super().__init__()
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def _run(self, argv, stdin=None):  # type: ignore[override]
        self.calls.append(tuple(argv))
        return self.answers[argv[0]]


def test_query_one_squeue_then_sacct_only_for_gone():
    sched = Replay({"squeue": _result([], 0, "1 RUNNING None\n"), "sacct": _result([], 0, "2|FAILED|3:0\n")})
    got = sched.query(["1", "2"])
    assert [c[0] for c in sched.calls] == ["squeue", "sacct"]
    assert sched.calls[0][-1] == "1,2" and sched.calls[1][sched.calls[1].index("-j") + 1] == "2"
    assert (got["1"].state, got["2"].state, got["2"].exit_code) == (S.RUNNING, S.FAILED, 3)


def test_query_remembers_disabled_accounting_and_asks_scontrol_once_per_job():
    sched = Replay(
        {
            "squeue": load("squeue_unknown_two"),
            "sacct": load("sacct_accounting_disabled"),
            "scontrol": load("scontrol_show_job_unknown"),
        }
    )
    assert sched.query(["7", "8"]) == {}
    assert sched.query(["7", "8"]) == {}
    tools = [c[0] for c in sched.calls]
    assert tools == ["squeue", "sacct", "scontrol", "scontrol", "squeue"]
    assert ("scontrol", "show", "job", "-o", "7") in sched.calls and not sched.accounting


def test_query_failure_is_transient():
    sched = Replay({"squeue": load("squeue_controller_down")})
    with pytest.raises(StatusQueryError) as info:
        sched.query(["1"])
    assert info.value.transient


def test_kill_is_one_call():
    sched = Replay({"scancel": load("scancel_unknown")})
    sched.kill(["1", "2", "3"])
    assert sched.calls == [("scancel", "1", "2", "3")]


# -- the state map --------------------------------------------------------------------------------------------
DOCUMENTED = [
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "CONFIGURING",
    "COMPLETING",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PENDING",
    "PREEMPTED",
    "RUNNING",
    "RESV_DEL_HOLD",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "REQUEUED",
    "RESIZING",
    "REVOKED",
    "SIGNALING",
    "SPECIAL_EXIT",
    "STAGE_OUT",
    "STOPPED",
    "SUSPENDED",
    "TIMEOUT",
]  # https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES


def test_map_covers_the_documented_states():
    assert sorted(STATE_MAP) == sorted(DOCUMENTED)


@pytest.mark.parametrize("native", DOCUMENTED)
def test_every_state_maps(native: str):
    status = SlurmScheduler().map_state(native)
    assert status.state is not JobState.UNKNOWN and status.native == native


@pytest.mark.parametrize("native", ["OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "TIMEOUT"])
def test_failure_words_survive_for_the_classifier(native: str):
    got = SlurmScheduler().parse_status(_result(["squeue"], 0, f"5 {native} None\n"), ["5"])
    assert got["5"].native == native and got["5"].state.is_final


def test_unknown_state_is_unknown_with_warning(caplog):
    got = SlurmScheduler().parse_status(_result(["squeue"], 0, "5 LAUNCH_FAILED None\n"), ["5"])
    assert got["5"].state is JobState.UNKNOWN and "LAUNCH_FAILED" in caplog.text


# -- directives and argv --------------------------------------------------------------------------------------
def spec(tmp: str = "/w", **changes: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        run_id="20261126-101010-abcdef",
        task_id="Fit_1_abc",
        task_family="Fit",
        task_module="wf",
        module_file=f"{tmp}/wf.py",
        params={"sample": "1"},
        attempt=1,
        batch_system="slurm",
        runtime="docker",
        image="cb-demo:latest",
        working_dir=tmp,
        result_dir=f"{tmp}/results",
        log_dir=f"{tmp}/logs",
        state_dir=f"{tmp}/.containerbatch",
        job_dir=f"{tmp}/logs/Fit/Fit_1_abc/attempt-1",
        marker_path=f"{tmp}/.containerbatch/runs/r/done/Fit_1_abc.1",
        job_name="cb-abcdef-Fit",
        executable=("python3",),
        settings={"slurm_extra_args": []},
    )
    base.update(changes)
    return JobSpec(**base)


def sbatch_words(line: str) -> list[str]:
    """The words sbatch reads from one #SBATCH line (its own parser, src/sbatch/opt.c _get_argument):
    whitespace splits, '…' and "…" group, backslash escapes the next character, unquoted # ends the line."""
    assert line.startswith("#SBATCH ")
    words, word, quote, escape, started = [], "", "", False, False
    for ch in line[len("#SBATCH ") :]:
        if escape:
            word, escape, started = word + ch, False, True
        elif ch == "\\":
            escape = True
        elif quote:
            if ch == quote:
                quote = ""
            else:
                word += ch
        elif ch in "'\"":
            quote, started = ch, True
        elif ch == "#":
            break
        elif ch.isspace():
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + ch, True
    if started:
        words.append(word)
    return words


def test_golden_directives_with_resources():
    res = Resources.parse(
        {
            "memory": "4GB",
            "cpus": 2,
            "walltime": "2h",
            "gpus": 1,
            "partition": "debug",
            "account": "proj-1",
            "disk": "10GiB",
        }
    )
    lines = SlurmScheduler().directives(spec(resources=res, settings={"slurm_extra_args": ["--qos=long"]}))
    assert lines == [
        "#SBATCH --job-name=cb-abcdef-Fit",
        "#SBATCH --output=/w/logs/Fit/Fit_1_abc/attempt-1/stdout",
        "#SBATCH --error=/w/logs/Fit/Fit_1_abc/attempt-1/stderr",
        "#SBATCH --chdir=/w",
        "#SBATCH --mem=3815M",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=2:00:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --tmp=10240M",
        "#SBATCH --partition=debug",
        "#SBATCH --account=proj-1",
        "#SBATCH --qos=long",
    ]


@pytest.mark.parametrize(
    ("walltime", "expected"),
    [("1:30:00", "1:30:00"), ("90min", "1:30:00"), ("1-2:00:00", "1-02:00:00"), (59, "0:00:59")],
)
def test_walltime(walltime: Any, expected: str):
    assert format_walltime(Resources.parse({"walltime": walltime}).walltime_s or 0) == expected


def test_bad_walltime_refused():
    with pytest.raises(ConfigError):
        format_walltime(0)


def test_argv_is_parsable_and_the_script_only():
    assert SlurmScheduler().submit_argv(spec()) == ["sbatch", "--parsable", "/w/logs/Fit/Fit_1_abc/attempt-1/job.sh"]


EVIL = "a b 'q' \"dq\" $(touch /tmp/x) `id` ; # % \\ end"


def test_hostile_values_round_trip_through_sbatch_parsing():
    tmp = "/tmp/work " + EVIL.replace("\\", "")  # a backslash in log paths is refused (below)
    sched = SlurmScheduler()
    lines = sched.directives(
        spec(
            tmp,
            job_name='x; $(rm -rf ~) "y"\nz',
            resources=Resources(account=EVIL),
            settings={"slurm_extra_args": [f"--comment={EVIL}"]},
        )
    )
    words = [w for line in lines for w in sbatch_words(line)]
    assert len(words) == len(lines)  # one option per line, nothing split off
    assert words[0] == "--job-name=x____rm_-rf_____y__z"  # sanitized
    assert words[1] == f"--output={tmp.replace('%', '%%')}/logs/Fit/Fit_1_abc/attempt-1/stdout"
    assert words[3] == f"--chdir={tmp}"
    assert words[-2:] == [f"--account={EVIL}", f"--comment={EVIL}"]
    script = jobscript.render(spec(tmp), ["python3", "-m", "containerbatch.runner", "x"], directives=lines)
    assert script.splitlines()[1 : len(lines) + 1] == lines  # right after #!/bin/bash, before any command


def test_newline_and_bad_extra_args_refused():
    sched = SlurmScheduler()
    with pytest.raises(ConfigError, match="line break"):
        sched.directives(spec(resources=Resources(queue="a\nb")))
    with pytest.raises(ConfigError, match="must start with '-'"):
        sched.directives(spec(settings={"slurm_extra_args": ["qos=long"]}))
    with pytest.raises(ConfigError, match="backslash"):
        sched.directives(spec("/w\\x"))


def test_directive_quote():
    assert directive_quote("plain-1.2") == "plain-1.2"
    assert sbatch_words("#SBATCH " + directive_quote("a \"b\" 'c' \\d #e")) == ["a \"b\" 'c' \\d #e"]
    assert re.fullmatch(r'"[^\n]*"', directive_quote("x y"))
