"""Seeding, determinism, and snapshots of every RNG for exact resume.

RNG states of Python and NumPy are stored as plain lists/tensors, so a checkpoint holding them
loads with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np
import torch


def make_deterministic(seed: int, deterministic_kernels: bool = True) -> None:
    """Seed every RNG; with `deterministic_kernels`, also ask torch for deterministic kernels.

    The trainer asks for them on CPU (exact reruns and resume) but not on GPU, where they cost
    speed (cuDNN autotuning off, slower scatter kernels); GPU runs are seeded, not bit-exact.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic_kernels:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _use_deterministic_kernels()
    torch.backends.cudnn.benchmark = not deterministic_kernels


def _use_deterministic_kernels() -> None:
    """`torch.use_deterministic_algorithms(True, warn_only=True)`, without importing the torch
    compiler to set its flag too when nothing has imported it (the project never compiles): that
    import costs every worker process 1.2-2.2 s before its first run."""
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        set_flag(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """Snapshot of every RNG the trainer touches (Python, NumPy global, torch CPU and CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by `rng_state`."""
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
