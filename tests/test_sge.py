"""Grid Engine scheduler: argv and parsers on captured output (tests/fixtures/sge, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from containerbatch.errors import ConfigError, StatusQueryError, SubmitError
from containerbatch.resubmit import Reason, classify
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.sge import SGEScheduler
from containerbatch.spec import JobSpec, Resources
from containerbatch.states import JobState

FIXTURES = Path(__file__).parent / "fixtures" / "sge"


def fixture(name: str) -> tuple[str, int]:
    text = (FIXTURES / name).read_text()
    if "\nrc=" in "\n" + text:
        body, _, rc = text.rpartition("rc=")
        return body, int(rc)
    return text, 0


def result(name: str, argv: tuple[str, ...] = ("qstat", "-xml"), stream: str = "stdout") -> CommandResult:
    text, code = fixture(name)
    return CommandResult(argv, code, text if stream == "stdout" else "", text if stream == "stderr" else "")


def spec(tmp_path: Path, **changes) -> JobSpec:
    values = dict(
        run_id="r1",
        task_id="T_1",
        task_family="T",
        task_module="wf",
        module_file=str(tmp_path / "wf.py"),
        params={},
        attempt=1,
        batch_system="sge",
        runtime="host",
        image=None,
        working_dir=str(tmp_path),
        result_dir=str(tmp_path / "results"),
        log_dir=str(tmp_path / "logs"),
        state_dir=str(tmp_path / ".cb"),
        job_dir=str(tmp_path / "logs" / "T" / "attempt-1"),
        marker_path=str(tmp_path / ".cb" / "m"),
        job_name="0cb-r1-T x/y",
        executable=("python3",),
        settings={"sge_pe": "smp", "sge_memory_resource": "h_vmem", "sge_gpu_resource": "gpu"},
    )
    values.update(changes)
    return JobSpec(**values)


def test_submit_argv(tmp_path):
    res = Resources(memory_mb=4096, cpus=4, walltime_s=5400, gpus=1, queue="short.q", account="proj")
    argv = SGEScheduler().submit_argv(spec(tmp_path, resources=res))
    assert argv[:4] == ["qsub", "-terse", "-N", "j0cb-r1-T_x_y"]
    joined = " ".join(argv)
    for part in (
        "-S /bin/bash",
        "-q short.q",
        "-A proj",
        "-l h_rt=1:30:00",
        "-pe smp 4",
        "-l h_vmem=1024M",
        "-l gpu=1",
    ):
        assert part in joined, part
    assert argv[-1].endswith("/job.sh")


def test_settings_choose_the_parallel_environment_and_complexes(tmp_path):
    settings = {"sge_pe": "mpi", "sge_memory_resource": "mem_free", "sge_extra_args": ["-P", "x"]}
    argv = SGEScheduler().submit_argv(spec(tmp_path, resources=Resources(memory_mb=1000, cpus=3), settings=settings))
    joined = " ".join(argv)
    assert "-pe mpi 3" in joined and "-l mem_free=334M" in joined
    with pytest.raises(ConfigError, match="must start with a qsub option"):
        SGEScheduler().submit_argv(spec(tmp_path, settings={"sge_extra_args": ["P"]}))


@pytest.mark.parametrize("folder", ["a:b", "a$JOB_ID"])
def test_log_paths_grid_engine_would_reinterpret_are_refused(tmp_path, folder):
    with pytest.raises(ConfigError, match="host:path"):
        SGEScheduler().check(spec(tmp_path, job_dir=str(tmp_path / folder / "attempt-1")))


def test_parse_submit():
    sge = SGEScheduler()
    assert sge.parse_submit(result("qsub_terse.txt", ("qsub",))) == fixture("qsub_terse.txt")[0].strip()
    assert sge.parse_submit(CommandResult(("qsub",), 0, "7.1-3:1\n", "")) == "7"
    with pytest.raises(SubmitError) as info:
        sge.parse_submit(result("qsub_refused.txt", ("qsub",), stream="stderr"))
    assert not info.value.transient
    text = "error: commlib error: got select error (Connection refused)\nunable to contact qmaster"
    with pytest.raises(SubmitError) as info:
        sge.parse_submit(CommandResult(("qsub",), 1, "", text))
    assert info.value.transient


def test_parse_status():
    states = SGEScheduler().parse_status(result("qstat_xml_running_held_pending.xml"), ["22", "23", "24", "25", "9"])
    assert {k: v.state for k, v in states.items()} == {
        "22": JobState.RUNNING,
        "23": JobState.RUNNING,
        "24": JobState.HELD,
        "25": JobState.PENDING,
    }
    assert SGEScheduler().parse_status(result("qstat_xml_empty.xml"), ["1"]) == {}
    error = SGEScheduler().parse_status(
        CommandResult(
            ("qstat",),
            0,
            "<job_info><job_list><JB_job_number>5</JB_job_number><state>Eqw</state></job_list></job_info>",
            "",
        ),
        ["5"],
    )
    assert error["5"].state is JobState.HELD and "qmod -cj" in error["5"].reason
    with pytest.raises(StatusQueryError):
        SGEScheduler().parse_status(CommandResult(("qstat",), 0, "<job_info><job", ""), ["1"])


@pytest.mark.parametrize(
    "name,state,code,reason",
    [
        ("qacct_ok.txt", JobState.COMPLETED, 0, None),
        ("qacct_exit3.txt", JobState.FAILED, 3, None),
        ("qacct_h_rt.txt", JobState.TIMEOUT, 137, Reason.WALLTIME),
        ("qacct_qdel.txt", JobState.CANCELLED, 137, Reason.CANCELLED),
    ],
)
def test_parse_history_and_reasons(name, state, code, reason):
    sge = SGEScheduler()
    job_id = next(line.split()[1] for line in fixture(name)[0].splitlines() if line.startswith("jobnumber"))
    status = sge.parse_history(result(name, ("qacct", "-j", job_id)), [job_id])[job_id]
    assert (status.state, status.exit_code) == (state, code)
    said = sge.classify_failure(status)
    assert (said[0] if said else None) is reason
    if reason is not None:
        assert classify(None, status, code, scheduler=sge).reason is reason


def test_unknown_job_is_absent_not_an_error():
    sge = SGEScheduler()
    assert sge.parse_history(result("qacct_unknown.txt", ("qacct", "-j", "99999"), stream="stderr"), ["99999"]) == {}
    assert sge.harmless_kill_error(result("qdel_unknown.txt", ("qdel", "99999"), stream="stderr"))
    assert sge.harmless_kill_error(result("qdel_running.txt", ("qdel", "23")))
    mixed = 'cbjobs has deleted job 25\ndenied: job "99999" does not exist\n'
    assert sge.harmless_kill_error(CommandResult(("qdel", "25", "99999"), 1, "", mixed))
    assert not sge.harmless_kill_error(CommandResult(("qdel", "25"), 1, "", "error: commlib error: got select error"))


# -- arrays (fixtures captured from ci/sge, see tests/fixtures/sge/README.md) ---------------------------------


def test_array_submit_argv_and_element_ids(tmp_path):
    sge = SGEScheduler()
    array = spec(tmp_path, job_dir=str(tmp_path / "logs" / "_arrays" / "a1"))
    argv = sge.array_submit_argv(array, 5)
    assert argv[-3:] == ["-t", "1-5", f"{array.job_dir}/array.sh"]
    assert argv[argv.index("-o") + 1] == f"{array.job_dir}/stdout.$TASK_ID"  # qsub's pseudo variable
    assert argv[argv.index("-e") + 1] == f"{array.job_dir}/stderr.$TASK_ID"
    assert "-terse" in argv and argv[argv.index("-S") + 1] == "/bin/bash"
    assert sge.parse_submit(CommandResult(tuple(argv), 0, "8.1-6:1\n", "")) == "8"
    assert [sge.array_element_id("8", i) for i in range(1, 4)] == ["8.1", "8.2", "8.3"]
    assert (sge.array_first, sge.array_index) == (1, '"${SGE_TASK_ID:-}"')
    with pytest.raises(ConfigError):
        sge.array_submit_argv(spec(tmp_path, job_dir=str(tmp_path / "logs" / "$HOME" / "a1")), 2)


def test_array_script_picks_the_element_by_sge_task_id(tmp_path):
    import os
    import subprocess

    from containerbatch.batching import render_array

    specs = [spec(tmp_path, task_id=f"T_{i}", job_dir=str(tmp_path / f"T_{i}")) for i in range(3)]
    for s in specs:
        Path(s.job_dir).mkdir(parents=True)
        Path(s.script_path).write_text('printf "%s" "$0" > "$(dirname "$0")/ran"\n')
    array = spec(tmp_path, job_dir=str(tmp_path / "array"))
    script = tmp_path / "array.sh"
    script.write_text(render_array(SGEScheduler(), array, specs))
    for task, s in enumerate(specs, start=1):
        env = {**os.environ, "SGE_TASK_ID": str(task)}
        subprocess.run(["/bin/bash", str(script)], env=env, check=True, timeout=30)
        assert (Path(s.job_dir) / "ran").read_text() == s.script_path
    missing = subprocess.run(["/bin/bash", str(script)], env={**os.environ, "SGE_TASK_ID": "undefined"}, timeout=30)
    assert missing.returncode == 2


def test_array_element_states_from_one_qstat():
    """Running tasks are one row each (<tasks>1</tasks>), pending ones one row with a range (2-4:1)."""
    sge = SGEScheduler()
    asked = ["8.3", "8.6", "8.1", "9.1", "9.2", "9.4", "9.5", "10.2", "11", "9"]
    states = sge.parse_status(result("qstat_xml_array.xml"), asked)
    assert {k: v.state for k, v in states.items()} == {
        "8.3": JobState.RUNNING,
        "8.6": JobState.RUNNING,
        "9.1": JobState.RUNNING,
        "9.2": JobState.PENDING,
        "9.4": JobState.PENDING,
        "10.2": JobState.HELD,
        "9": JobState.RUNNING,  # the whole array asked by its number: its liveliest task
    }  # 8.1 ended (qacct tells), 9.5 is beyond the range, 11 is unknown


def test_hostile_task_ranges_are_judged_not_expanded():
    sge = SGEScheduler()
    xml = (
        "<job_info><job_list><JB_job_number>7</JB_job_number><state>qw</state>"
        "<tasks>1-999999999999:1,x-y,5</tasks></job_list></job_info>"
    )
    states = sge.parse_status(CommandResult(("qstat", "-xml"), 0, xml, ""), ["7.123456", "7.5", "7.0"])
    assert set(states) == {"7.123456", "7.5"}
    stepped = "<job_info><job_list><JB_job_number>7</JB_job_number><state>qw</state><tasks>1-9:4</tasks>"
    states = sge.parse_status(CommandResult(("qstat",), 0, stepped + "</job_list></job_info>", ""), ["7.5", "7.6"])
    assert set(states) == {"7.5"}


def test_array_elements_from_one_qacct_per_array():
    sge = SGEScheduler()
    assert sge.history_argv(["8.2", "8.5"]) == ["qacct", "-j", "8"]
    ids = [f"8.{i}" for i in range(1, 7)]
    found = sge.parse_history(result("qacct_array.txt", ("qacct", "-j", "8")), ids)
    assert {k: (v.state, v.exit_code) for k, v in found.items()} == {
        "8.1": (JobState.COMPLETED, 0),
        "8.2": (JobState.FAILED, 3),
        **{f"8.{i}": (JobState.COMPLETED, 0) for i in range(3, 7)},
    }
    killed = sge.parse_history(result("qacct_array_qdel.txt", ("qacct", "-j", "9")), ["9.1", "9.2", "9.3"])
    assert {k: (v.state, v.exit_code) for k, v in killed.items()} == {
        "9.1": (JobState.CANCELLED, 137),
        "9.2": (JobState.CANCELLED, 137),
    }  # 9.3 was deleted while pending: no record
    missing = CommandResult(("qacct", "-j", "9", "-t", "3"), 1, "", "error: Job-array tasks 9.3-3:1 not found\n")
    assert sge.parse_history(missing, ["9.3"]) == {}


def test_array_kill_and_release_are_one_call_with_task_ranges():
    sge = SGEScheduler()
    ids = [f"13.{i}" for i in (5, 1, 2, 3)] + ["14", "15.2", "14.1"]
    assert sge.kill_argv(ids) == ["qdel", "14", "13.1-3", "13.5", "15.2"]
    assert sge.release_argv(["13.2", "13.3"]) == ["qrls", "13.2-3"]
    assert sge.harmless_kill_error(result("qdel_array_range.txt", ("qdel", "13.2-4"), stream="stderr"))
    assert sge.harmless_kill_error(result("qdel_array_tasks.txt", ("qdel", "9.1", "9.3"), stream="stderr"))
    assert sge.harmless_kill_error(result("qdel_array_task_gone.txt", ("qdel", "9.3"), stream="stderr"))
    assert sge.harmless_kill_error(result("qdel_array_gone.txt", ("qdel", "13.1-5"), stream="stderr"))


def test_query_asks_qacct_once_per_array(monkeypatch):
    sge = SGEScheduler()
    asked: list[list[str]] = []
    answers = {
        "qstat": result("qstat_xml_empty.xml"),
        "qacct": result("qacct_array.txt", ("qacct", "-j", "8")),
    }

    def run(argv, **_kw):
        asked.append(list(argv))
        return answers[argv[0]]

    monkeypatch.setattr(sge, "_run", run)
    states = sge.query([f"8.{i}" for i in range(1, 7)])
    assert len(states) == 6 and asked == [["qstat", "-xml"], ["qacct", "-j", "8"]]
