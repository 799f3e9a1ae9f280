"""Job arrays (containerbatch.batching): the array script, element ids and their states, and live Slurm."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from containerbatch.batching import render_array
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.slurm import SlurmScheduler, _row_keys
from containerbatch.states import JobState
from tests.conftest import run_cli
from tests.test_slurm_live import calls, cluster, shims  # noqa: F401  (fixtures: the host's Slurm and 24.11)


def _spec(tmp_path: Path, name: str):
    from containerbatch.spec import JobSpec

    job_dir = tmp_path / name
    job_dir.mkdir(parents=True, exist_ok=True)
    return JobSpec(
        run_id="r1",
        task_id=name,
        task_family="F",
        task_module="m",
        module_file=str(tmp_path / "m.py"),
        params={},
        attempt=1,
        batch_system="slurm",
        runtime="host",
        image=None,
        working_dir=str(tmp_path),
        result_dir=str(tmp_path),
        log_dir=str(tmp_path),
        state_dir=str(tmp_path),
        job_dir=str(job_dir),
        marker_path=str(tmp_path / "m" / name),
        job_name="cb-F",
        executable=("python3",),
    )


def test_array_script_runs_each_element_s_own_job_script_quoted(tmp_path):
    hostile = ["a b", "q'uote", "$(touch pwned)", "semi;colon"]
    specs = [_spec(tmp_path, n) for n in hostile]
    for spec in specs:
        Path(spec.script_path).write_text(f"#!/bin/bash\necho ran {spec.task_id!r} > {tmp_path}/out-$$\n")
        Path(spec.script_path).write_text('#!/bin/bash\nprintf "%s" "$0" > "$(dirname "$0")/ran"\n')
    array = _spec(tmp_path, "array")
    script = render_array(SlurmScheduler(), array, specs)
    assert "#SBATCH --array=0-3" in script
    path = tmp_path / "array.sh"
    path.write_text(script)
    for index, spec in enumerate(specs):
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(index)}
        subprocess.run(["/bin/bash", str(path)], env=env, check=True, cwd=tmp_path)
        assert (Path(spec.job_dir) / "ran").read_text() == spec.script_path
    assert not (tmp_path / "pwned").exists()
    bad = subprocess.run(["/bin/bash", str(path)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "9"}, cwd=tmp_path)
    assert bad.returncode == 2


def test_slurm_element_ids_from_one_squeue_and_sacct():
    assert _row_keys("77_[3-5,9%2]") == ["77", "77_3", "77_4", "77_5", "77_9"]
    assert _row_keys("77_4.batch") == ["77", "77_4"]
    slurm = SlurmScheduler()
    ids = ["77_0", "77_1", "77_2", "78"]
    argv = slurm.status_argv(ids)
    assert argv[-1] == "77,78" and "-r" in argv  # one call, by base id, one row per element
    out = "77_0 COMPLETED None\n77_1 RUNNING None\n77_2 PENDING Priority\n78 RUNNING None\n"
    states = slurm.parse_status(CommandResult(tuple(argv), 0, out, ""), ids)
    assert {k: v.state for k, v in states.items()} == {
        "77_0": JobState.COMPLETED,
        "77_1": JobState.RUNNING,
        "77_2": JobState.PENDING,
        "78": JobState.RUNNING,
    }
    history = "77_0|COMPLETED|0:0\n77_1|FAILED|1:0\n77_[2]|PENDING|0:0\n"
    states = slurm.parse_history(CommandResult(("sacct",), 0, history, ""), ["77_1", "77_2"])
    assert states["77_1"].state == JobState.FAILED and states["77_1"].exit_code == 1
    assert states["77_2"].state == JobState.PENDING
    assert slurm.array_element_id("77", 3) == "77_3"


FLAKY = """
import os
import luigi

