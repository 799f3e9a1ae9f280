"""One HTCondor scenario, run against the real pool (ci/htcondor) or the fakes (tests/fakes/bin).

Each step records what a tool printed (argv, exit code, stdout, stderr), in the fixture format of
tests/fixtures/htcondor.  ``python3 -m tests.htcondor_scenario capture`` writes them, with the pool's tools
first on PATH, to tests/fixtures/htcondor/<version>/ (see the README there); test_htcondor_scenario.py
parses those captures and compares the fakes with the real pool step by step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from containerbatch.schedulers.htcondor import ATTRIBUTES

JOB = "#!/bin/bash\nsleep {seconds}\nexit {code}\n"
SUB = (
    "executable = {exe}\ninitialdir = {dir}\noutput = {dir}/out\nerror = {dir}/err\nlog = {dir}/condor.log\n"
    "should_transfer_files = NO\ngetenv = false\nbatch_name = cb-scenario\n{extra}queue\n"
)


class Scenario:
    """Runs the steps in ``folder`` (which the pool must see at the same path) with ``env``."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, argv: list[str], cwd: Path | None = None) -> dict[str, Any]:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=cwd or self.folder, timeout=120)
        step = {"name": name, "argv": argv, "exit_code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        self.steps.append(step)
        return step

    def job(self, name: str, seconds: int, code: int, extra: str = "", exe: str | None = None) -> Path:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "job.sh"
        script.write_text(JOB.format(seconds=seconds, code=code))
        script.chmod(0o755)
        sub = folder / "job.sub"
        sub.write_text(SUB.format(exe=exe or script, dir=folder, extra=extra))
        return sub

    def q(self, job: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["condor_q", "-json", "-attributes", ATTRIBUTES, job], capture_output=True, text=True, env=self.env
        )
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []

    def states(self, job: str, until: set[int], timeout: float = 120) -> list[int]:
        """JobStatus seen by condor_q (each change once) until one of ``until`` or the job leaves the queue."""
        seen: list[int] = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            ads = self.q(job)
            if not ads:
                break
            status = int(ads[0]["JobStatus"])
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in until:
                break
            time.sleep(0.2)
        return seen

    def queue(self) -> list[str]:
        """The clusters of every user in the queue."""
        out = subprocess.run(
            ["condor_q", "-allusers", "-af", "ClusterId"], capture_output=True, text=True, env=self.env
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    def history(self, name: str, job: str) -> dict[str, Any]:
        argv = ["condor_history", "-json", "-match", "1", "-attributes", ATTRIBUTES, job]
        for _ in range(100):
            step = self.run(name, argv)
            if step["exit_code"] == 0 and step["stdout"].strip() not in ("", "[]", "[\n]"):
                return step
            self.steps.pop()
            time.sleep(0.3)
        raise AssertionError(f"job {job} never reached condor_history")


def submitted_cluster(step: dict[str, Any]) -> str:
    match = re.search(r"submitted to cluster (\d+)\.", step["stdout"])
    assert match, step
    return match.group(1)


def run_scenario(folder: Path, env: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, list[int]]]:
    """The steps, and the JobStatus sequences condor_q showed (per job)."""
    s = Scenario(folder, env)
    sequences: dict[str, list[int]] = {}
    # a job that runs for 2 s and exits 3: submitted, seen in the queue, then in the history
    exits = submitted_cluster(s.run("condor_submit_one", ["condor_submit", str(s.job("exits", 2, 3))]))
    for _ in range(50):  # the first condor_q answer that shows the job running
        step = s.run("condor_q_json_running", ["condor_q", "-json", "-attributes", ATTRIBUTES, exits])
        if '"JobStatus": 2' in step["stdout"]:
            break
        s.steps.pop()
        time.sleep(0.2)
    sequences["exits"] = s.states(exits, set()) + [4]
    s.history("condor_history_json_exit_3", exits)
    s.run("condor_q_json_gone", ["condor_q", "-json", "-attributes", ATTRIBUTES, exits])
    if not s.queue():
        # condor_rm of any job when the queue is empty: "There are no jobs in the queue", exit 0
        s.run("condor_rm_empty_queue", ["condor_rm", exits])
    s.run("condor_q_af_none", ["condor_q", "999999", "-af", "ClusterId", "JobStatus"])
    # refused submissions: a relative executable from another folder; container universe without
    # transfer_container = false on a shared filesystem
    relative = s.job("relative", 1, 0, exe="job.sh")
    s.run("condor_submit_relative_executable", ["condor_submit", str(relative)], cwd=folder)
    image = folder / "missing.sif"
    container = s.job("container", 1, 0, extra=f"universe = container\ncontainer_image = {image}\n")
    s.run("condor_submit_container_no_transfer_container", ["condor_submit", str(container)])
    # hold, release, remove
    held = submitted_cluster(s.run("condor_submit_long", ["condor_submit", str(s.job("held", 60, 0))]))
    before = s.states(held, {2})
    s.run("condor_rm_gone", ["condor_rm", exits])  # another job is in the queue: "Couldn't find", exit 1
    s.run("condor_hold", ["condor_hold", held])
    for _ in range(50):
        step = s.run("condor_q_json_held", ["condor_q", "-json", "-attributes", ATTRIBUTES, held])
        if '"JobStatus": 5' in step["stdout"]:
            break
        s.steps.pop()
        time.sleep(0.2)
    s.run("condor_release", ["condor_release", held])
    after = s.states(held, {2})
    s.run("condor_rm", ["condor_rm", held])
    sequences["held"] = before + [5] + after + [3]
    s.history("condor_history_json_removed", held)
    return s.steps, sequences


def normalise(text: str, folder: Path) -> str:
    """Output shape: the scenario folder, numbers, host names, times and addresses replaced."""
    text = text.replace(str(folder), "DIR")
    text = re.sub(r"<[^>]*>", "<ADDR>", text)
    text = re.sub(r"\b\d+\b", "N", text)
    text = re.sub(r"@[A-Za-z0-9_.-]+", "@HOST", text)
    return text


def capture(out_root: Path) -> Path:
    """Run the scenario on the pool on PATH and write its steps as fixtures under out_root/<version>/."""
    env = dict(os.environ)
    version_line = subprocess.run(["condor_q", "-version"], capture_output=True, text=True, env=env).stdout
    version = re.search(r"\$CondorVersion: (\S+)", version_line)
    assert version, version_line
    folder = Path(f"/tmp/cb-condor-capture-{os.getpid()}")
    folder.mkdir()
    steps, sequences = run_scenario(folder, env)
    target = out_root / version.group(1)
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
        record = {k: step[k] for k in ("argv", "exit_code", "stdout", "stderr")}
        record["argv"] = [a.replace(str(folder), "/tmp/cb-condor-capture") for a in record["argv"]]
        for key in ("stdout", "stderr"):
            record[key] = record[key].replace(str(folder), "/tmp/cb-condor-capture")
        record["source"] = (
            f"HTCondor {version.group(1)} (Debian package, ci/htcondor/run.sh pool), captured by "
            f"`python3 -m tests.htcondor_scenario capture` on {time.strftime('%Y-%m-%d')}: " + " ".join(record["argv"])
        )
        (target / f"{step['name']}.json").write_text(json.dumps(record, indent=2) + "\n")
    (target / "sequences.json").write_text(json.dumps(sequences, indent=2) + "\n")
    return target


if __name__ == "__main__":
    if sys.argv[1:] != ["capture"]:
        sys.exit("usage: PATH=ci/htcondor/bin:$PATH python3 -m tests.htcondor_scenario capture")
    print(capture(Path(__file__).parent / "fixtures" / "htcondor"))
