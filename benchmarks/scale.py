"""containerbatch at scale, side by side on the local Slurm: one command, one table.

    python benchmarks/scale.py                       # N = 50, 200, 1000 and the extras
    python benchmarks/scale.py --n 5 --small         # a quick look that it works (CI, tests)
    python benchmarks/scale.py --n 50 --cases floor-host,cb-host,cb-array --no-extras

Cases (each in a fresh temporary folder, the submitter a child process):

floor-host      an sbatch loop of the payload (the runner's python importing luigi), waiting until
                squeue lists none of them
floor-docker    the same with the payload in ``docker run`` of cb-demo:latest (the runner bundle bound)
cb-host         containerbatch, runtime host, one job per task
cb-array        containerbatch, runtime host, max_array_size=1000
cb-tpj          containerbatch, runtime host, tasks_per_job=100 and max_array_size=1000
cb-docker       containerbatch, runtime docker (cb-demo:latest), one job per task
b2luigi         b2luigi 1.3.0 with its defaults, installed into its own venv under /tmp/cb-cache-bench
b2luigi-ttl2    the same with its job-status cache cut to 2 s
law             law 0.1.21 (its own venv), a SlurmWorkflow of N branches polled every second, one job per
                branch; law reads ended jobs from sacct, which this Slurm (no accounting storage) cannot
                answer: law's sacct is a stand-in that answers from ``scontrol show job``
law-tpj         the same with law's tasks_per_job=100

On the HTCondor pool of ci/htcondor (``--condor-n``, default 50; skipped when ``--condor-bin`` has no
condor_submit), runtime host (the node's python3 with the runner bundle), run folders under /tmp:

condor-floor    a condor_submit loop of the payload, waiting until condor_q lists none of them
condor-cb       containerbatch, one job per task
condor-cb-array containerbatch, max_array_size=1000 (one cluster of N procs)
condor-cb-tpj   containerbatch, tasks_per_job=100 and max_array_size=1000

Columns: wall seconds, scheduler calls by command (counted through PATH shims), submitter CPU
seconds and peak RSS (of the submitter process and its children that are not jobs: rusage of the
child), and the ratio of the wall to the floor of the same runtime.  Extras: a chain of 10
dependent tasks (seconds per level) and 10,000 trivial tasks on the local scheduler (submitter CPU
per task and RSS), with the node payload stubbed (a shell script writes the result: the submitter
is what is measured) and with tasks_per_job=100 (the real runner).

Not a test: numbers depend on the machine and on slurm.conf (ci/slurm/setup.sh tunes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the checkout's containerbatch, installed or not (the cases run it too)
    sys.path.insert(0, str(ROOT))
IMAGE = "cb-demo:latest"
DOCKER = "/usr/bin/docker"
TOOLS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
CONDOR_TOOLS = ("condor_submit", "condor_q", "condor_history", "condor_rm")
VENVS = Path("/tmp/cb-cache-bench")

SHIM = """#!/bin/bash
printf '%s\\n' "$(basename "$0")" >> "$CB_BENCH_CALLS"
exec "${CB_BENCH_TOOLS:-/usr/bin}/$(basename "$0")" "$@"
"""

WORKFLOW = """
import sys
import luigi

class Trivial(luigi.Task):
    i = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/t_{self.i}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")

class Link(luigi.Task):
    level = luigi.IntParameter()

    def requires(self):
        return Link(level=self.level - 1) if self.level > 1 else []

    def output(self):
        return luigi.LocalTarget(f"results/link_{self.level}.txt")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")

class All(luigi.WrapperTask):
    n = luigi.IntParameter()

    def requires(self):
        return [Trivial(i=i) for i in range(self.n)]
"""

CB_MAIN = """
import sys
import containerbatch
from workflow import All, Link
task = Link(level=int(sys.argv[2])) if sys.argv[1] == "chain" else All(n=int(sys.argv[2]))
ok = containerbatch.process([task], workers=int(sys.argv[3]), log_level="WARNING")
import json, resource
usage = resource.getrusage(resource.RUSAGE_SELF)  # the submitter alone: local jobs are its children
with open("self-usage.json", "w") as handle:
    json.dump({"cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime, "sys": usage.ru_stime,
               "rss_mb": usage.ru_maxrss / 1024}, handle)