class Piece(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/piece_{self.i}.txt")

    def run(self):
        if self.i == 2 and not os.path.exists("results/flaky_once"):
            open("results/flaky_once", "w").close()
            raise RuntimeError("piece 2 fails on its first attempt")
        with self.output().open("w") as handle:
            handle.write("ok")

class Pieces(luigi.Task):
    n = luigi.IntParameter()

    def requires(self):
        return [Piece(i=i) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget("results/all.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")
"""


def test_slurm_array_one_sbatch_per_level_and_a_failed_element_resubmitted_alone(tmp_path, shims):  # noqa: F811
    env, log = shims
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "pieces.py").write_text(FLAKY)
    (work / "settings.json").write_text(
        json.dumps(
            {"max_array_size": 100, "runtime": "host", "retry_on": ["task_error"], "max_attempts": 2, "retry_wait": 0}
        )
    )
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "6", "--workers", "10"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((work / "results").glob("piece_*.txt"))) == 6
    sbatch = calls(log, "sbatch")
    # the six Pieces in one array, the resubmitted piece alone, then Pieces: 3 sbatch calls
    assert len(sbatch) == 3, sbatch
    assert sbatch[0][-1].endswith("/array.sh")
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        rows = sorted(db.execute("SELECT task_id, attempt, job_id, state FROM attempts WHERE task_family='Piece'"))
    first = [r for r in rows if r[1] == 1]
    assert len({r[2].split("_")[0] for r in first}) == 1 and all("_" in r[2] for r in first)
    again = [r for r in rows if r[1] == 2]
    assert len(again) == 1 and again[0][0].startswith("Piece_2_") and "_" not in again[0][2]
    assert again[0][3] == "done"
    # show prints the array script of a task that went out in one
    shown = run_cli(["show", "pieces.py", "Piece", "--i", "0"], cwd=work, env=env)
    assert "--array=0-5" in shown.stdout, shown.stdout + shown.stderr


FAKE = {
    # scheduler: (submit tool, what the array's submission ends with, element id -> (array id, index))
    "htcondor": ("condor_submit", "/array.sub", lambda j: tuple(j.split("."))),
    "lsf": ("bsub", "/array.sh", lambda j: (j.split("[")[0], j.split("[")[1].rstrip("]"))),
}


@pytest.mark.parametrize("batch_system", sorted(FAKE))
def test_fake_array_is_one_submission_and_a_failed_element_resubmitted_alone(batch_system, tmp_path, fake_schedulers):
    tool, tail, split = FAKE[batch_system]
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "pieces.py").write_text(FLAKY)
    (work / "settings.json").write_text(
        json.dumps(
            {
                "batch_system": batch_system,
                "max_array_size": 100,
                "runtime": "host",
                "retry_on": ["task_error"],
                "max_attempts": 2,
                "retry_wait": 0,
                "poll_interval": 1,
            }
        )
    )
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "5", "--workers", "10"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((work / "results").glob("piece_*.txt"))) == 5
    log = [json.loads(line) for line in (fake_schedulers / "calls.log").read_text().splitlines()]
    submits = [c for c in log if c["tool"] == tool]
    assert len(submits) == 3, submits  # the array, the resubmitted element, Pieces
    assert submits[0]["argv"][-1].endswith(tail)
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        rows = sorted(db.execute("SELECT task_id, attempt, job_id, state FROM attempts WHERE task_family='Piece'"))
    first = [r for r in rows if r[1] == 1]
    assert len({split(r[2])[0] for r in first}) == 1  # one cluster / one array
    indexes = sorted(int(split(r[2])[1]) for r in first)
    assert indexes == ([1, 2, 3, 4, 5] if batch_system == "lsf" else [0, 1, 2, 3, 4])
    again = [r for r in rows if r[1] == 2]
    assert len(again) == 1 and again[0][0].startswith("Piece_2_") and again[0][3] == "done"
    assert again[0][2] not in {r[2] for r in first}
    # each element wrote its own logs
    for task_id, _attempt, _job, _state in first:
        folder = next((work / "logs" / "Piece").glob(task_id + "/attempt-1"))
        assert (folder / "result.json").is_file()


def test_lsf_element_states_from_one_bjobs():
    from containerbatch.schedulers.lsf import LSFScheduler

    lsf = LSFScheduler()
    argv = lsf.status_argv(["7[1]", "7[2]", "8"])
    assert argv[-2:] == ["7", "8"] and "jobindex" in argv[argv.index("-o") + 1]
    out = json.dumps(
        {
            "COMMAND": "bjobs",
            "JOBS": 3,
            "RECORDS": [
                {"JOBID": "7", "STAT": "DONE", "EXIT_CODE": "", "EXIT_REASON": "", "JOBINDEX": "1"},
                {"JOBID": "7", "STAT": "EXIT", "EXIT_CODE": "1", "EXIT_REASON": "", "JOBINDEX": "2"},
                {"JOBID": "8", "STAT": "RUN", "EXIT_CODE": "", "EXIT_REASON": "", "JOBINDEX": "0"},
            ],
        }
    )
    states = lsf.parse_status(CommandResult(tuple(argv), 0, out, ""), ["7[1]", "7[2]", "8"])
    assert {k: v.state for k, v in states.items()} == {
        "7[1]": JobState.COMPLETED,
        "7[2]": JobState.FAILED,
        "8": JobState.RUNNING,
    }


def test_sigterm_cancels_a_slurm_array_with_one_call(tmp_path, shims, cluster):  # noqa: F811
    import signal
    import sys
    import time

    from tests.test_slurm_live import NAPS, slurm_state, wait_for

    env, log = shims
    work = tmp_path / "work"
    work.mkdir()
    (work / "naps.py").write_text(NAPS)
    (work / "settings.json").write_text(json.dumps({"max_array_size": 10, "runtime": "host"}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "containerbatch",
            "run",
            "naps.py",
            "Naps",
            "--n",
            "4",
            "--seconds",
            "120",
            "--workers",
            "5",
        ],
        cwd=work,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def elements() -> list[str] | None:
        try:
            with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
                ids = [r[0] for r in db.execute("SELECT job_id FROM attempts WHERE job_id IS NOT NULL")]
        except sqlite3.Error:
            return None
        return ids if len(ids) == 4 and any(slurm_state(i, cluster) == "RUNNING" for i in ids) else None

    try:
        ids = wait_for(elements, timeout=120, what="the array to run")
        assert len({i.split("_")[0] for i in ids}) == 1
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        try:  # a failed test leaves no job behind on the shared Slurm
            with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
                left = [r[0] for r in db.execute("SELECT job_id FROM attempts WHERE job_id IS NOT NULL")]
            if left:
                subprocess.run([cluster.tool("scancel"), *left], capture_output=True, timeout=60)
        except sqlite3.Error:
            pass
    scancel = calls(log, "scancel")
    assert len(scancel) == 1 and sorted(scancel[0]) == sorted(ids), (scancel, err)
    for job_id in ids:
        wait_for(lambda j=job_id: slurm_state(j, cluster) in ("CANCELLED", ""), timeout=30, what=f"{job_id} cancelled")
    assert "cancelled 4 job" in err, err
