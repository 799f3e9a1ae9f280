"""benchmarks/scale.py runs end to end at a tiny N (not a timed test: it only has to work)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slurm


def test_scale_benchmark_runs_at_tiny_n(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scale.py"),
            "--n",
            "3",
            "--cases",
            "floor-host,cb-host,cb-array,cb-tpj,law",
            "--condor-n",
            "0",
            "--small",
            "--timeout",
            "300",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["case"]: r for r in json.loads(out.read_text())}
    assert "floor-host" in proc.stdout and "ratio" in proc.stdout
    assert rows["floor-host"]["calls"]["sbatch"] == 3
    assert rows["cb-host"]["calls"]["sbatch"] == 4  # three tasks and All
    assert rows["cb-array"]["calls"]["sbatch"] == 2  # one array, then All
    assert rows["cb-tpj"]["calls"]["sbatch"] == 2  # one job of three tasks, then All
    assert rows["law"]["calls"]["sbatch"] == 3 and rows["law"]["ok"]  # law 0.1.21, in its own venv


@pytest.mark.htcondor_live
def test_scale_benchmark_pool_cases_run_at_tiny_n(tmp_path):
    from tests.conftest import htcondor_bin, require

    require("htcondor_live")
    out = tmp_path / "rows.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--n", "0", "--condor-n", "2", "--no-extras"]
    proc = subprocess.run(
        [*argv, "--condor-bin", str(htcondor_bin()), "--timeout", "300", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["case"]: r for r in json.loads(out.read_text())}
    assert "HTCondor pool" in proc.stdout
    assert rows["condor-floor"]["calls"]["condor_submit"] == 2
    assert rows["condor-cb"]["calls"]["condor_submit"] == 3  # two tasks and All
    assert rows["condor-cb-array"]["calls"]["condor_submit"] == 2  # one cluster, then All
    assert rows["condor-cb-tpj"]["calls"]["condor_submit"] == 2  # one job of two tasks, then All