sys.exit(0 if ok else 1)
"""

B2LUIGI_MAIN = """
import sys
import b2luigi
from workflow_b2 import All
import os
# b2luigi parses the command line itself and runs this file again on the node: arguments via the environment
mode, n, workers = os.environ["CB_B2_MODE"], int(os.environ["CB_B2_N"]), int(os.environ["CB_B2_WORKERS"])
if mode == "ttl2":
    b2luigi.set_setting("batch_status_cache_ttl", 2)  # b2luigi 1.3.0's job-status cache lives 120 s by default
b2luigi.set_setting("batch_system", "slurm")
b2luigi.set_setting("result_dir", "results")
b2luigi.set_setting("executable", [sys.executable])
b2luigi.process([All(n=n)], workers=workers, batch=True)
"""

LAW_WORKFLOW = """
import os

import law
import luigi

law.contrib.load("slurm")

HERE = os.path.dirname(os.path.abspath(__file__))


class Trivial(law.slurm.SlurmWorkflow, law.LocalWorkflow):
    n = luigi.IntParameter()

    def create_branch_map(self):
        return {i: i for i in range(self.n)}

    def output(self):
        return law.LocalFileTarget(os.path.join(HERE, "results", "t_%d.txt" % self.branch))

    def run(self):
        self.output().dump("ok", formatter="text")

    def slurm_output_directory(self):
        return law.LocalDirectoryTarget(os.path.join(HERE, "law_jobs"))

    def slurm_use_local_scheduler(self):  # the branch tasks on the node: no central luigid here
        return True
"""

# law reads ended jobs from sacct; the benchmark's Slurm has no accounting storage (sacct fails), so law's
# sacct is this stand-in, answering from scontrol (slurmctld keeps ended jobs for MinJobAge = 300 s)
LAW_SACCT = r"""#!/bin/bash
printf 'sacct\n' >> "$CB_BENCH_CALLS"
jobs=""
while [ $# -gt 0 ]; do
    case "$1" in --jobs|-j) jobs="$2"; shift ;; esac
    shift
done
/usr/bin/scontrol -o show job 2>/dev/null | awk -v ids=",$jobs," '{
    id = ""; st = ""; ec = ""; rs = "None"
    for (i = 1; i <= NF; i++) {
        k = $i; sub(/=.*/, "", k); v = substr($i, length(k) + 2)
        if (k == "JobId") id = v; else if (k == "JobState") st = v; else if (k == "ExitCode") ec = v
        else if (k == "Reason") rs = v
    }
    if (id != "" && index(ids, "," id ",")) print id, st, ec, rs
}'
"""

FLOOR = """
import subprocess, sys, time
n, payload = int(sys.argv[1]), sys.argv[2]
ids = []
for _ in range(n):
    out = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", payload],
                         check=True, capture_output=True, text=True).stdout
    ids.append(out.strip().split(";")[0])
while subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True).stdout.strip():
    time.sleep(1)
"""

CONDOR_FLOOR = """
import subprocess, sys, time
n, bundle = int(sys.argv[1]), sys.argv[2]
with open("floor.sub", "w") as handle:
    handle.write(
        "universe = vanilla\\nexecutable = /usr/bin/python3\\narguments = \\"-c 'import luigi'\\"\\n"
        f"environment = \\"PYTHONPATH={bundle}\\"\\noutput = /dev/null\\nerror = /dev/null\\n"
        "should_transfer_files = NO\\nqueue\\n"
    )
ids = []
for _ in range(n):
    out = subprocess.run(["condor_submit", "-terse", "floor.sub"], check=True, capture_output=True, text=True).stdout
    ids.append(out.split()[0].split(".")[0])
while subprocess.run(["condor_q", "-af", "ClusterId", *ids], capture_output=True, text=True).stdout.strip():
    time.sleep(1)
"""

STUB = """#!/bin/sh
# stands in for "python -m containerbatch.runner JOBDIR": the submitter is what is measured
tid=$(sed -n 's/.*"task_id": \\("[^"]*"\\).*/\\1/p' "$3/task.json")
att=$(sed -n 's/.*"attempt": \\([0-9]*\\).*/\\1/p' "$3/task.json")
i=$(sed -n 's/.*"i": "\\([0-9]*\\)".*/\\1/p' "$3/task.json")
if [ -n "$i" ]; then : > "results/t_$i.txt"; fi  # the task's output: the submit side checks it is there
printf '{"status": "success", "task_id": %s, "attempt": %s}' "$tid" "$att" > "$3/result.json"
"""


def run_child(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict[str, float]:
    """Run the submitter; wall, CPU and peak RSS from its rusage."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(cwd / "submitter.log", "w"))
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "ok": float(code == 0),
    }


