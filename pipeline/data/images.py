"""The one image reader: every image the pipeline trains or evaluates on is read here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.errors import ImageLoadError

__all__ = ["INTERPOLATIONS", "load_image"]

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_image(path: str | Path, size: tuple[int, int] | None,
               interpolation: str = "bilinear") -> torch.Tensor:
    """Read an image as RGB, resize to `size` (height, width) and return a uint8 CHW tensor.

    Raises ImageLoadError naming the file for missing, zero-byte, truncated or corrupt images:
    a broken sample must never reach a batch.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now so truncation is detected here
            img = img.convert("RGB")
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), INTERPOLATIONS[interpolation])
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
