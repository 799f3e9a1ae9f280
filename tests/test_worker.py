"""The luigi side: tasks in flight cost no thread or process of their own on the submitting host."""

import json
import threading
import time

from containerbatch.cli.common import build_task
from containerbatch.worker import process

WORKFLOW = """
import time
import luigi

class Nap(luigi.Task):
    i = luigi.IntParameter()
    runtime = "host"

    def output(self):
        return luigi.LocalTarget(f"results/nap_{self.i}")

    def run(self):
        time.sleep(4)  # longer than 40 interpreters take to start on 2 cores: the runs must overlap
        with self.output().open("w") as handle:
            handle.write(str(self.i))


class Many(luigi.Task):
    n = luigi.IntParameter()
    runtime = "host"

    def requires(self):
        return [Nap(i=i) for i in range(self.n)]

    def output(self):
        return luigi.LocalTarget("results/many")

    def run(self):
        with self.output().open("w") as handle:
            handle.write("ok")
"""


def test_many_workers_few_threads(workdir):
    (workdir / "naps.py").write_text(WORKFLOW)
    task = build_task(str(workdir / "naps.py"), ["Many", "--n", "40"])
    peak = [threading.active_count()]
    names: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if threading.active_count() > peak[0]:
                peak[0] = threading.active_count()
                names[:] = [t.name for t in threading.enumerate()]
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    base = threading.active_count()
    watcher.start()
    try:
        assert process([task], workers=40) is True
    finally:
        stop.set()
        watcher.join()
    # the watcher, luigi's keep-alive thread and its result queue's feeder, and
    # the one shared poller: none per task, with 40 tasks in flight
    assert peak[0] <= base + 4, names
    # and the 40 jobs really were in flight together: their run intervals overlap
    results = [json.loads(p.read_text()) for p in (workdir / "logs" / "Nap").rglob("result.json")]
    assert len(results) == 40
    latest_start = max(r["started"] for r in results)
    earliest_end = min(r["finished"] for r in results)
    assert latest_start < earliest_end
