"""Where a sweep's runs execute. An executor takes run specs and reports each run's outcome.

`LocalExecutor` (today's only one) keeps one long-lived worker process per slot
(`python -m pipeline.sweeps.worker`, started by `pipeline.sweeps.processes`) and hands it run
after run over a pipe, so a run pays no interpreter start and imports. A worker that dies
(killed, out of memory) fails only its current run; the next run on that slot starts a fresh
worker. Guarantees that outlive any executor live in the run itself: the run folder's lock, its
resume checkpoint and the MLflow record (`pipeline.sweeps.execute`).

A new executor (e.g. Ray: one task per run, resources per task) implements `Executor` in its own
module; the runner only calls `slots`, `submit`, `completed` and `close`.
"""

from __future__ import annotations

import select
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.sweeps.processes import cuda_device_count, spawn_worker

__all__ = ["BUSY", "FINISHED", "Executor", "LocalExecutor", "outcome_of"]

FINISHED, BUSY = 0, 3  # worker exit/reply codes: finished; another process holds the run


def outcome_of(code: int) -> str:
    """A worker's reply code as the sweep reports it: finished, busy or failed."""
    return {FINISHED: "finished", BUSY: "busy"}.get(code, "failed")


class Executor(Protocol):
    """Runs specs (files written by the runner) and reports (key, reply code) when each ends."""

    slots: int

    def submit(self, key: str, spec_path: Path) -> None:
        """Start the run of `spec_path` (the caller never submits more than `slots` at once)."""

    def completed(self, timeout: float) -> list[tuple[str, int]]:
        """(key, code) of the runs that ended, waiting at most `timeout` seconds for one."""

    def close(self) -> None:
        """Stop every worker (idle ones exit; busy ones are killed)."""


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

    def start(self) -> None:
        """Start every slot's worker now, so it warms up while the caller still plans."""
        for index in range(self.slots):
            self._worker(index)

    def _worker(self, index: int) -> subprocess.Popen:
        slot = self._slots[index]
        if slot.proc is None or slot.proc.poll() is not None:
            slot.proc = spawn_worker("pipeline.sweeps.worker", self._args, index, self.slots, self._devices,
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

    def completed(self, timeout: float) -> list[tuple[str, int]]:
        """Replies of busy workers (one line: the run's code); a dead worker fails its run."""
        busy = {s.proc.stdout: s for s in self._slots if s.key is not None and s.proc is not None}
        if not busy:
            return []
        ready, _, _ = select.select(list(busy), [], [], timeout)
        done = []
        for stream in ready:
            slot = busy[stream]
            line = stream.readline()
            if line.strip():
                code = int(line)
            else:  # EOF: the worker died mid-run (its run is recorded as interrupted)
                code = slot.proc.wait() or 1
                slot.proc = None
            done.append((slot.key, code))
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
