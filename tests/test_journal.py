"""The journal keeps an ended attempt ended, whatever order the writes arrive in."""

from __future__ import annotations

from pathlib import Path

import pytest

from containerbatch.journal import Journal


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.sqlite")
    j.record_submit(
        run_id="r1",
        task_id="T_1",
        task_family="T",
        params={},
        attempt=1,
        scheduler="slurm",
        runtime="host",
        image=None,
        job_id="42",
        job_dir=str(tmp_path / "job"),
        marker_path=str(tmp_path / "marker"),
    )
    yield j
    j.close()


def test_late_running_write_does_not_reopen_a_cancelled_attempt(journal):
    # Ctrl-C cancels the job; the poller's "running" for the same attempt arrives after it.
    journal.update("T_1", 1, state="cancelled", reason="cancelled", ended=10.0)
    journal.update("T_1", 1, state="running", started=11.0)
    row = journal.latest("T_1")
    assert (row.state, row.reason, row.ended, row.started) == ("cancelled", "cancelled", 10.0, None)


@pytest.mark.parametrize("ended", ["done", "failed", "new_deps"])
def test_no_live_state_after_an_end(journal, ended):
    journal.update("T_1", 1, state=ended)
    for live in ("queued", "running", "held", "unknown"):
        journal.update("T_1", 1, state=live)
    assert journal.latest("T_1").state == ended


def test_live_states_follow_each_other_and_an_end_may_be_corrected(journal):
    journal.update("T_1", 1, state="queued")
    journal.update("T_1", 1, state="running", started=5.0)
    assert journal.latest("T_1").state == "running"
    journal.update("T_1", 1, state="cancelled", reason="cancelled")
    # the job's own result says why it ended: an end may replace an end
    journal.update("T_1", 1, state="failed", reason="oom")
    row = journal.latest("T_1")
    assert (row.state, row.reason, row.started) == ("failed", "oom", 5.0)


def test_a_transaction_an_interruption_left_open_does_not_block_the_next(tmp_path):
    """Ctrl-C between BEGIN and COMMIT leaves the connection in a transaction: the next write still works."""
    journal = Journal(tmp_path / "journal.sqlite")
    journal.start_run("r1", ["x"], 1, "h")
    journal._db.execute("BEGIN IMMEDIATE")  # as if interrupted right after BEGIN
    journal.end_run("r1")  # raised "cannot start a transaction within a transaction" before the fix
    assert journal._db.execute("SELECT ended FROM runs WHERE run_id = 'r1'").fetchone()[0] is not None
