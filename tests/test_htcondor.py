"""HTCondor: submit files (checked with the real htcondor2 parser), quoting, parsers fed every captured output."""

from __future__ import annotations

import doctest
import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from containerbatch import jobscript
from containerbatch.errors import ConfigError, StatusQueryError
from containerbatch.schedulers import htcondor
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.htcondor import HTCondorScheduler, quote_arguments
from containerbatch.spec import JobSpec, Resources
from containerbatch.states import JobState, JobStatus

htcondor2 = pytest.importorskip("htcondor2", reason="pip install htcondor (the test extra)")
sys.path.insert(0, str(Path(__file__).parent / "fakes"))
import fakesched  # noqa: E402  (the fakes' own tokenizer, as a second opinion)

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "htcondor").glob("*.json"))
S = JobState
NASTY = [
    "two words",
    'it\'s "quoted"',
    "$(touch x)",
    "`touch y`",
    "a; b",
    "tab\there",
    "",
    "''",
    '""',
    "\\back\\slash",
    "$$",
    "$ENV(HOME)",
    "$[1+1]",
    "=equal=",
    "ünïcode",
]


def load(path: Path) -> CommandResult:
    data = json.loads(path.read_text())
    return CommandResult(tuple(data["argv"]), data["exit_code"], data["stdout"], data["stderr"])


def make_spec(
    base: Path,
    resources: Resources | None = None,
    *,
    runtime: str = "host",
    image: str | None = None,
    env: dict[str, str] | None = None,
    **settings: object,
) -> JobSpec:
    job_dir = base / "logs" / "Fit" / "Fit_a" / "attempt-1"
    values = {"htcondor_container_mode": "wrap", "htcondor_settings": {}, "transfer_files": False, **settings}
    return JobSpec(
        run_id="20240101-000000-abcdef",
        task_id="Fit(sample=a\nb $(x))",
        task_family="Fit",
        task_module="wf",
        module_file=str(base / "wf.py"),
        params={"sample": "a\nb $(x)"},
        attempt=1,
        batch_system="htcondor",
        runtime=runtime,
        image=image,
        working_dir=str(base),
        result_dir=str(base / "results"),
        log_dir=str(base / "logs"),
        state_dir=str(base / ".containerbatch"),
        job_dir=str(job_dir),
        marker_path=str(base / "m"),
        job_name="cb-abcdef-Fit",
        executable=("python3",),
        env=env or {},
        resources=resources or Resources(),
        settings=values,
    )


def unquote_new_syntax(value: str) -> list[str]:
    """An independent reading of HTCondor's new argument syntax (condor_submit manual, "arguments")."""
    assert value.startswith('"') and value.endswith('"')
    text, out, cur, have, quoted, i = value[1:-1], [], [], False, False, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            assert text[i + 1] == '"', "a lone double quote ends the value early"
            cur.append('"')
            have, i = True, i + 2
        elif c == "'":
            if quoted and text[i + 1 : i + 2] == "'":
                cur.append("'")
                i += 2
            else:
                quoted, have, i = not quoted, True, i + 1
        elif c.isspace() and not quoted:
            if have:
                out.append("".join(cur))
            cur, have, i = [], False, i + 1
        else:
            cur.append(c)
            have, i = True, i + 1
    assert not quoted
    if have:
        out.append("".join(cur))
    return out


# ---------------------------------------------------------------- fixtures


def _af_ad(result: CommandResult) -> dict[str, object]:
    """A -af answer as an ad: one value per attribute, the last one takes the rest of the line."""
    names = [a for a in result.argv[2:] if not a[0].isdigit()]
    values = result.stdout.rstrip("\n").split(" ", len(names) - 1)
    pairs = zip(names, values, strict=False)
    return {n: (None if v == "undefined" else int(v) if v.isdigit() else v) for n, v in pairs}


