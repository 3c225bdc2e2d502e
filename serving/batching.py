"""Server-side batching for the local server, as TF Serving's `--enable_batching` does it.

Called by serving/local_server.py when it runs with --enable-batching. Requests for the
same loaded version and signature wait in one queue; a batch is run, as ONE graph call, by
one of `num_batch_threads` threads when it is full or `batch_timeout_micros` after its first
request arrived, and each request gets back its own rows of the outputs. Joining requests
pays because a graph call's fixed cost (the decoding loop's steps, the backbone's ops) is
shared by every image in it. A request that does not fit the open batch starts the next
one; more than `max_enqueued_batches` waiting batches in a queue get 503 (TF Serving's
UNAVAILABLE). When a batch of several requests fails, each is run again on its own, so a
bad image fails only the request that sent it. Pure Python: the graph call and the split of
its outputs are the caller's (`Job`), so this is tested without a model too.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Hashable, Mapping, Sequence

from serving.batching_parameters import BatchingParameters
from serving.rest import RestError

log = logging.getLogger(__name__)

Inputs = Mapping[str, Sequence[bytes]]
Outputs = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Job:
    """What one queue runs: `execute(inputs) -> outputs` over a whole batch, and
    `split(outputs, sizes)`, which gives each request (of sizes[i] images, in order) its rows."""

    key: Hashable  # e.g. (the loaded version, signature name): one queue per key
    execute: Callable[[Inputs], Outputs]
    split: Callable[[Outputs, list[int]], list[Outputs]]


@dataclasses.dataclass(frozen=True)
class Served:
    """A request's outputs and how it was batched (for the access log and the benchmark)."""

    outputs: Outputs
    queued_seconds: float  # from enqueueing to its batch starting to run
    batch_requests: int
    batch_images: int  # without the padding to an allowed batch size


class _Task:
    def __init__(self, inputs: Inputs, size: int, now: float):
        self.inputs, self.size, self.enqueued = inputs, size, now
        self.done = threading.Event()
        self.outputs: Outputs | None = None
        self.error: BaseException | None = None
        self.started = now
        self.batch = (1, size)


class _Batch:
    def __init__(self, job: Job, now: float):
        self.job, self.opened = job, now
        self.tasks: list[_Task] = []
        self.size = 0


class BatchScheduler:
    """Queues per Job key, shared batch threads (TF Serving's SharedBatchScheduler)."""

    def __init__(self, params: BatchingParameters, clock: Callable[[], float] = time.monotonic):
        self.params = params
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[Hashable, collections.deque[_Batch]] = {}
        self._stopping = False
        self.batches_run = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{params.thread_pool_name}-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job, inputs: Inputs) -> Served:
        """Queues one request of at most `execution_batch_size` images and waits for its outputs
        (or raises its own error)."""
        size = max(len(values) for values in inputs.values())
        limit = self.params.execution_batch_size
        if size > limit:
            raise ValueError(f"a request of {size} images does not fit a batch of {limit}; run it on its own")
        with self._cond:
            if self._stopping:
                raise RestError(503, "The server is shutting down")
            now = self._clock()
            task = _Task(inputs, size, now)
            queue = self._queues.setdefault(job.key, collections.deque())
            if not queue or queue[-1].size + size > limit:
                if len(queue) >= self.params.max_enqueued_batches:
                    raise RestError(503, "The batch scheduling queue to which this task was submitted is full; try again later")
                queue.append(_Batch(job, now))
            queue[-1].tasks.append(task)
            queue[-1].size += size
            self._cond.notify_all()  # a full batch is ready now; an idle thread may be waiting for a timeout
        task.done.wait()
        if task.error is not None:
            raise task.error
        return Served(task.outputs, task.started - task.enqueued, *task.batch)

    def stop(self) -> None:
        """Lets the running batches finish; requests still queued get 503."""
        with self._cond:
            self._stopping = True
            waiting = [task for queue in self._queues.values() for batch in queue for task in batch.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for task in waiting:
            task.error = RestError(503, "The server is shutting down")
            task.done.set()
        for thread in self._threads:
            thread.join(timeout=30)

    # ------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            self._run(batch)

    def _next_batch(self) -> _Batch | None:
        """Waits (holding the condition) for the ready batch whose first request came first."""
        timeout, limit = self.params.batch_timeout_seconds, self.params.execution_batch_size
        while not self._stopping:
            now = self._clock()
            ready, wake = None, None
            for key, queue in self._queues.items():
                first = queue[0]
                if len(queue) > 1 or first.size >= limit or now - first.opened >= timeout:
                    if ready is None or first.opened < ready[1].opened:
                        ready = (key, first)
                else:
                    due = first.opened + timeout - now
                    wake = due if wake is None else min(wake, due)
            if ready is not None:
                key, batch = ready
                queue = self._queues[key]
                queue.popleft()
                if not queue:
                    del self._queues[key]
                return batch
            self._cond.wait(wake)
        return None

    def _run(self, batch: _Batch) -> None:
        started = self._clock()
        for task in batch.tasks:
            task.started, task.batch = started, (len(batch.tasks), batch.size)
        try:
            self._execute(batch.job, batch.tasks)
        except Exception as error:  # noqa: BLE001 (whatever failed, each request gets its own answer)
            if len(batch.tasks) == 1:
                batch.tasks[0].error = error
            else:
                log.info("a batch of %d requests failed (%s); running them one at a time", len(batch.tasks), error)
                for task in batch.tasks:
                    task.batch = (1, task.size)
                    try:
                        self._execute(batch.job, [task])
                    except Exception as alone:  # noqa: BLE001
                        task.error = alone
        finally:
            with self._cond:
                self.batches_run += 1
            for task in batch.tasks:
                task.done.set()

    def _execute(self, job: Job, tasks: list[_Task]) -> None:
        """One graph call for the tasks; each gets its rows. The batch is padded up to the next
        allowed batch size with copies of its first image (TF Serving's padding), rows dropped after."""
        names = list(tasks[0].inputs)
        inputs = {name: [value for task in tasks for value in task.inputs[name]] for name in names}
        sizes = [task.size for task in tasks]
        padding = _padding(sum(sizes), self.params.allowed_batch_sizes)
        if padding:
            inputs = {name: values + [values[0]] * padding for name, values in inputs.items()}
            sizes.append(padding)
        parts = job.split(job.execute(inputs), sizes)
        for task, outputs in zip(tasks, parts):
            task.outputs = outputs


def _padding(size: int, allowed: Sequence[int]) -> int:
    """How many rows to add so the batch is an allowed size (none when any size is allowed)."""
    for allowed_size in allowed:
        if allowed_size >= size:
            return allowed_size - size
    return 0
