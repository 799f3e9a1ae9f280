"""Real HTCondor outputs (tests/fixtures/htcondor/<version>/, captured from the pool of ci/htcondor) against
the parser and the fakes: the same scenario (tests/htcondor_scenario.py) run on the fakes must print what
the real tools printed (exit codes, output shape, the JobStatus sequence), and, with the live pool, the live
pool must still print it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from containerbatch.errors import SubmitError
from containerbatch.schedulers.base import CommandResult
from containerbatch.schedulers.htcondor import HTCondorScheduler
from containerbatch.states import JobState as S
from tests.conftest import live_env, require
from tests.htcondor_scenario import normalise, run_scenario

ROOT = Path(__file__).parent / "fixtures" / "htcondor"
VERSIONS = sorted(p.name for p in ROOT.iterdir() if p.is_dir())


def captured(version: str) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (ROOT / version).glob("*.json") if p.stem != "sequences"}


def result(record: dict[str, Any]) -> CommandResult:
    return CommandResult(tuple(record["argv"]), record["exit_code"], record["stdout"], record["stderr"])


def test_both_versions_captured() -> None:
    assert {v.split(".")[0] for v in VERSIONS} >= {"23", "25"}, VERSIONS
    for version in VERSIONS:
        readme = (ROOT / version / "README.md").read_text()
        for name in captured(version):
            assert f"{name}.json" in readme, f"{version}/README.md does not cite {name}.json"


@pytest.mark.parametrize("version", VERSIONS)
def test_parser_reads_the_real_outputs(version: str) -> None:
    got, sched = captured(version), HTCondorScheduler({})
    cluster = sched.parse_submit(result(got["condor_submit_one"]))
    assert got["condor_submit_one"]["argv"][0] == "condor_submit" and cluster.isdigit()
    running = sched.parse_status(result(got["condor_q_json_running"]), [cluster])
    assert {k: v.state for k, v in running.items()} == {cluster: S.RUNNING}
    done = sched.parse_history(result(got["condor_history_json_exit_3"]), [cluster])[cluster]
    assert (done.state, done.exit_code) == (S.FAILED, 3)
    assert sched.parse_status(result(got["condor_q_json_gone"]), [cluster]) == {}
    assert sched.harmless_kill_error(result(got["condor_rm_gone"]))
    held_id = sched.parse_submit(result(got["condor_submit_long"]))
    held = sched.parse_status(result(got["condor_q_json_held"]), [held_id])[held_id]
    assert held.state == S.HELD and "via condor_hold" in held.reason and "HoldReasonCode 1" in held.reason
    removed = sched.parse_history(result(got["condor_history_json_removed"]), [held_id])[held_id]
    assert removed.state == S.CANCELLED and "via condor_rm" in removed.reason
    for refused in ("condor_submit_relative_executable", "condor_submit_container_no_transfer_container"):
        with pytest.raises(SubmitError) as info:
            sched.parse_submit(result(got[refused]))
        assert not info.value.transient and got[refused]["stderr"].strip() in str(info.value)


def shape(text: str, folder: Path) -> Any:
    """JSON answers: the attribute names and value types per ad; text: the normalised text."""
    try:
        ads = json.loads(text)
    except ValueError:
        return normalise(text, folder)
    # EnteredCurrentStatus is a time; whether an evicted (held) job's ad carries ExitSignal yet depends on when
    # the starter reported it
    skip = {"EnteredCurrentStatus", "ExitSignal"}
    return [sorted((k, type(v).__name__) for k, v in ad.items() if k not in skip) for ad in ads]


def visible(sequence: list[int]) -> list[int]:
    # Idle (1) shows or not depending on when condor_q asks: compare the states after it
    return [s for s in sequence if s != 1]


def compare(version: str, steps: list[dict[str, Any]], sequences: dict[str, list[int]], folder: Path) -> None:
    real = captured(version)
    real_sequences = json.loads((ROOT / version / "sequences.json").read_text())
    assert [s["name"] for s in steps if s["name"] in real] == [s["name"] for s in steps]
    for step in steps:
        want = real[step["name"]]
        where = f"{step['name']} ({' '.join(step['argv'])}): got {step!r}, captured {want!r}"
        assert step["exit_code"] == want["exit_code"], where
        capture_dir = Path("/tmp/cb-condor-capture")
        assert shape(step["stdout"], folder) == shape(want["stdout"], capture_dir), where
        assert normalise(step["stderr"], folder) == normalise(want["stderr"], capture_dir), where
    assert {k: visible(v) for k, v in sequences.items()} == {k: visible(v) for k, v in real_sequences.items()}


@pytest.mark.parametrize("version", VERSIONS)
def test_fakes_print_what_the_real_tools_printed(
    version: str, fake_schedulers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CB_FAKE_CONDOR_VERSION", version)
    folder = tmp_path / "scenario"
    folder.mkdir()
    steps, sequences = run_scenario(folder, dict(os.environ))
    compare(version, steps, sequences, folder)


@pytest.mark.htcondor_live
def test_live_pool_prints_what_was_captured(tmp_path: Path) -> None:
    require("htcondor_live")
    env = live_env()
    import re
    import subprocess

    line = subprocess.run(["condor_q", "-version"], capture_output=True, text=True, env=env).stdout
    version = re.search(r"\$CondorVersion: (\S+)", line)
    assert version and version.group(1) in VERSIONS, f"no capture for {line!r}: run tests/htcondor_scenario.py"
    folder = tmp_path / "scenario"
    folder.mkdir()
    steps, sequences = run_scenario(folder, env)
    compare(version.group(1), steps, sequences, folder)
