"""MLflow as the system of record: store location, experiments, one MLflow run per config hash.

Default store: `sqlite:///<project>/mlflow.db` with artifacts in `<project>/mlartifacts`
(MLflow refuses the plain file store now). `MLFLOW_TRACKING_URI` points every process at a shared
server instead. The store and the experiment are created by `init_store` in the parent process
before workers start, so concurrent workers never race on schema creation; every write goes
through `_retry`, so a briefly locked SQLite database costs a wait, never a failed run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import UserError

log = logging.getLogger(__name__)

EXPERIMENT = "vpr-sweep"
STATUS_TAG = "vpr.status"          # new | running | finished | failed
HASH_TAG = "vpr.config_hash"
KIND_TAG = "vpr.kind"              # run | study
# The MLflow UI opens an experiment on the page its kind names; without the tag, MLflow 3 shows its
# GenAI overview (traces, tokens) instead of the runs table.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
T = TypeVar("T")


def default_tracking_uri(project_dir: str | Path = ".") -> str:
    """`MLFLOW_TRACKING_URI` if set, else the project's SQLite store."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def default_artifact_root(project_dir: str | Path = ".") -> str:
    return (Path(project_dir).resolve() / "mlartifacts").as_uri()


class TrackingStoreError(UserError):
    """The MLflow store (a server, a database) stayed unreachable: the user starts it or fixes the URI."""


def metric_key(name: str) -> str:
    """The MLflow-safe form of a metric name ('@' is forbidden in keys: 'recall@1' -> 'recall_at_1').

    Names of Recall@N come from `pipeline.data.catalog.recall_metric` and are safe already; this
    only guards names built elsewhere, so a stray '@' never makes MLflow reject a whole batch.
    """
    return name.replace("@", "_at_")


def _retry(fn: Callable[[], T], what: str, attempts: int = 8, uri: str | None = None) -> T:
    """Call `fn`, retrying on transient store errors (SQLite 'database is locked', HTTP hiccups).

    A store still unreachable after the last attempt is a `TrackingStoreError` naming `uri`.
    """
    delay = 0.2
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # MLflow wraps store errors in several exception types
            text = str(err).lower()
            transient = any(s in text for s in ("locked", "busy", "timeout", "temporarily", "connection"))
            if not transient:
                raise
            if attempt == attempts - 1:
                if uri is not None and "connection" in text:
                    raise TrackingStoreError(
                        f"MLflow store {uri} unreachable ({what}): start the tracking server or fix "
                        f"MLFLOW_TRACKING_URI") from err
                raise
            log.warning("MLflow %s failed (%s); retrying in %.1f s", what, err, delay)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


