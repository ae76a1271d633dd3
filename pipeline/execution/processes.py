"""How a sweep or a tuning starts its worker processes: one helper for both.

A worker is `python -m <module> ARGS` with
- the parent-death signal (Linux PR_SET_PDEATHSIG): it gets SIGKILL when the sweep dies, so no
  orphan keeps training (and holding a run's lock) after the sweep was killed;
- its share of the CPU cores (OMP_NUM_THREADS = cores / slots) unless the user set it;
- its GPU slot (CUDA_VISIBLE_DEVICES = slot modulo the visible GPUs) when there are GPUs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

__all__ = ["cuda_device_count", "die_with_parent", "spawn_worker", "worker_env"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Child-side: receive SIGKILL when the parent process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: workers then end when their pipes close or the sweep kills them
        pass


def cuda_device_count() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else those `nvidia-smi -L` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return len([line for line in out.stdout.splitlines() if line.startswith("GPU")])
    except (OSError, subprocess.SubprocessError):
        return 0


def worker_env(slot: int, slots: int, devices: int) -> dict[str, str]:
    """The environment of worker `slot` of `slots`: its GPU, or its share of the CPU cores."""
    env = dict(os.environ)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % devices)  # spread slots over the visible GPUs
    elif "OMP_NUM_THREADS" not in env:
        # CPU workers side by side: split the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, slots)))
    return env


def spawn_worker(module: str, args: Sequence[str], slot: int, slots: int, devices: int,
                 stdin: IO[Any] | int | None = None, stdout: IO[Any] | int | None = None) -> subprocess.Popen:
    """Start `python -m module ARGS` as worker `slot` of `slots` (see the module docstring);
    stderr is the caller's."""
    return subprocess.Popen([sys.executable, "-m", module, *args], env=worker_env(slot, slots, devices),
                            stdin=stdin, stdout=stdout, preexec_fn=die_with_parent)
