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
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
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


def safe_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric entries of a trainer's metrics or summary under MLflow-safe keys (`val_recall_at_1`)."""
    return {metric_key(k): float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def retry(fn: Callable[[], T], what: str, attempts: int = 8, uri: str | None = None) -> T:
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
            retry(lambda: self.client.get_experiment_by_name(experiment), "open store", attempts=5,
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
        return retry(get_or_create, "create experiment")

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
            page = retry(lambda: self.client.search_runs([self.experiment_id], filter_string,
                                                          max_results=1000, page_token=token), "search")
            out.extend(page)
            token = page.token
            if not token:
                return out

    # -- writing ---------------------------------------------------------------------------------
    def create_run(self, name: str, tags: Mapping[str, str]) -> str:
        run = retry(lambda: self.client.create_run(self.experiment_id, tags=dict(tags), run_name=name),
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
            retry(lambda: self.client.log_batch(run_id, metrics=m if i == 0 else [], params=chunk,
                                                 tags=t if i == 0 else []), "log")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path), "log artifacts")
        elif path.exists():
            retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), "log artifact")

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        """Set the sweep status tag and the matching MLflow run state."""
        tags = {STATUS_TAG: status}
        if error is not None:
            tags["vpr.error"] = error
        self.log(run_id, tags=tags)
        mlflow_state = {"finished": "FINISHED", "failed": "FAILED"}.get(status)
        if mlflow_state:
            retry(lambda: self.client.set_terminated(run_id, mlflow_state), "terminate")
        elif status == "running":
            retry(lambda: self.client.update_run(run_id, status="RUNNING"), "update run")

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return retry(lambda: self.client.get_metric_history(run_id, metric_key(key)), "metric history")


def epoch_logger(tracker: Tracker, run_id: str) -> Callable[[int, dict[str, float]], None]:
    """The trainer callback of sweep runs and tuning trials: log an epoch's metrics at step=epoch."""
    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log(run_id, metrics={k: v for k, v in safe_metrics(metrics).items() if k != "epoch"}, step=epoch)
    return log_epoch


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