EXPECTED: dict[str, tuple] = {
    "condor_history_json_no_match.json": ("history", ["42"], {}),
    "condor_q_af.json": ("ad", S.PENDING, None),
    "condor_q_hold_reason_cgroup_memory.json": ("ad", S.HELD, "over cgroup memory limit"),
    "condor_q_hold_reason_startd_memory.json": ("ad", S.HELD, "memory usage exceeded request_memory"),
    "condor_q_json_no_match.json": ("status", ["42"], {}),
    "condor_q_json_two.json": ("status", ["42"], {"42": (S.RUNNING, "2")}),
    "condor_q_secman_2007.json": ("status", ["42"], StatusQueryError),
    "condor_rm_cluster.json": ("kill",),
    "condor_rm_cluster_not_found.json": ("kill",),
    "condor_rm_proc.json": ("kill",),
    "condor_rm_proc_not_found.json": ("kill",),
    "condor_submit_many_dots.json": ("submit", "837"),
    "condor_submit_one.json": ("submit", "19"),
    "condor_submit_terse.json": ("submit", "42"),
    "condor_submit_three.json": ("submit", "42"),
}


def test_fixtures_present_and_all_expected():
    assert FIXTURES, "tests/fixtures/htcondor holds no captured outputs"
    assert {p.name for p in FIXTURES} == set(EXPECTED), "every HTCondor fixture needs an expectation (and vice versa)"


class Answering(HTCondorScheduler):
    def __init__(self, answers: dict[str, CommandResult]) -> None:
        super().__init__({})
        self.answers = answers
        self.calls: list[list[str]] = []

    def _run(self, argv, stdin=None):
        self.calls.append(list(argv))
        return replace(self.answers[argv[0]], argv=tuple(argv))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture(path: Path):
    result = load(path)
    kind, *rest = EXPECTED[path.name]
    sched = HTCondorScheduler({})
    if kind == "submit":
        assert sched.parse_submit(result) == rest[0]
    elif kind == "kill":
        Answering({"condor_rm": result}).kill(["42"])  # "not found" is no error
    elif kind == "ad":
        ad = _af_ad(result)
        ad.setdefault("JobStatus", 5)  # the hold-reason captures print only the hold attributes
        status = sched.status_of(ad)
        assert status.state == rest[0]
        if rest[1]:
            assert rest[1] in status.reason
            if "HoldReasonCode" in ad:
                assert f"HoldReasonCode {ad['HoldReasonCode']}" in status.reason
    else:
        ids, expected = rest
        parse = sched.parse_status if kind == "status" else sched.parse_history
        if expected is StatusQueryError:
            with pytest.raises(StatusQueryError) as info:
                parse(result, ids)
            assert info.value.transient
        else:
            got = parse(result, ids)
            assert {k: (v.state, v.native) for k, v in got.items()} == expected


def test_proc_ids_and_history():
    two = load(Path(__file__).parent / "fixtures" / "htcondor" / "condor_q_json_two.json")
    got = HTCondorScheduler({}).parse_status(two, ["42.0", "42.1"])
    assert {k: v.state for k, v in got.items()} == {"42.0": S.RUNNING, "42.1": S.PENDING}
    history = (
        '[\n{"ClusterId": 7, "ProcId": 0, "JobStatus": 4, "ExitCode": 3, "ExitBySignal": false}\n,\n'
        '{"ClusterId": 8, "ProcId": 0, "JobStatus": 4, "ExitBySignal": true, "ExitSignal": 9}\n,\n'
        '{"ClusterId": 9, "ProcId": 0, "JobStatus": 3, "RemoveReason": "via condor_rm (by user u)"}\n,\n'
        '{"ClusterId": 10, "ProcId": 0, "JobStatus": 4, "ExitCode": 0, "ExitBySignal": false}\n]\n'
    )
    got = HTCondorScheduler({}).parse_history(CommandResult(("condor_history",), 0, history, ""), ["7", "8", "9", "10"])
    assert got == {
        "7": JobStatus(S.FAILED, "4", 3),
        "8": JobStatus(S.FAILED, "4", None, "killed by signal 9"),
        "9": JobStatus(S.CANCELLED, "3", None, "via condor_rm (by user u)"),
        "10": JobStatus(S.COMPLETED, "4", 0),
    }


