"""tasks_per_job: K tasks in one job (one interpreter), each with its own result, marker and log; a failure
stays with its task; submit_rate and the canary (containerbatch.batching), on the local scheduler."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.conftest import run_cli

WORKFLOW = """
import os
import luigi

class Piece(luigi.Task):
    i = luigi.IntParameter()
    runtime = "host"

    def output(self):
        return luigi.LocalTarget(f"results/piece_{self.i}.txt")

    def run(self):
        print(f"piece {self.i} in pid {os.getppid()}")
        if self.i == 3 and not os.path.exists("results/flaky_once"):
            open("results/flaky_once", "w").close()
            raise RuntimeError("piece 3 fails on its first attempt")
        with self.output().open("w") as handle:
            handle.write(str(os.getppid()))

class Pieces(luigi.WrapperTask):
    n = luigi.IntParameter()

    def requires(self):
        return [Piece(i=i) for i in range(self.n)]
"""


def attempts(work: Path) -> list[tuple[str, int, str, str]]:
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        rows = db.execute("SELECT task_id, attempt, job_id, state FROM attempts WHERE task_family = 'Piece'")
        return sorted(rows)


def setup(tmp_path: Path, settings: dict) -> Path:
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "pieces.py").write_text(WORKFLOW)
    (work / "settings.json").write_text(json.dumps(settings))
    return work


def test_k_tasks_share_a_job_and_a_failure_is_resubmitted_alone(tmp_path):
    work = setup(tmp_path, {"tasks_per_job": 4, "retry_on": ["task_error"], "max_attempts": 2, "retry_wait": 0})
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "8", "--workers", "8"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = attempts(work)
    first = [r for r in rows if r[1] == 1]
    assert len(first) == 8
    assert len({r[2] for r in first}) == 2  # 8 tasks, 4 per job: two jobs
    # one interpreter per job: the tasks of one job were forked by the same runner
    parents = {(work / "results" / f"piece_{i}.txt").read_text() for i in range(8) if i != 3}
    assert len(parents) == 2
    # each task its own result and log
    for i in range(8):
        folder = next((work / "logs" / "Piece").glob(f"Piece_{i}_*/attempt-1"))
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == ("failure" if i == 3 else "success")
        assert f"piece {i} in pid" in (folder / "stdout").read_text()
        assert (folder / "group").is_file()
    failed = [r for r in rows if r[0].startswith("Piece_3_")]
    assert [(r[1], r[3]) for r in failed] == [(1, "failed"), (2, "done")]
    retry = failed[1][2]
    assert retry not in {r[2] for r in first}  # a job of its own
    folder = next((work / "logs" / "Piece").glob("Piece_3_*/attempt-2"))
    assert not (folder / "group").exists()
    assert (
        "piece 3 fails on its first attempt"
        in next((work / "logs" / "Piece").glob("Piece_3_*/attempt-1")).joinpath("stderr").read_text()
    )


def test_tasks_of_a_job_run_up_to_its_cpus_at_once(tmp_path):
    slow = WORKFLOW.replace('print(f"piece', 'import time; time.sleep(2); print(f"piece')
    slow = slow.replace('runtime = "host"', 'runtime = "host"\n    resources = {"cpus": 4}', 1)
    work = setup(tmp_path, {"tasks_per_job": 4})
    (work / "pieces.py").write_text(slow.replace("self.i == 3", "False"))
    started = time.monotonic()
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "4", "--workers", "4"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [
        json.loads(next((work / "logs" / "Piece").glob(f"Piece_{i}_*/attempt-1")).joinpath("result.json").read_text())
        for i in range(4)
    ]
    # the four 2-second tasks overlapped (started before the first finished)
    assert max(r["started"] for r in results) < min(r["finished"] for r in results)
    assert time.monotonic() - started < 60


def test_submit_rate_spaces_submissions(tmp_path):
    work = setup(tmp_path, {"submit_rate": 60})  # one a second
    (work / "pieces.py").write_text(WORKFLOW.replace("self.i == 3", "False"))
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "4", "--workers", "4"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        times = sorted(r[0] for r in db.execute("SELECT submitted FROM attempts WHERE task_family = 'Piece'"))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 4 and min(gaps) >= 0.9, gaps


def test_failing_canary_stops_the_fan_out_and_shows_the_node(tmp_path):
    work = setup(tmp_path, {"canary_threshold": 3, "executable": [str(tmp_path / "broken-python")]})
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'ImportError: libfoo.so.1: cannot open shared object file' >&2\nexit 1\n")
    broken.chmod(0o755)
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "6", "--workers", "6"], cwd=work)
    assert proc.returncode != 0
    assert "libfoo.so.1" in proc.stdout + proc.stderr
    with sqlite3.connect(work / ".containerbatch" / "journal.sqlite") as db:
        rows = db.execute("SELECT job_id, state, reason FROM attempts WHERE task_family = 'Piece'").fetchall()
    assert rows and all(r == (None, "failed", "image_error") for r in rows), rows  # only the canary went out
    assert not list((work / "results").glob("piece_*"))


def test_passing_canary_lets_the_fan_out_go(tmp_path):
    work = setup(tmp_path, {"canary_threshold": 3})
    (work / "pieces.py").write_text(WORKFLOW.replace("self.i == 3", "False"))
    proc = run_cli(["run", "pieces.py", "Pieces", "--n", "6", "--workers", "6"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "canary" in proc.stderr
    assert len(list((work / "results").glob("piece_*"))) == 6
    assert len(list((work / "logs" / "_cb_jobs").glob("*/canary*"))) == 1
