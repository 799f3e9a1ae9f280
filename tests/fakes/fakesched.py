"""The fake LSF and HTCondor command-line tools in ``tests/fakes/bin``: one front end for both.

Each fake is its own module built on the reusable machinery of :mod:`containerbatch.testing.fakes`
(state under a lock in ``$CB_FAKE_STATE``, a call log, jobs run for real by detached supervisors,
deterministic faults): :mod:`fake_lsf` (bsub, bjobs, bkill, bhist) and :mod:`fake_htcondor`
(condor_submit, condor_q, condor_history, condor_rm, condor_release, condor_hold, condor_status).  The
scripts in ``bin/`` call :func:`main`; ``bin/fakesched-fault`` and ``python3 fakesched.py
fault|cleanup ...`` call :func:`cli`, which knows both fakes (so ``fault hold lsf 3`` and ``fault hold
condor 3.0`` both work, and ``cleanup`` kills the jobs of both).  Faults and knobs: see the two modules
and :mod:`containerbatch.testing.fakes`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fake_htcondor  # noqa: E402
import fake_lsf  # noqa: E402

from containerbatch.testing import fakes  # noqa: E402

split_args_new = fake_htcondor.split_args_new  # the HTCondor tokenizer, a second opinion for tests
JOB_FAULT_HELP = {
    "hold": "hold the job (HTCondor JobStatus 5; LSF PSUSP/USUSP); process SIGSTOPped or not started",
    "nodefail": "the job's node dies (SIGKILL). LSF: UNKWN then EXIT TERM_REMOVE_HUNG_JOB; "
    "HTCondor: back to idle, then rerun",
    "memlimit": "memory-limit kill. LSF: EXIT TERM_MEMLIMIT (SIGKILL, exit 137); HTCondor: held, code 34",
}
__all__ = ["cli", "fake_htcondor", "fake_lsf", "main", "split_args_new"]


def main(tool, argv):
    """Entry point of the fake tools in bin/."""
    return fakes.main(tool, list(argv))


def cli(argv):
    """``fault ...`` | ``cleanup`` | ``TOOL args...``."""
    return fakes.cli(list(argv), job_help=JOB_FAULT_HELP)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