def prepare(folder: Path, settings: dict[str, object] | None = None) -> dict[str, str]:
    (folder / "results").mkdir(parents=True)
    (folder / "workflow.py").write_text(WORKFLOW)
    (folder / "cb_main.py").write_text(CB_MAIN)
    (folder / "b2luigi_main.py").write_text(B2LUIGI_MAIN)
    (folder / "workflow_b2.py").write_text(WORKFLOW.replace("import luigi", "import b2luigi as luigi"))  # its Task
    (folder / "floor.py").write_text(FLOOR)
    if settings:
        (folder / "settings.json").write_text(json.dumps(settings))
    shims = folder / "shims"
    shims.mkdir()
    for tool in TOOLS + CONDOR_TOOLS:
        (shims / tool).write_text(SHIM)
        (shims / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERBATCH_")}
    env.update(
        PATH=f"{shims}:{env['PATH']}",
        CB_BENCH_CALLS=str(folder / "calls.log"),
        PYTHONPATH=f"{folder}:{ROOT}",
    )
    return env


def calls(folder: Path) -> dict[str, int]:
    log = folder / "calls.log"
    return dict(Counter(log.read_text().split())) if log.exists() else {}


def bundle_path() -> str:
    from containerbatch.bundle import ensure_bundle

    state = Path(tempfile.gettempdir()) / "cb-cache-bench-state"
    state.mkdir(exist_ok=True)
    return ensure_bundle(str(state))


def ensure_venv(name: str, requirements: list[str]) -> Path:
    venv = VENVS / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    return python


def case(name: str, n: int, timeout: float, workers: int) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-bench-{name}-"))
    host = {"batch_system": "slurm", "runtime": "host"}
    settings = {
        "cb-host": host,
        "cb-array": {**host, "max_array_size": 1000},
        "cb-tpj": {**host, "max_array_size": 1000, "tasks_per_job": 100},
        "cb-docker": {"batch_system": "slurm", "runtime": "docker", "image": IMAGE, "docker_binary": DOCKER},
        "chain": host,
    }.get(name)
    env = prepare(folder, settings)
    if name == "floor-host":
        argv = [sys.executable, "floor.py", str(n), f"{sys.executable} -c 'import luigi'"]
    elif name == "floor-docker":
        bundle = bundle_path()
        payload = f"{DOCKER} run --rm -v {bundle}:{bundle}:ro -e PYTHONPATH={bundle} {IMAGE} python3 -c 'import luigi'"
        argv = [sys.executable, "floor.py", str(n), payload]
    elif name.startswith("b2luigi"):
        python = ensure_venv("b2luigi-1.3.0", ["b2luigi==1.3.0"])
        env["PYTHONPATH"] = str(folder)
        env.update(
            CB_B2_MODE="ttl2" if name.endswith("ttl2") else "default", CB_B2_N=str(n), CB_B2_WORKERS=str(workers)
        )
        argv = [str(python), "b2luigi_main.py"]
    elif name.startswith("law"):
        python = ensure_venv("law-0.1.21", ["law==0.1.21"])
        (folder / "workflow_law.py").write_text(LAW_WORKFLOW)
        (folder / "shims" / "sacct").write_text(LAW_SACCT)
        (folder / "shims" / "sacct").chmod(0o755)
        env["PYTHONPATH"] = str(folder)
        env["PATH"] = f"{folder / 'shims'}:{python.parent}:{env['PATH'].split(':', 1)[1]}"
        argv = [
            str(python.parent / "law"),
            "run",
            "workflow_law.Trivial",
            f"--n={n}",
            "--workflow=slurm",
            "--poll-interval=1s",
            f"--tasks-per-job={100 if name == 'law-tpj' else 1}",
            "--retries=0",
            "--local-scheduler",
            "--log-level=WARNING",
        ]
    elif name == "chain":
        argv = [sys.executable, "cb_main.py", "chain", str(n), str(workers)]
    else:
        argv = [sys.executable, "cb_main.py", "all", str(n), str(workers)]
    row: dict[str, object] = {"case": name, "n": n, **run_child(argv, folder, env, timeout), "calls": calls(folder)}
    done = len(list((folder / "results").glob("*.txt")))
    row["done"] = done
    if row["ok"] and name.startswith(("cb", "b2luigi", "law")) and done < n:
        row["ok"] = 0.0
    return finished(row, folder)


def finished(row: dict[str, object], folder: Path) -> dict[str, object]:
    """The case's folder is removed when it went well; a failed case keeps its submitter's log (the table's
    NO is then explained by the last lines, printed here, and by the folder, named in the row)."""
    if row["ok"]:
        shutil.rmtree(folder, ignore_errors=True)
        return row
    log = folder / "submitter.log"
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
    row["kept"] = str(folder)
    print(f"!!! {row['case']} N={row['n']} failed; kept {folder}; last lines of its log:", file=sys.stderr)
    print("\n".join("    " + line for line in tail), file=sys.stderr, flush=True)
    return row


def condor_case(name: str, n: int, timeout: float, workers: int, tools: Path) -> dict[str, object]:
    """``name`` on the real HTCondor pool of ci/htcondor (its tools in ``tools``); the run folder is under
    /tmp, which the pool shares at the same path."""
    folder = Path(tempfile.mkdtemp(prefix=f"scale-bench-{name}-", dir="/tmp"))
    folder.chmod(0o755)
    base = {
        "batch_system": "htcondor",
        "runtime": "host",
        "executable": ["python3"],  # the node's python with the runner bundle (luigi in it)
        "bundle": "always",
        "poll_interval": 1,
        "marker_interval": 1,
    }
    settings = {
        "condor-cb": base,
        "condor-cb-array": {**base, "max_array_size": 1000},
        "condor-cb-tpj": {**base, "max_array_size": 1000, "tasks_per_job": 100},
    }.get(name)
    env = prepare(folder, settings)
    env["CB_BENCH_TOOLS"] = str(tools)
    if name == "condor-floor":
        (folder / "floor.py").write_text(CONDOR_FLOOR)
        argv = [sys.executable, "floor.py", str(n), bundle_path()]
    else:
        argv = [sys.executable, "cb_main.py", "all", str(n), str(workers)]
    row: dict[str, object] = {"case": name, "n": n, **run_child(argv, folder, env, timeout), "calls": calls(folder)}
    done = len(list((folder / "results").glob("*.txt")))
    row["done"] = done
    if row["ok"] and name != "condor-floor" and done < n:
        row["ok"] = 0.0
    return finished(row, folder)


def local_many(n: int, stub: bool, timeout: float) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="scale-bench-local-"))
    settings: dict[str, object] = {"batch_system": "local", "runtime": "host"}
    if stub:
        (folder / "stub.sh").write_text(STUB)
        (folder / "stub.sh").chmod(0o755)
        settings["executable"] = [str(folder / "stub.sh")]
    else:
        settings["tasks_per_job"] = 100
    env = prepare(folder, settings)
    usage = run_child([sys.executable, "cb_main.py", "all", str(n), "200"], folder, env, timeout)
    try:  # without the jobs, which are the submitter's children here
        usage.update(json.loads((folder / "self-usage.json").read_text()))
    except (OSError, ValueError):
        usage["ok"] = 0.0
    label = "local, payload stubbed, one job per task" if stub else "local, tasks_per_job=100, real runner"
    return finished({"case": label, "n": n, **usage, "cpu_ms_per_task": 1000 * usage["cpu"] / n}, folder)


