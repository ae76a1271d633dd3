"""Where a run or an evaluation computes: device and precision resolution (training uses it too)."""

from __future__ import annotations

import torch

from pipeline.errors import UserError


class DeviceError(UserError, ValueError):
    """A device that is not available here."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; an unavailable cuda device is a DeviceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for but no CUDA device is available; use 'cpu' or 'auto'")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA (tensor cores), fp32 on CPU (bf16 is slow on most CPUs)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {name!r}")  # the config validates it
    return name
