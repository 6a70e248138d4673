"""Running a built pipeline to the end, and leaving a Dask cluster as we found it.

Beam's Dask runner returns as soon as one task fails, while the cluster's other workers may
still be running shards of the same run; the caller then removes the work folder, and a shard
still writing would make it again (writers create their folders with their parents). So the
steps that write count themselves as running on their worker (:func:`task_of`, keyed by a
run id), and after a failure the run's tasks are cancelled (those not started are dropped) and
the workers are polled until none of the run's steps is still running, as the local process
pool waits for its workers, before the error is raised. The runner's client connection is
closed in all cases: it would otherwise stay open, and a local cluster it started would keep
its processes, until the interpreter exits.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

# Consecutive polls that must find none of the run's steps running: a task handed to a worker
# just before the cancellation reached it has started by the second poll at the latest.
_QUIET_POLLS = 2
_POLL_S = 0.5

# On a worker: how many steps of each run are running now.
_RUNNING: Counter[str] = Counter()
_LOCK = threading.Lock()


def new_run() -> str:
    return uuid.uuid4().hex


def last_line(e: BaseException) -> str:
    """The last line of an error's text (runners wrap a worker's error in pages of their own)."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


@contextlib.contextmanager
def task_of(run: str) -> Iterator[None]:
    """Around a step that writes: counted as running (on this worker) until it ends."""
    with _LOCK:
        _RUNNING[run] += 1
    try:
        yield
    finally:
        with _LOCK:
            _RUNNING[run] -= 1
            if _RUNNING[run] <= 0:
                del _RUNNING[run]


def run_to_end(pipeline: Any, build: Callable[[Any], None], run: str) -> None:
    """``build(pipeline)``, then run it and wait for the end; see the module note."""
    failed = True
    try:
        with pipeline as p:
            build(p)
        failed = False
    finally:
        _close(getattr(pipeline, "result", None), failed, run)


def _close(result: Any, failed: bool, run: str) -> None:
    client = getattr(result, "client", None)  # only the Dask runner's result has one
    if client is None:
        return
    try:
        if failed:
            futures = result.futures
            _wait_for_running_steps(client, list(futures) if isinstance(futures, (list, tuple)) else [futures], run)
    finally:
        client.close()


def _wait_for_running_steps(client: Any, futures: list[Any], run: str) -> None:
    # Defined in here so that it travels by value; it reads this module's counter on the worker,
    # where a step of ours has imported the module (if none has, none of ours ran there).
    def running(run: str, module: str = __name__) -> int:
        import sys

        counts = getattr(sys.modules.get(module), "_RUNNING", None)
        return 0 if counts is None else counts.get(run, 0)

    try:
        client.cancel(futures)
        quiet = 0
        while quiet < _QUIET_POLLS:
            time.sleep(_POLL_S)
            quiet = 0 if any(client.run(running, run).values()) else quiet + 1
    except (OSError, TimeoutError):  # the cluster is gone: nothing of the run can still write
        return
