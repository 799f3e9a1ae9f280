"""FastScheduler hands out the same work as luigi's Scheduler (priority, age, dependencies, failures,
dynamic dependencies), just without looking at every task on every call."""

from __future__ import annotations

import luigi
import luigi.interface
import luigi.scheduler
import luigi.worker
import pytest

from containerbatch.luigisched import FastScheduler

ORDER: list[str] = []
FAIL: set[str] = set()


class Leaf(luigi.Task):
    name = luigi.Parameter()
    prio = luigi.IntParameter(default=0)

    @property
    def priority(self):
        return self.prio

    def complete(self):
        return self.name in ORDER

    def run(self):
        if self.name in FAIL:
            raise RuntimeError("fails on purpose")
        ORDER.append(self.name)


class Mid(luigi.Task):
    name = luigi.Parameter()
    leaves = luigi.ListParameter()

    def requires(self):
        return [Leaf(name=n) for n in self.leaves]

    def complete(self):
        return self.name in ORDER

    def run(self):
        ORDER.append(self.name)


class Dyn(luigi.Task):
    def complete(self):
        return "dyn" in ORDER

    def run(self):
        yield Leaf(name="dyn-leaf")
        ORDER.append("dyn")


class Top(luigi.WrapperTask):
    def requires(self):
        return [
            Mid(name="m1", leaves=["a", "b"]),
            Mid(name="m2", leaves=["b", "c", "f"]),
            Leaf(name="urgent", prio=10),
            Dyn(),
        ]


def build(scheduler_cls: type) -> tuple[list[str], bool]:
    ORDER.clear()
    scheduler = scheduler_cls(prune_on_get_work=True, record_task_history=False)
    with luigi.worker.Worker(scheduler=scheduler, worker_processes=1) as worker:
        worker.add(Top())
        ok = worker.run()
    return list(ORDER), ok


@pytest.mark.parametrize("failing", [set(), {"f"}])
def test_same_work_in_the_same_order_as_luigi(failing):
    FAIL.clear()
    FAIL.update(failing)
    expected = build(luigi.scheduler.Scheduler)
    got = build(FastScheduler)
    assert got == expected
    assert got[0][0] == "urgent"  # the highest priority first
    if failing:
        assert not got[1] and "m2" not in got[0] and "m1" in got[0]  # m2 waits for f, which failed


def test_a_task_waiting_for_many_looks_at_each_dependency_once_in_all(monkeypatch):
    scheduler = FastScheduler(prune_on_get_work=True, record_task_history=False)
    looks = [0]
    original = scheduler._state.get_task

    def counting(task_id, default=None, setdefault=None):
        looks[0] += 1
        return original(task_id, default=default, setdefault=setdefault)

    n = 300
    for i in range(n):
        scheduler.add_task(worker="w", task_id=f"leaf{i}", status="PENDING")
    scheduler.add_task(worker="w", task_id="top", status="PENDING", deps=[f"leaf{i}" for i in range(n)])
    monkeypatch.setattr(scheduler._state, "get_task", counting)
    started = 0
    while True:
        reply = scheduler.get_work(worker="w", current_tasks=[])
        if reply["task_id"] is None:
            break
        started += 1
        scheduler.add_task(worker="w", task_id=reply["task_id"], status="DONE")
    assert started == n + 1
    # luigi's own get_work looks at every dependency of `top` on each call: ~n*n/2 looks
    assert looks[0] < 20 * n, looks[0]
