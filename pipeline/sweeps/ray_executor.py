"""`RayExecutor`: a sweep's runs as Ray tasks on a Ray cluster (`vpr sweep run --ray ADDRESS`).

Ray places each run on a node with the resources it asks for (a GPU, or a fraction of one, on GPU
nodes; CPUs on CPU nodes) and, when a node dies, retries the task it was running on another node
(`max_retries`: Ray's fault tolerance for system failures; a Python error is a recorded run
failure and is never retried). The retried attempt resumes from the run's last epoch checkpoint
when `runs/` is on storage every node sees, and starts the run over otherwise. Which attempt may
execute a run is decided by its claim in the shared MLflow store (`pipeline.sweeps.lease`), not by
Ray or by one machine's disk, so a run never executes twice at once.

Ray is an optional dependency: `pip install -e '.[ray]'`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sweeps.executors import BUSY

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


def _run_on_node(spec_path: str, project_dir: str, threads: int) -> int:
    """Body of one Ray task: execute one run in this (long-lived) Ray worker process."""
    import ray
    import torch

    from pipeline.sweeps.worker import output_to, run_one

    os.chdir(project_dir)  # runs/, the SQLite store and dataset roots resolve as on the driver
    torch.set_num_threads(max(1, threads))
    tags = {NODE_TAG: ray.get_runtime_context().get_node_id()}
    deadline = time.time() + LEASE_WAIT_S
    run_dir = Path(spec_path).parent
    while True:
        with output_to(run_dir / "worker.log"):
            code = run_one(spec_path, tags=tags)
        if code != BUSY or time.time() > deadline:
            return code
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
        """One line for the sweep's log."""
        return f"Ray cluster: {self.cpus:g} CPU and {self.gpus:g} GPU per run"

    def submit(self, key: str, spec_path: Path) -> None:
        """Queue the run of `spec_path` as a Ray task."""
        ref = self._task.remote(str(spec_path), os.getcwd(), max(1, int(self.cpus)))
        self._pending[ref] = key

    def completed(self, timeout: float) -> list[tuple[str, int]]:
        """(key, code) of tasks that ended; a task lost to more node deaths than allowed fails."""
        if not self._pending:
            return []
        done, _ = self._ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout)
        out = []
        for ref in done:
            key = self._pending.pop(ref)
            try:
                out.append((key, int(self._ray.get(ref))))
            except self._ray.exceptions.RayError:
                out.append((key, 1))
        return out

    def close(self) -> None:
        """Cancel what is still queued or running (interrupted runs resume on the next sweep)."""
        for ref in self._pending:
            self._ray.cancel(ref, force=True)
        self._pending.clear()


def _tuning_worker_on_node(spec_paths: list[str], index: int, project_dir: str, threads: int) -> list[str]:
    """Body of one Ray task: one tuning worker (`pipeline.sweeps.tune_worker`) on this node."""
    import torch

    from pipeline.sweeps import tune_worker

    os.chdir(project_dir)
    torch.set_num_threads(max(1, threads))
    return tune_worker.run_specs(spec_paths, index)


def run_tuning_workers_on_ray(address: str, spec_paths: list[Path], workers: int, cpus: float | None = None,
                              gpus: float | None = None) -> list[list[str | None]]:
    """Run `workers` tuning workers as Ray tasks sharing the tunings' Optuna storage; per worker,
    its outcome of each tuning (`tune_worker.OK` or `FAILED`; None for a worker lost for good).

    A worker lost with its node is retried (Optuna marks its running trial failed when the study is
    reopened, as for a killed local worker); the storage must be one every node reaches (RDB)."""
    executor = RayExecutor(address, cpus=cpus, gpus=gpus)
    ray = executor._ray
    task = ray.remote(_tuning_worker_on_node).options(
        num_cpus=executor.cpus, num_gpus=executor.gpus, max_retries=MAX_NODE_FAILURES, retry_exceptions=False)
    refs = [task.remote([str(p) for p in spec_paths], i, os.getcwd(), max(1, int(executor.cpus)))
            for i in range(workers)]
    print(f"{workers} tuning worker(s) as Ray tasks on {address} ({executor.cpus:g} CPU, "
          f"{executor.gpus:g} GPU each)", flush=True)
    outcomes: list[list[str | None]] = []
    for ref in refs:
        try:
            outcomes.append(list(ray.get(ref)))
        except ray.exceptions.RayError:
            outcomes.append([None] * len(spec_paths))
    return outcomes
