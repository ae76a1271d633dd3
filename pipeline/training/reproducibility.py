"""Seeding, determinism and device/precision resolution."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def make_deterministic(seed: int) -> None:
    """Seed every RNG and ask for deterministic kernels (exact on CPU; best effort on GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


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