class Tracker:
    """Thin, retrying wrapper over `MlflowClient` with the sweep's conventions."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 artifact_root: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        with _sqlite_init_lock(self.tracking_uri):  # the client creates the schema on construction
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            _retry(lambda: self.client.get_experiment_by_name(experiment), "open store", attempts=5,
                   uri=self.tracking_uri)
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self._experiment_id: str | None = None

    # -- store and experiment ----------------------------------------------------------------
    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.ensure_experiment()
        return self._experiment_id

    def ensure_experiment(self) -> str:
        """Create the experiment (and with it the SQLite schema) if missing; return its id."""
        def get_or_create() -> str:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # stores made before the tag
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return exp.experiment_id
            try:
                location = self.artifact_root
                if location is None and self.tracking_uri.startswith("sqlite:"):
                    location = default_artifact_root(Path(self.tracking_uri[len("sqlite:///"):]).parent)
                return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception:
                exp = self.client.get_experiment_by_name(self.experiment_name)  # created concurrently
                if exp is None:
                    raise
                return exp.experiment_id
        return _retry(get_or_create, "create experiment")

    # -- finding runs --------------------------------------------------------------------------
    def runs_by_hash(self, kind: str = "run") -> dict[str, Any]:
        """Latest MLflow run per config hash (prefer a finished one)."""
        runs = self.search(f"tags.`{KIND_TAG}` = '{kind}'")
        best: dict[str, Any] = {}
        for run in sorted(runs, key=lambda r: r.info.start_time or 0):
            h = run.data.tags.get(HASH_TAG)
            if h is None:
                continue
            if best.get(h) is not None and best[h].data.tags.get(STATUS_TAG) == "finished":
                continue  # never let a later unfinished duplicate hide a finished run
            best[h] = run
        return best

    def search(self, filter_string: str) -> list[Any]:
        out, token = [], None
        while True:
            page = _retry(lambda: self.client.search_runs([self.experiment_id], filter_string,
                                                          max_results=1000, page_token=token), "search")
            out.extend(page)
            token = page.token
            if not token:
                return out

    # -- writing ---------------------------------------------------------------------------------
    def create_run(self, name: str, tags: Mapping[str, str]) -> str:
        run = _retry(lambda: self.client.create_run(self.experiment_id, tags=dict(tags), run_name=name),
                     "create run")
        return run.info.run_id

    def log(self, run_id: str, metrics: Mapping[str, float] | None = None, step: int | None = None,
            params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        m = [Metric(metric_key(k), float(v), now, step or 0) for k, v in (metrics or {}).items()
             if isinstance(v, (int, float))]
        p = [Param(k, _param_value(v)) for k, v in (params or {}).items()]
        t = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        for i in range(0, max(len(p), 1), 100):  # MLflow caps params per batch at 100
            chunk = p[i:i + 100]
            _retry(lambda: self.client.log_batch(run_id, metrics=m if i == 0 else [], params=chunk,
                                                 tags=t if i == 0 else []), "log")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            _retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), "log artifacts")
        elif path.exists():
            _retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), "log artifact")

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Set the sweep status tag and the matching MLflow run state."""
        tags = {STATUS_TAG: status}
        if error is not None:
            tags["vpr.error"] = error
        self.log(run_id, tags=tags)
        mlflow_state = {"finished": "FINISHED", "failed": "FAILED"}.get(status)
        if mlflow_state:
            _retry(lambda: self.client.set_terminated(run_id, mlflow_state), "terminate")
        elif status == "running":
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"), "update run")

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return _retry(lambda: self.client.get_metric_history(run_id, metric_key(key)), "metric history")


@contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """Serialise first contact with a SQLite store: MLflow creates its schema on first use, and two
    processes doing that at once collide. Other stores (servers, PostgreSQL) need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def git_commit(cwd: str | Path = ".") -> str:
    """The project's current commit (with '-dirty' if there are uncommitted changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def study_parent_runs(tracker: Tracker, studies: Iterable[str]) -> dict[str, str]:
    """One parent MLflow run per study (created once, reused by reruns); returns study -> run id.

    A reused parent is RUNNING again until `end_study_runs` ends it.
    """
    existing = {r.data.tags.get("vpr.study"): r for r in tracker.search(f"tags.`{KIND_TAG}` = 'study'")}
    out = {}
    for study in studies:
        run = existing.get(study)
        if run is None:
            out[study] = tracker.create_run(study, {KIND_TAG: "study", "vpr.study": study})
            continue
        out[study] = run.info.run_id
        if run.info.status != "RUNNING":
            _retry(lambda: tracker.client.update_run(out[study], status="RUNNING"), "reopen study run")
    return out


def end_parent_run(tracker: Tracker, run_id: str, status: str) -> None:
    """End a study or tuning parent run as FINISHED, FAILED or KILLED."""
    _retry(lambda: tracker.client.set_terminated(run_id, status), "end parent run")


def end_study_runs(tracker: Tracker, hashes_by_study: Mapping[str, Iterable[str]], interrupted: bool) -> dict[str, str]:
    """End each study's parent run: FINISHED when every run of it is finished, else KILLED when the
    sweep was interrupted, FAILED otherwise. Returns study -> status (studies with a parent run)."""
    parents = {r.data.tags.get("vpr.study"): r.info.run_id for r in tracker.search(f"tags.`{KIND_TAG}` = 'study'")}
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
