"""How a trained network is stored: at the precision its evaluation computed in.

Under bf16 autocast (`training.precision` resolving to bf16: CUDA, and CPUs with bf16 in
hardware), convolutions and linear layers cast their weights and biases to bf16 before computing,
so no fp32 digit beyond bf16 of those tensors ever reaches a descriptor. A run evaluated that way
stores them in bf16: half the bytes (a ResNet-18 cut after layer3 is 11.1 MB in fp32, 5.6 MB so),
and nothing the recorded recalls depend on is lost: bf16 -> fp32 is exact and autocast casts the
fp32 values back to the very same bf16 ones, so the stored network gives the recorded descriptors
bit for bit under bf16 autocast (evaluated in fp32 instead, it gives them within bf16 rounding).
A run stores bf16 only when all its recorded evaluations ran in bf16
(`mlflow_records.evaluated_precision`). What autocast computes in fp32 (BatchNorm, LayerNorm, GeM's p)
stays fp32, and a run evaluated in fp32 stores fp32.

`VPRModel.__setstate__` (models.model) converts a stored network back to fp32 when it is
unpickled, so `mlflow.pytorch.load_model` hands back an ordinary fp32 module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# The layer types whose parameters bf16 autocast casts before computing (CPU and CUDA alike).
AUTOCAST_CAST_LAYERS = (nn.Conv2d, nn.Linear)


def storage_copy(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` to store for a run evaluated at `precision` ('bf16' or 'fp32'): with
    bf16, its convolution and linear parameters in bf16; with fp32, an unchanged copy."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
    stored = copy.deepcopy(model)
    if precision == "bf16":
        for layer in stored.modules():
            if isinstance(layer, AUTOCAST_CAST_LAYERS):
                layer.to(torch.bfloat16)
    return stored


def stored_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s parameters and buffers as stored (what its weights file holds, roughly)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
