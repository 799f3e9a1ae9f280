"""The fake toyq commands (bin/toyq-sub, toyq-stat, toyq-del), built on containerbatch.testing.fakes."""

from __future__ import annotations

import argparse
import os
import sys

from containerbatch.testing.fakes import FakeBatch

STATE_VARIABLE = "CB_TOYQ_STATE"
STATES = {"pending": "PENDING", "running": "RUNNING", "exited": "DONE", "killed": "KILLED"}


def main(tool: str, argv: list[str]) -> int:
    batch = FakeBatch.from_env(STATE_VARIABLE, tool=tool, argv=argv)
    if tool == "toyq-sub":
        parser = argparse.ArgumentParser(prog=tool)
        for option in ("--name", "--out", "--err"):
            parser.add_argument(option, required=True)
        parser.add_argument("--minutes", type=int)
        parser.add_argument("--priority", type=int, default=0)
        parser.add_argument("script")
        args = parser.parse_args(argv)
        pend = float(os.environ.get("CB_TOYQ_PEND_SECONDS") or 0)  # how long a job waits before it starts
        job = batch.submit(
            args.script,
            cwd=".",
            stdout=args.out,
            stderr=args.err,
            name=args.name,
            priority=args.priority,
            pend_seconds=pend,
        )
        print(f"toyq: job {job} queued")
        return 0
    jobs = batch.jobs()
    if tool == "toyq-stat":
        for job_id in argv or sorted(jobs, key=int):
            job = jobs.get(job_id)
            if job is not None:
                rc = "-" if job["rc"] is None else str(job["rc"])
                print(f"{job_id} {STATES[job['state']]} {rc}")
        return 0
    if tool == "toyq-del":
        status = 0
        for job_id in argv:
            if batch.kill(job_id):
                print(f"toyq: job {job_id} deleted")
            else:
                sys.stderr.write(f"toyq: no job {job_id}\n")
                status = 1
        return status
    sys.stderr.write(f"unknown tool {tool}\n")
    return 2
