"""Where jobs (runs, tuning shares) execute. An executor takes spec files and reports each outcome.

`LocalExecutor` keeps one long-lived worker process per slot (`python -m pipeline.execution.worker`,
started by `pipeline.execution.processes`) and hands it job after job over a pipe, so a job pays
no interpreter start and imports. A worker that dies (killed, out of memory) fails only its
current job; the next job on that slot starts a fresh worker. Guarantees that outlive any
executor live in the run itself: the run folder's lock, its resume checkpoint and the MLflow
record (`pipeline.execution.run`).

`RayExecutor` (`pipeline.execution.ray_executor`) places each job as a Ray task. A new executor
implements `Executor` in its own module; `drain` only calls `slots`, `submit`, `completed`,
`describe` and `close`.
"""

from __future__ import annotations

import select
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from pipeline.execution.processes import cuda_device_count, spawn_worker
from pipeline.execution.protocol import FAILED, OUTCOMES, Outcome

__all__ = ["Executor", "LocalExecutor", "WORKER_MODULE", "drain"]

WORKER_MODULE = "pipeline.execution.worker"


class Executor(Protocol):
    """Executes spec files (`pipeline.execution.protocol`) and reports (key, outcome) as each ends."""

    slots: int

    def submit(self, key: str, spec_path: Path) -> None:
        """Start the job of `spec_path` (the caller never submits more than `slots` at once)."""

    def completed(self, timeout: float) -> list[tuple[str, Outcome]]:
        """(key, outcome) of the jobs that ended, waiting at most `timeout` seconds for one."""

    def describe(self) -> str:
        """Where the jobs run, for the log: one line."""

    def close(self) -> None:
        """Stop every worker (idle ones exit; busy ones are killed)."""


def drain(executor: Executor, jobs: list[tuple[str, Path]], on_done: Callable[[str, Outcome], None]) -> None:
    """Execute `jobs` ((key, spec path), in order) with at most `executor.slots` at once; call
    `on_done(key, outcome)` as each ends. The executor is left open (its owner closes it)."""
    queue, running = list(jobs), set()
    while queue or running:
        while queue and len(running) < executor.slots:
            key, spec_path = queue.pop(0)
            running.add(key)
            executor.submit(key, spec_path)
        for key, outcome in executor.completed(timeout=1.0):
            running.discard(key)
            on_done(key, outcome)


@dataclass
class _Slot:
    proc: subprocess.Popen | None = None
    key: str | None = None
    used: bool = False  # the worker was handed a run (one never handed any is killed at close)


class LocalExecutor:
    """`slots` long-lived worker processes on this machine (one per GPU slot, or sharing the cores).

    `tracking_uri`: the MLflow store the workers open while they warm up (`warm_up`)."""

    def __init__(self, slots: int, tracking_uri: str | None = None) -> None:
        self.slots = slots
        self._devices = cuda_device_count()
        self._slots = [_Slot() for _ in range(slots)]
        self._args = ["--serve"] + ([tracking_uri] if tracking_uri else [])

    def describe(self) -> str:
        """One line for the log."""
        return f"{self.slots} at a time on this machine"

    def start(self) -> None:
        """Start every slot's worker now, so it warms up while the caller still plans."""
        for index in range(self.slots):
            self._worker(index)

    def _worker(self, index: int) -> subprocess.Popen:
        slot = self._slots[index]
        if slot.proc is None or slot.proc.poll() is not None:
            slot.proc = spawn_worker(WORKER_MODULE, self._args, index, self.slots, self._devices,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            slot.used = False
        return slot.proc

    def submit(self, key: str, spec_path: Path) -> None:
        """Hand the spec to an idle slot's worker (starting the worker if it is not running)."""
        index = next(i for i, s in enumerate(self._slots) if s.key is None)
        for attempt in (0, 1):
            proc = self._worker(index)
            try:
                proc.stdin.write(f"{spec_path}\n".encode())
                proc.stdin.flush()
                break
            except BrokenPipeError:  # it died between runs: a fresh worker takes the run
                self._slots[index].proc = None
                if attempt:
                    raise
        self._slots[index].key = key
        self._slots[index].used = True

    def completed(self, timeout: float) -> list[tuple[str, Outcome]]:
        """Replies of busy workers (one line: the outcome); a dead worker fails its job."""
        busy = {s.proc.stdout: s for s in self._slots if s.key is not None and s.proc is not None}
        if not busy:
            return []
        ready, _, _ = select.select(list(busy), [], [], timeout)
        done = []
        for stream in ready:
            slot = busy[stream]
            reply = stream.readline().decode().strip()
            if reply in OUTCOMES:
                outcome: Outcome = reply  # type: ignore[assignment]
            else:  # EOF: the worker died mid-job (a run is then recorded as interrupted)
                slot.proc.wait()
                slot.proc = None
                outcome = FAILED
            done.append((slot.key, outcome))
            slot.key = None
        return done

    def close(self) -> None:
        """Idle workers exit when their input closes; busy ones are killed (runs resume later), and
        so are those never handed a run (they may still be warming up)."""
        for slot in self._slots:
            if slot.proc is None:
                continue
            if slot.key is not None or not slot.used:
                slot.proc.kill()
            else:
                slot.proc.stdin.close()
            slot.proc.wait()
            slot.proc.stdout.close()
            slot.proc = None