def test_query_one_condor_q_then_one_condor_history():
    sched = Answering(
        {
            "condor_q": CommandResult(
                (),
                0,
                '[\n{"ClusterId": 1, "ProcId": 0, "JobStatus": 5, "HoldReasonCode": 34,'
                ' "HoldReason": "Job has gone over cgroup memory limit"}\n]\n',
                "",
            ),
            "condor_history": CommandResult(
                (), 0, '[\n{"ClusterId": 2, "ProcId": 0, "JobStatus": 4, "ExitCode": 0}\n]\n', ""
            ),
        }
    )
    got = sched.query(["1", "2", "3"])
    assert [c[0] for c in sched.calls] == ["condor_q", "condor_history"]
    assert sched.calls[0][-3:] == ["1", "2", "3"] and sched.calls[0][:2] == ["condor_q", "-json"]
    assert sched.calls[1][:4] == ["condor_history", "-json", "-match", "2"] and sched.calls[1][-2:] == ["2", "3"]
    assert got["1"] == JobStatus(S.HELD, "5", None, "Job has gone over cgroup memory limit (HoldReasonCode 34)")
    assert got["2"].state == S.COMPLETED and "3" not in got


def test_failures_are_errors():
    with pytest.raises(StatusQueryError):
        HTCondorScheduler({}).parse_status(CommandResult(("condor_q",), 0, "<html>garbage", ""), ["1"])
    with pytest.raises(Exception, match="condor_submit did not submit"):
        HTCondorScheduler({}).parse_submit(
            CommandResult(("condor_submit", "f"), 1, "", "\nERROR: Can't find address of local schedd\n")
        )
    with pytest.raises(Exception, match="condor_rm failed"):
        Answering({"condor_rm": CommandResult((), 1, "", "\nERROR: Can't find address of local schedd\n")}).kill(["1"])


@pytest.mark.parametrize("native", [str(n) for n in range(1, 8)])
def test_every_job_status_maps(native):
    status = HTCondorScheduler({}).status_of({"JobStatus": int(native), "ExitCode": 0})
    assert status.state == HTCondorScheduler.STATE_MAP[native] and status.native == native


def test_unknown_job_status_is_unknown(caplog):
    with caplog.at_level(logging.WARNING):
        assert HTCondorScheduler({}).status_of({"JobStatus": 9}).state == S.UNKNOWN
    assert HTCondorScheduler.DOCS_URL in caplog.text


# ---------------------------------------------------------------- quoting and submit files


@pytest.mark.parametrize("args", [[], ["a"], NASTY, [" lead", "trail ", "  "]])
def test_quote_arguments_round_trips(args):
    quoted = quote_arguments(args)
    assert unquote_new_syntax(quoted) == args
    assert fakesched.split_args_new(quoted[1:-1]) == args


def test_doctests():
    assert doctest.testmod(htcondor).failed == 0


def parse_sub(text: str) -> htcondor2.Submit:
    sub = htcondor2.Submit(text)
    assert sub.getQArgs() == ""  # exactly one plain "queue"
    return sub


def test_golden_submit_file(tmp_path):
    base = tmp_path / "work dir 'q' $(touch c) `x` ; y"
    env = {f"V{i}": v for i, v in enumerate(NASTY)}
    res = Resources(memory_mb=2048, cpus=2, walltime_s=3600, gpus=1, disk_mb=100, account="grp.user")
    spec = make_spec(base, res, env=env, htcondor_settings={"+JobFlavour": '"longlunch"', "MY.Extra": "1"})
    sched = HTCondorScheduler({})
    text = sched.submit_file(spec)
    jd = spec.job_dir.replace("$(", "$(DOLLAR)(")
    assert text.splitlines()[1:] == [
        "universe = vanilla",
        f"initialdir = {jd}",
        f"executable = {jd}/job.sh",  # condor_submit resolves a relative one against its cwd, not initialdir
        f"output = {jd}/stdout",
        f"error = {jd}/stderr",
        f"log = {jd}/condor.log",
        "batch_name = cb-abcdef-Fit",
        "getenv = false",
        "request_cpus = 2",
        "request_memory = 2048MB",
        "request_disk = 102400KB",
        "request_gpus = 1",
        "allowed_job_duration = 3600",
        "accounting_group = grp.user",
        "should_transfer_files = NO",
        '+JobFlavour = "longlunch"',
        "MY.Extra = 1",
        "queue",
    ]
    assert text.splitlines()[0].startswith("# containerbatch: Fit(sample=a b ")  # the newline cannot break out
    sub = parse_sub(text)
    # the real HTCondor macro expansion gives back every path unchanged
    for key, want in [
        ("initialdir", spec.job_dir),
        ("output", spec.stdout_path),
        ("error", spec.stderr_path),
        ("log", f"{spec.job_dir}/condor.log"),
    ]:
        assert sub.expand(key) == want
    # env values (secrets) are not in the submit description (condor_q -l would show them): the 0600 env file
    assert "environment" not in sub.keys() and not any(v in text for v in env.values() if len(v) > 3)
    assert sub["MY.JobFlavour"] == '"longlunch"'
    assert sched.submit_argv(spec) == ["condor_submit", f"{spec.job_dir}/job.sub"]