def _kind(case: str) -> str:
    return "condor" if case.startswith("condor") else "docker" if "docker" in case else "host"


def table(rows: list[dict[str, object]], tools: tuple[str, ...] = ("sbatch", "squeue", "sacct", "scontrol")) -> str:
    """One table; ``tools[0]`` is the submit command, the others are status queries."""
    floors = {
        (r["n"], _kind(str(r["case"]))): r["wall"]
        for r in rows
        if str(r["case"]).startswith("floor") or r["case"] == "condor-floor"
    }
    head = ["case", "N", "wall s", "ratio", *tools, "queries/min", "CPU s", "RSS MB", "ok"]
    lines = []
    for r in rows:
        floor = floors.get((r["n"], _kind(str(r["case"]))))
        c = r["calls"]
        assert isinstance(c, dict)
        queries = sum(c.get(t, 0) for t in tools[1:])
        lines.append(
            [
                str(r["case"]),
                str(r["n"]),
                f"{r['wall']:.1f}",
                f"{float(r['wall']) / float(floor):.2f}" if floor else "",  # type: ignore[arg-type]
                *[str(c.get(t, 0)) for t in tools],
                f"{60 * queries / float(r['wall']):.1f}",  # type: ignore[arg-type]
                f"{r['cpu']:.1f}",
                f"{r['rss_mb']:.0f}",
                "yes" if r["ok"] else "NO",
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    rule = "  ".join("=" * w for w in widths)
    out = [rule, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), rule]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join([*out, rule])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="50,200,1000", help="comma-separated task counts")
    parser.add_argument(
        "--cases",
        default="floor-host,floor-docker,cb-host,cb-array,cb-tpj,cb-docker,b2luigi,b2luigi-ttl2,law,law-tpj",
    )
    parser.add_argument("--condor-n", default="50", help="task counts on the HTCondor pool ('' or 0: none)")
    parser.add_argument("--condor-cases", default="condor-floor,condor-cb,condor-cb-array,condor-cb-tpj")
    parser.add_argument(
        "--condor-bin",
        default=os.environ.get("CB_HTCONDOR_BIN") or str(ROOT / "ci" / "htcondor" / "bin"),
        help="the pool's tools (bash ci/htcondor/run.sh up writes them); the pool cases are skipped without",
    )
    parser.add_argument("--small", action="store_true", help="tiny extras (CI: see that it works)")
    parser.add_argument("--no-extras", action="store_true", help="skip the chain and the 10,000 local tasks")
    parser.add_argument(
        "--local-cases",
        default="stub,tpj",
        help="which 10,000-task local runs: stub (payload stubbed, one job per task), tpj (tasks_per_job=100)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--json", help="also write every row to this file")
    parser.add_argument("--from-json", help="only print the table of rows an earlier --json wrote")
    args = parser.parse_args()
    wanted = {c.strip() for c in args.local_cases.split(",") if c.strip()}
    if wanted - {"stub", "tpj"}:
        parser.error(f"--local-cases: unknown {sorted(wanted - {'stub', 'tpj'})}; choose from stub, tpj")
    if args.from_json:
        saved = [r for r in json.loads(Path(args.from_json).read_text()) if "calls" in r and r["case"] != "chain"]
        slurm = [r for r in saved if not str(r["case"]).startswith("condor")]
        pool = [r for r in saved if str(r["case"]).startswith("condor")]
        print("\n\n".join([table(slurm)] * bool(slurm) + [table(pool, CONDOR_TOOLS[:3])] * bool(pool)))
        return 0
    rows = []
    for n in [int(x) for x in args.n.split(",") if x.strip() and int(x)]:
        for name in args.cases.split(","):
            print(f"... {name} N={n}", file=sys.stderr, flush=True)
            rows.append(case(name, n, args.timeout, args.workers))
    pool_rows = []
    tools = Path(args.condor_bin)
    for n in [int(x) for x in args.condor_n.split(",") if x.strip() and int(x)]:
        if not (tools / "condor_submit").exists():
            print(f"no HTCondor pool ({tools}/condor_submit): run `bash ci/htcondor/run.sh up`", file=sys.stderr)
            break
        for name in args.condor_cases.split(","):
            print(f"... {name} N={n} (HTCondor pool)", file=sys.stderr, flush=True)
            pool_rows.append(condor_case(name, n, args.timeout, args.workers, tools))
    print(f"machine: {platform.node()} {platform.platform()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if rows:
        print(table(rows))
    if pool_rows:
        print("\nHTCondor pool (ci/htcondor):")
        print(table(pool_rows, CONDOR_TOOLS[:3]))
    rows += pool_rows
    extras: list[dict[str, object]] = []
    if not args.no_extras:
        levels = 3 if args.small else 10
        chain = case("chain", levels, args.timeout, 10)
        print(
            f"\nchain of {levels} dependent tasks (cb-host): {chain['wall']:.1f} s, "
            f"{float(chain['wall']) / levels:.1f} s per level, sbatch {chain['calls'].get('sbatch', 0)}"
        )  # type: ignore[union-attr]
        extras.append(chain)
        many = 100 if args.small else 10000
        for stub in [s for s in (True, False) if ("stub" if s else "tpj") in wanted]:
            row = local_many(many, stub, args.timeout)
            extras.append(row)
            print(
                f"{row['case']}: N={many} wall {row['wall']:.1f} s, submitter CPU {row['cpu']:.1f} s "
                f"({row['cpu_ms_per_task']:.1f} ms a task), peak RSS {row['rss_mb']:.0f} MB, ok {bool(row['ok'])}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows + extras, indent=1))
    return 0 if all(r["ok"] for r in rows + extras) else 1


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    sys.exit(main())
