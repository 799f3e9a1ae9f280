"""luigi's in-process scheduler, without its quadratic paths.

luigi's ``Scheduler.get_work`` sorts every pending and running task, walks
them, prunes the whole graph and counts every pending task -- on every call,
and its worker calls it once per task started (and every ``wait_interval``
while it waits).  At 10,000 tasks that is most of the submitter's CPU,
growing with the square of the task count.

:class:`FastScheduler` answers the common case -- one worker that is not an
assistant, no luigi resources, no batchers, not paused -- from a heap of
pending tasks ordered as luigi orders them (priority, then age), and parks a
task whose dependencies are not done under the first one it waits for, to be
woken when that one is done.  Pruning and counting are rate-limited.  Every
other case goes to luigi's own ``get_work`` unchanged.
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any

from luigi.scheduler import DONE, PENDING, RUNNING, Scheduler

__all__ = ["FastScheduler"]

#: seconds between full prunes of the task graph (luigi: every get_work)
PRUNE_EVERY = 5.0
#: seconds a count of pending tasks is reused (it only feeds log lines and keep-alive)
COUNT_EVERY = 10.0


class FastScheduler(Scheduler):
    """A luigi ``Scheduler`` whose ``get_work`` costs about log(n) per call in the common case."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heap: list[tuple[int, float, int, str]] = []
        self._seq = itertools.count()
        self._waiting: dict[str, list[str]] = {}  # dependency id -> ids of tasks parked until it is done
        self._fast = True  # False once a task carries luigi resources or a batcher is registered
        self._last_prune = 0.0
        self._count: tuple[float, str, dict[str, Any]] | None = None
        #: per task: its dependencies in a fixed order and how many of the first ones are known done
        self._deps_done: dict[str, tuple[list[str], int]] = {}
        original = self._state.set_status

        def set_status(task: Any, new_status: str, config: Any = None) -> None:
            was_done = task.status == DONE
            original(task, new_status, config)
            if was_done and task.status != DONE:
                self._deps_done.clear()  # a done task came back: nothing known done is certain
            if task.status == PENDING:
                self._push(task)
            elif task.status == DONE:
                for waiter in self._waiting.pop(task.id, ()):
                    parked = self._state.get_task(waiter, default=None)
                    if parked is not None:
                        self._push(parked)

        self._state.set_status = set_status  # type: ignore[method-assign]

    def _push(self, task: Any) -> None:
        heapq.heappush(self._heap, (-task.priority, task.time, next(self._seq), task.id))

    def _rebuild(self) -> None:
        self._heap = []
        self._waiting = {}
        self._deps_done.clear()
        for task in self._state.get_active_tasks_by_status(PENDING):
            self._push(task)

    # -- what changes the order --------------------------------------------
    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("resources"):
            self._fast = False
        task_id = kwargs.get("task_id")
        before = self._state.get_task(task_id, default=None) if task_id else None
        deps_before = set(before.deps) if before is not None else None
        result = super().add_task(*args, **kwargs)
        task = self._state.get_task(task_id, default=None) if task_id else None
        if task is not None and task.status == PENDING:
            if deps_before is not None and set(task.deps) != deps_before:
                self._rebuild()  # new (dynamic) dependencies: park it again under the right one
            else:
                self._push(task)
        return result

    def _update_priority(self, task: Any, prio: Any, worker: Any) -> None:
        old = task.priority
        super()._update_priority(task, prio, worker)  # walks the dependencies through this method again
        if task.priority != old and task.status == PENDING:
            self._push(task)  # its older entry is stale now and skipped when it comes up

    def add_task_batcher(self, *args: Any, **kwargs: Any) -> Any:
        self._fast = False
        return super().add_task_batcher(*args, **kwargs)

    def prune(self) -> None:
        self._last_prune = time.monotonic()
        super().prune()

    # -- get_work ------------------------------------------------------------
    def get_work(
        self,
        host: Any = None,
        assistant: bool = False,
        current_tasks: Any = None,
        worker: Any = None,
        **kwargs: Any,
    ) -> Any:
        workers = list(self._state.get_active_workers())
        fast = (
            self._fast
            and not assistant
            and not self._paused
            and current_tasks is not None
            and all(w.id == worker for w in workers)
        )
        if not fast:
            return super().get_work(
                host=host, assistant=assistant, current_tasks=current_tasks, worker=worker, **kwargs
            )
        if self._config.prune_on_get_work and time.monotonic() - self._last_prune >= PRUNE_EVERY:
            self.prune()
        assert worker is not None
        state = self._update_worker(worker, worker_reference={"host": host}, get_work=True)
        if not state.enabled:
            return {
                "n_pending_tasks": 0,
                "running_tasks": [],
                "task_id": None,
                "n_unique_pending": 0,
                "worker_state": state.state,
            }
        best = None
        claimed = set(current_tasks)
        for task in sorted(self._state.get_active_tasks_by_status(RUNNING), key=self._rank):
            if task.worker_running == worker and task.id not in claimed:
                best = task  # luigi hands a task it already marked running back first
        self._reset_orphaned_batch_running_tasks(worker)
        while best is None and self._heap:
            neg_priority, *_, task_id = heapq.heappop(self._heap)
            task = self._state.get_task(task_id, default=None)
            if task is None or task.status != PENDING or worker not in task.workers or -neg_priority != task.priority:
                continue
            blocker = self._blocker(task)
            if blocker is None:
                best = task
            else:
                self._waiting.setdefault(blocker, []).append(task.id)
        reply = self._pending_count(worker, fresh=best is None and not claimed)
        if best is None:
            reply["task_id"] = None
            return reply
        self.update_metrics_task_started(best)
        self._state.set_status(best, RUNNING, self._config)
        best.worker_running = worker
        best.resources_running = best.resources.copy()
        best.time_running = time.time()
        self._update_task_history(best, RUNNING, host=host)
        reply["task_id"] = best.id
        reply["task_family"] = best.family
        reply["task_module"] = getattr(best, "module", None)
        reply["task_params"] = best.params
        return reply

    def _blocker(self, task: Any) -> str | None:
        """The first dependency of ``task`` that is not done (a missing one counts), else None.

        Dependencies found done are not looked at again: a task that waits for 10,000 others costs
        10,000 looks in all, not 10,000 each time one of them ends."""
        deps, known = self._deps_done.get(task.id) or (sorted(task.deps), 0)
        while known < len(deps):
            dep_task = self._state.get_task(deps[known], default=None)
            if dep_task is None or dep_task.status != DONE:
                self._deps_done[task.id] = (deps, known)
                return str(deps[known])
            known += 1
        self._deps_done.pop(task.id, None)
        return None

    def _pending_count(self, worker: str, fresh: bool) -> dict[str, Any]:
        now = time.monotonic()
        if fresh or self._count is None or self._count[1] != worker or now - self._count[0] >= COUNT_EVERY:
            self._count = (now, worker, self.count_pending(worker))
        return dict(self._count[2])
