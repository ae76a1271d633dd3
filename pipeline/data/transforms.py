"""Image normalisation done on the device, after the uint8 batch has been copied there, and the
small host-to-device copies of the device-side data path, made so the host never waits on the GPU."""

from __future__ import annotations

import functools

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> ImageNet-normalised float tensor of `dtype`.

    Float inputs are assumed to be in [0, 1] already.
    """
    x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
    mean, std = _mean_std(x.device, dtype)
    return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _mean_std(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: `torch.tensor(..., device="cuda")` copies from pageable memory, which
    makes the host wait for the GPU at every batch."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device)
    return mean, std


def host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device`; on CUDA through pinned memory and without blocking the host
    (a plain `.to("cuda")` of pageable memory waits for the GPU's queued work)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)
