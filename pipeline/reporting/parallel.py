"""Draw the report's figures side by side: each figure is independent and matplotlib is
single-threaded, so `vpr report` alone would leave all but one core idle (26 of its 37 s in the
demo were spent in `savefig`).

Worker processes are forked, so they start without re-importing the project; where fork is not
the platform's safe default (macOS, Windows) or one job is asked for, the calls run in order.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator


class _InOrder(Executor):
    """An Executor that runs each call when it is submitted (the one-job fallback)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # delivered by future.result(), as a pool would
            future.set_exception(err)
        return future


def default_jobs() -> int:
    """All cores: the report stage runs alone."""
    return os.cpu_count() or 1


@contextmanager
def figure_pool(jobs: int | None = None) -> Iterator[Executor]:
    """An executor for figure calls: `jobs` forked processes, or in-order calls (see module doc)."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or not sys.platform.startswith("linux"):
        yield _InOrder()
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool
