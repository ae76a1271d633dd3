"""MLflow parent runs: one per study (and one per tuning), under which their runs are listed.

A parent run is RUNNING while a sweep or a tuning works on it and ends with it: FINISHED when
all its runs finished, KILLED when the sweep was interrupted, FAILED otherwise.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pipeline.tracking.store import KIND_TAG, STATUS_TAG, Tracker, retry

log = logging.getLogger(__name__)

STUDY_TAG = "vpr.study"     # on a study's parent run (kind "study"): the study id
TUNING_TAG = "vpr.tuning"   # on a tuning's parent run (kind "tuning") and its trials: the tuning id


def _parent_runs(tracker: Tracker, kind: str, name_tag: str, names: Iterable[str]) -> dict[str, str]:
    """One parent run of `kind` per name (created once, reused and set RUNNING again by reruns)."""
    existing = {r.data.tags.get(name_tag): r for r in tracker.search(f"tags.`{KIND_TAG}` = '{kind}'")}
    out = {}
    for name in names:
        run = existing.get(name)
        if run is None:
            out[name] = tracker.create_run(name, {KIND_TAG: kind, name_tag: name})
            continue
        out[name] = run.info.run_id
        if run.info.status != "RUNNING":
            retry(lambda: tracker.client.update_run(out[name], status="RUNNING"), f"reopen {kind} run")
    return out


def study_parent_runs(tracker: Tracker, studies: Iterable[str]) -> dict[str, str]:
    """One parent MLflow run per study; returns study -> run id. RUNNING until `end_study_runs`."""
    return _parent_runs(tracker, "study", STUDY_TAG, studies)


def tuning_parent_run(tracker: Tracker, tuning_id: str) -> str:
    """The parent MLflow run of a tuning's trials; RUNNING until `end_parent_run`."""
    return _parent_runs(tracker, "tuning", TUNING_TAG, [tuning_id])[tuning_id]


def end_parent_run(tracker: Tracker, run_id: str, status: str) -> None:
    """End a study or tuning parent run as FINISHED, FAILED or KILLED."""
    retry(lambda: tracker.client.set_terminated(run_id, status), "end parent run")


def end_study_runs(tracker: Tracker, hashes_by_study: Mapping[str, Iterable[str]], interrupted: bool) -> dict[str, str]:
    """End each study's parent run: FINISHED when every run of it is finished, else KILLED when the
    sweep was interrupted, FAILED otherwise. Returns study -> status (studies with a parent run)."""
    parents = {r.data.tags.get(STUDY_TAG): r.info.run_id for r in tracker.search(f"tags.`{KIND_TAG}` = 'study'")}
    by_hash = tracker.runs_by_hash()
    ended = {}
    for study, hashes in hashes_by_study.items():
        if study not in parents:
            continue
        done = all(h in by_hash and by_hash[h].data.tags.get(STATUS_TAG) == "finished" for h in hashes)
        ended[study] = "FINISHED" if done else "KILLED" if interrupted else "FAILED"
        end_parent_run(tracker, parents[study], ended[study])
    return ended


@contextmanager
def study_runs_open(tracking_uri: str, experiment: str,
                    hashes_by_study: Mapping[str, Iterable[str]]) -> Iterator[None]:
    """Around a sweep: on the way out (finished, failed, Ctrl-C or SIGTERM) end the studies' parent
    runs by the state of their runs, so none stays RUNNING after the sweep is gone.

    With `--shard`, `hashes_by_study` holds this machine's share; the last machine to end writes last.
    """
    hashes = {s: list(h) for s, h in hashes_by_study.items()}
    restore = _sigterm_as_interrupt()
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        restore()
        ended = end_study_runs(Tracker(tracking_uri, experiment), hashes, interrupted)
        if ended:
            log.info("study runs ended: %s", ended)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM raise KeyboardInterrupt (as Ctrl-C does) in the main thread; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
