"""Image normalisation done on the device, after the uint8 batch has been copied there."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> ImageNet-normalised float tensor of `dtype`.

    Float inputs are assumed to be in [0, 1] already.
    """
    x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std
