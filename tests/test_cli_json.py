"""`run --json` and `show --json`: one JSON document on stdout for scripts."""

import json

from tests.conftest import ROOT, run_cli

EXAMPLE = str(ROOT / "examples" / "workflow.py")


def test_run_json(tmp_path):
    proc = run_cli(["run", EXAMPLE, "Fit", "--sample", "2", "--runtime", "host", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["run_id"]
    assert sorted((t["task_id"].split("_")[0], t["outcome"]) for t in doc["tasks"]) == [
        ("Fit", "DONE"),
        ("Simulate", "DONE"),
    ]
    assert all(t["job_dir"].startswith(str(tmp_path)) for t in doc["tasks"])


def test_show_json_submits_nothing(tmp_path):
    proc = run_cli(
        ["show", EXAMPLE, "Fit", "--sample", "2", "--image", "cb-demo:latest", "--runtime", "docker", "--json"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["runtime"] == "docker" and doc["container_command"][1:3] == ["run", "--name"]
    assert doc["job_script"].startswith("#!/bin/bash") and doc["submit_command"][-1].endswith("job.sh")
    assert not (tmp_path / "logs").exists() and not (tmp_path / ".containerbatch").exists()
