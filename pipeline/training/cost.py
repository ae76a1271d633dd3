"""What a run costs next to its recall: model size, speed and memory, measured while it trains.

- parameters: total and trainable (a DINOv2 with 2 of 12 blocks trained trains a fraction);
- descriptor dimension (the database's memory and the kNN's time scale with it);
- training images/s (mean over the run's epochs) and descriptor extraction ms/image at the
  evaluation size (the best epoch's validation);
- peak memory: CUDA `max_memory_allocated` on a GPU; on the CPU the process's peak resident set
  (Linux VmHWM, reset at the start of the run so that a long-lived worker reports each run's own).
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import torch
from torch import nn

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
COST_PREFIX = "cost_"  # their MLflow metric names: cost_params_total, cost_peak_memory_mb, ...


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class PeakMemory:
    """Peak memory of the block in MB: CUDA allocations on a GPU, else the process's resident set."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # "5" resets the peak resident set size (VmHWM) of this process (Linux >= 4.0)
                _CLEAR_REFS.write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        try:
            line = next(x for x in _STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
            self.peak_mb = int(line.split()[1]) / 1024           # kB
        except (OSError, StopIteration, ValueError):
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_cost(model: nn.Module, history: list[dict[str, float]], best_result: dict[str, Any] | None,
             peak_mb: float | None) -> dict[str, float]:
    """The cost record of a trained run (module docstring); absent measurements are left out."""
    total, trainable = parameter_counts(model)
    cost: dict[str, float] = {"params_total": float(total), "params_trainable": float(trainable),
                              "descriptor_dim": float(getattr(model, "descriptor_dim", 0))}
    speeds = [h["images_per_second"] for h in history if h.get("images_per_second")]
    if speeds:
        cost["train_images_per_second"] = sum(speeds) / len(speeds)
    if best_result and best_result.get("images_per_second"):
        cost["extraction_ms_per_image"] = 1000.0 / float(best_result["images_per_second"])
    if peak_mb is not None:
        cost["peak_memory_mb"] = float(peak_mb)
    return cost