def test_job_script_and_submit_file_with_hostile_parameter(tmp_path):
    """The task id (with the hostile parameter) appears only in comments; bash parses job.sh without running it."""
    import subprocess

    spec = make_spec(tmp_path, env={"P": "x'; touch canary; `touch canary2` $(touch canary3)\nnext"})
    sched = HTCondorScheduler({})
    script = jobscript.render(
        spec,
        ["python3", "-m", "containerbatch.runner", spec.job_dir],
        directives=sched.directives(spec),
        exports=dict(spec.env),
    )
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], cwd=tmp_path).returncode == 0
    assert not list(tmp_path.glob("canary*"))
    # the value (even with a newline) travels in the env file job.sh sources, never in the submit file
    text = sched.submit_file(spec)
    sub = parse_sub(text)
    assert "environment" not in sub.keys() and "canary" not in text


@pytest.mark.parametrize(
    ("mode", "runtime", "image", "keys"),
    [
        ("wrap", "docker", "cb-demo:latest", {"universe": "vanilla"}),
        (
            "universe",
            "docker",
            "cb-demo:latest",
            {"universe": "container", "container_image": "docker://cb-demo:latest", "transfer_container": "false"},
        ),
        (
            "universe",
            "apptainer",
            "/images/a b.sif",
            {"universe": "container", "container_image": "/images/a b.sif", "transfer_container": "false"},
        ),
        ("universe", "apptainer", "rel/a.sif", {"universe": "container", "container_image": "{work}/rel/a.sif"}),
        (
            "attribute",
            "apptainer",
            "/cvmfs/unpacked.cern.ch/x:y",
            {"universe": "vanilla", "MY.SingularityImage": '"/cvmfs/unpacked.cern.ch/x:y"'},
        ),
        ("universe", "host", None, {"universe": "vanilla"}),  # no image: nothing to contain
    ],
)
def test_container_modes(tmp_path, mode, runtime, image, keys):
    spec = make_spec(tmp_path, runtime=runtime, image=image, htcondor_container_mode=mode)
    sched = HTCondorScheduler({})
    sub = parse_sub(sched.submit_file(spec))
    for key, value in keys.items():
        assert sub[key] == value.replace("{work}", spec.working_dir)
    assert ("container_image" in sub) == (keys.get("universe") == "container")
    assert sched.runs_container(spec) == (mode != "wrap" and runtime != "host")


def test_transfer_files(tmp_path):
    spec = make_spec(tmp_path, runtime="docker", image="cb-demo:latest", transfer_files=True)
    sub = parse_sub(HTCondorScheduler({}).submit_file(spec))
    assert sub["should_transfer_files"] == "YES" and sub["when_to_transfer_output"] == "ON_EXIT"
    assert sub.expand("transfer_input_files") == str(
        tmp_path / "logs" / "Fit" / "Fit_a" / "attempt-1" / "stage-in.tar.gz"
    )
    assert sub.expand("transfer_output_files") == "stage-out.tar.gz,cb_done"
    assert parse_sub(HTCondorScheduler({}).submit_file(make_spec(tmp_path)))["should_transfer_files"] == "NO"
    with pytest.raises(ConfigError, match="transfer_files needs a container runtime"):
        HTCondorScheduler({}).submit_file(make_spec(tmp_path, transfer_files=True))  # runtime host


