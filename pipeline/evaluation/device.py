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


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where oneDNN runs
    bf16 convolutions about twice as fast as fp32; elsewhere bf16 is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, torch >= 2.3
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> the faster autocast precision of `device`: bf16 on CUDA (tensor cores) and on
    CPUs with native bf16 (`cpu_has_native_bf16`), fp32 on other CPUs.

    Measured on an AVX512-BF16 CPU (benchmarks/RESULTS.md, "CPU precision and memory format"):
    a ResNet-18 training step 2.2x and inference 2.3x faster than fp32, at the same learning."""
    if name == "auto":
        return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    if name not in ("fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {name!r}")  # the config validates it
    return name


def resolve_channels_last(setting: bool | str, device: torch.device) -> bool:
    """'auto' -> channels_last on CUDA (tensor cores) and on x86 CPUs (oneDNN's native layout for
    convolutions: a training step ~15% faster there); contiguous elsewhere (e.g. ARM CPUs)."""
    if setting in (True, False):
        return bool(setting)
    return device.type == "cuda" or getattr(torch.cpu, "_is_avx2_supported", lambda: False)()


def describe_device(device: torch.device) -> str:
    """The hardware a run computed on, for its record: the GPU's name, or the CPU's model with
    whether it has bf16 in hardware (the two kinds of CPU give different bf16 results)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"cpu: {model or platform.processor() or platform.machine()} ({'native' if cpu_has_native_bf16() else 'no'} bf16)"
