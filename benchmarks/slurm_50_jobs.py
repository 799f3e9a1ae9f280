"""Wall time of 50 trivial tasks through containerbatch on the local Slurm, against plain sbatch.

    python benchmarks/slurm_50_jobs.py [N]

Runs three cases in fresh temporary folders and prints their wall times:
plain ``sbatch --wrap true`` x N (waiting until squeue lists none of them),
containerbatch with runtime host, and containerbatch with docker (cb-demo:latest).
Not a test: numbers depend on the machine and on slurm.conf (ci/slurm/setup.sh tunes it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKFLOW = """
import luigi

class Trivial(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/t_{self.i}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")

class All(luigi.WrapperTask):
    n = luigi.IntParameter()

    def requires(self):
        return [Trivial(i=i) for i in range(self.n)]
"""


def plain_sbatch(n: int, folder: Path) -> float:
    start = time.monotonic()
    ids = [
        subprocess.run(
            ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"],
            cwd=folder,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .split(";")[0]
        for _ in range(n)
    ]
    while subprocess.run(
        ["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True
    ).stdout.strip():
        time.sleep(0.2)
    return time.monotonic() - start


def containerbatch(n: int, folder: Path, *extra: str) -> float:
    (folder / "wf.py").write_text(WORKFLOW)
    env = {**os.environ, "CONTAINERBATCH_POLL_INTERVAL": "2"}
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "containerbatch",
            "run",
            "wf.py",
            "All",
            "--n",
            str(n),
            "--batch-system",
            "slurm",
            "--workers",
            str(n),
            *extra,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - start
    done = len(list((folder / "results").glob("t_*.txt")))
    if proc.returncode != 0 or done != n:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"containerbatch {extra} failed: exit {proc.returncode}, {done}/{n} results")
    return took


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    cases = {
        f"plain sbatch --wrap true x{n}": lambda d: plain_sbatch(n, d),
        f"containerbatch, runtime host, {n} tasks": lambda d: containerbatch(n, d, "--runtime", "host"),
        f"containerbatch, docker cb-demo:latest, {n} tasks": lambda d: containerbatch(
            n, d, "--image", "cb-demo:latest"
        ),
    }
    for name, case in cases.items():
        with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
            print(f"{name:45s} {case(Path(tmp)):6.1f} s", flush=True)


if __name__ == "__main__":
    main()