@pytest.mark.parametrize(
    "settings",
    [{"queue": "5"}, {"executable": "/bin/sh"}, {"bad key": "1"}, {"+Flavour": "a\nqueue 100"}, {"+A": "1\rx"}],
)
def test_bad_htcondor_settings(tmp_path, settings):
    with pytest.raises(ConfigError, match="htcondor_settings"):
        HTCondorScheduler({}).submit_file(make_spec(tmp_path, htcondor_settings=settings))


@pytest.mark.parametrize("name", ["a\nqueue 9", "x$$(Memory)", "$$[1]", "a$(DOLLAR)"])
def test_unwritable_values_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="cannot be written"):
        HTCondorScheduler({}).submit_file(replace(make_spec(tmp_path), job_name=name))


# -- container modes on a pool: preflight asks condor_status, job.sh refuses to run outside the image ----------
class Pool(HTCondorScheduler):
    def __init__(self, stdout: str, exit_code: int = 0) -> None:
        super().__init__({})
        self.answer, self.calls = (exit_code, stdout), []  # type: ignore[var-annotated]

    def _run(self, argv, stdin=None):
        self.calls.append(list(argv))
        return CommandResult(tuple(argv), self.answer[0], self.answer[1], "no collector" if self.answer[0] else "")


@pytest.mark.parametrize(
    ("mode", "image", "constraint", "named"),
    [
        ("attribute", "/i/a.sif", "HasSingularity =?= true", "SINGULARITY_JOB"),
        ("universe", "/i/a.sif", "HasSingularity =?= true && HasSIF =?= true", "HasSIF"),
        ("universe", "docker://x:1", "HasDocker =?= true || HasSingularity =?= true", "HasDocker"),
    ],
)
def test_container_modes_need_a_slot_that_can_start_the_image(tmp_path, mode, image, constraint, named):
    spec = make_spec(tmp_path, runtime="apptainer", image=image, htcondor_container_mode=mode)
    ok = Pool("slot1@node\n")
    ok.check(spec)
    ok.check(replace(spec, task_id="other"))
    assert ok.calls == [["condor_status", "-constraint", constraint, "-af", "Name"]]  # once per run
    for refusing in (Pool(""), Pool("", exit_code=1)):
        with pytest.raises(ConfigError, match=named) as info:
            refusing.check(spec)
        assert "HasSingularity" in str(info.value) and info.value.setting == "htcondor_container_mode"
    Pool("").check(make_spec(tmp_path, runtime="apptainer", image=image))  # wrap mode asks nothing


def test_job_script_refuses_to_run_outside_the_image(tmp_path):
    (tmp_path / "wf.py").write_text("")
    spec = replace(
        make_spec(tmp_path, runtime="apptainer", image="/i/a.sif", htcondor_container_mode="attribute"),
        marker_path=str(tmp_path / "done" / "m"),
    )
    (tmp_path / "done").mkdir()
    Path(spec.job_dir).mkdir(parents=True)
    script = Path(spec.job_dir) / "job.sh"
    script.write_text(jobscript.render(spec, ["echo", "ran the task"], inside_image=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPTAINER", "SINGULARITY"))}
    bare = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert bare.returncode == 125 and "ran the task" not in bare.stdout
    assert "outside any container" in bare.stderr and "SINGULARITY_JOB" in bare.stderr
    inside = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={**env, "APPTAINER_CONTAINER": "/i/a.sif"}
    )
    assert (inside.returncode, inside.stdout) == (0, "ran the task\n")
    (tmp_path / "wf.py").unlink()  # the shared folders are not bound into the container
    unbound = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env={**env, "APPTAINER_CONTAINER": "x"}
    )
    assert (
        unbound.returncode == 125
        and "SINGULARITY_BIND_EXPR" in unbound.stderr
        and str(tmp_path / "wf.py") in unbound.stderr
    )


def test_array_submit_file_runs_the_array_script_by_its_absolute_path(tmp_path):
    spec = make_spec(tmp_path)
    text = HTCondorScheduler({}).array_submit_file(spec, 3)
    assert f"executable = {spec.job_dir}/array.sh" in text.splitlines()
    assert "job.sh" not in text and text.endswith("arguments = $(Process)\nqueue 3\n")
