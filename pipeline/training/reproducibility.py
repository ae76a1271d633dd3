"""Seeding, determinism and device/precision resolution."""

from __future__ import annotations

import os
import random

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
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic_kernels


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; an unavailable cuda device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"training.device={name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA (tensor cores), fp32 on CPU (bf16 is slow on most CPUs)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "bf16"):
        raise ValueError(f"training.precision must be auto, fp32 or bf16, got {name!r}")
    return name
