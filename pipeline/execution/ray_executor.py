"""`RayExecutor`: jobs as Ray tasks on a Ray cluster (`vpr sweep run --ray`, `vpr tune run --ray`).

Ray places each run on a node with the resources it asks for (a GPU, or a fraction of one, on GPU
nodes; CPUs on CPU nodes) and, when a node dies, retries the task it was running on another node
(`max_retries`: Ray's fault tolerance for system failures; a Python error is a recorded run
failure and is never retried). The retried attempt resumes from the run's last epoch checkpoint
when `runs/` is on storage every node sees, and starts the run over otherwise. Which attempt may
execute a run is decided by its claim in the shared MLflow store (`pipeline.tracking.lease`), not by
Ray or by one machine's disk, so a run never executes twice at once.

A tuning share (`TuningSpec`) is a job like a run: a worker lost with its node is retried, and
Optuna marks its running trial failed when the study is next opened; its storage must be one
every node reaches (an RDB).

Ray is an optional dependency: `pip install -e '.[ray]'`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.execution.protocol import BUSY, FAILED, Outcome

NODE_TAG = "vpr.ray_node"
MAX_NODE_FAILURES = 3  # node deaths one run survives
LEASE_WAIT_S = 900.0   # how long a retried attempt waits for a dead attempt's claim to go stale


class RayUnavailable(UserError):
    """Ray is not installed, or no cluster answers at the address."""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "ray://...": left to Ray
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise RayUnavailable(f"--ray {address}: nothing answers there ({err.strerror or err}); start the head "
                             "with `ray start --head --port=6379` (README, Several machines)") from None


def _run_on_node(spec_path: str, project_dir: str, threads: int) -> Outcome:
    """Body of one Ray task: execute one job in this (long-lived) Ray worker process."""
    import ray
    import torch

    from pipeline.execution.worker import execute_logged

    os.chdir(project_dir)  # runs/, the SQLite store and dataset roots resolve as on the driver
    torch.set_num_threads(max(1, threads))
    tags = {NODE_TAG: ray.get_runtime_context().get_node_id()}
    deadline = time.time() + LEASE_WAIT_S
    while True:
        outcome = execute_logged(spec_path, tags=tags)
        if outcome != BUSY or time.time() > deadline:
            return outcome
        time.sleep(5)  # the holder is alive, or died less than a lease ago: wait, then claim


class RayExecutor:
    """Submits each run as a Ray task; Ray queues what the cluster cannot place yet."""

    def __init__(self, address: str, cpus: float | None = None, gpus: float | None = None,
                 slots: int = 100_000) -> None:
        try:
            import ray
        except ImportError:
            raise RayUnavailable("--ray needs Ray: pip install -e '.[ray]'") from None
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RayUnavailable(f"--ray {address}: no Ray cluster answers ({err}); start one with "
                                 "`ray start --head` (README, Several machines)") from None
        self._ray = ray
        self.address = address
        total = ray.cluster_resources()
        self.gpus = gpus if gpus is not None else (1.0 if total.get("GPU", 0) >= 1 else 0.0)
        self.cpus = cpus if cpus is not None else 1.0
        if self.gpus > total.get("GPU", 0) or self.cpus > total.get("CPU", 0):
            raise RayUnavailable(f"a run asks for {self.cpus:g} CPU and {self.gpus:g} GPU; the Ray cluster at "
                                 f"{address} has {total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU")
        self.slots = slots
        self._task = ray.remote(_run_on_node).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=MAX_NODE_FAILURES, retry_exceptions=False)
        self._pending: dict[Any, str] = {}

    def describe(self) -> str:
        """One line for the log."""
        return f"as Ray tasks on {self.address} ({self.cpus:g} CPU, {self.gpus:g} GPU each)"

    def submit(self, key: str, spec_path: Path) -> None:
        """Queue the job of `spec_path` as a Ray task."""
        ref = self._task.remote(str(spec_path), os.getcwd(), max(1, int(self.cpus)))
        self._pending[ref] = key

    def completed(self, timeout: float) -> list[tuple[str, Outcome]]:
        """(key, code) of tasks that ended; a task lost to more node deaths than allowed fails."""
        if not self._pending:
            return []
        done, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout)
        out = []
        for ref in done:
            key = self._pending.pop(ref)
            try:
                out.append((key, self._ray.get(ref)))
            except self._ray.exceptions.RayError:
                out.append((key, FAILED))
        return out

    def close(self) -> None:
        """Cancel what is still queued or running (interrupted runs resume on the next sweep)."""
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()
