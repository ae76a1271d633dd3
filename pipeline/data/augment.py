"""Training augmentation: the GSV-Cities policy, RandAugment(num_ops=3) after the resize, per image.

The policy is split in two so that it can run anywhere with the same randomness:

- `sample_ops` draws each image's operations and signed magnitudes from a seed derived from the
  item's draw seed (never from global RNG state), so exact resume and worker-count independence
  hold wherever the pixels are then changed;
- `apply_ops` is the per-image reference: torchvision's public functional ops on a uint8 CHW
  tensor, one after the other, as `torchvision.transforms.RandAugment` applies them (ops,
  magnitude bins, sign rule, zero fill, bilinear interpolation). The batched device path
  (`pipeline.data.device_augment`) is tested against it.

Ops and magnitudes follow torchvision's RandAugment: 14 ops (Identity, ShearX/Y, TranslateX/Y,
Rotate, Brightness, Color, Contrast, Sharpness, Posterize, Solarize, AutoContrast, Equalize),
magnitude `magnitude` of `num_magnitude_bins` bins, a random sign for signed ops.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

OPS: tuple[str, ...] = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                        "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPS)}
AFFINE_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})


class AugmentConfig(BaseModel):
    """`data.augment`: the training augmentation policy (default: GSV-Cities' RandAugment).

    `policy: none` trains on resized images only. `on` says where the pixels change: `device`
    (default: the batched path on the training device, after the uint8 batch is copied there) or
    `loader` (the per-image reference in the loader workers). Both draw the same ops per image.
    The string shorthand `data.augment: none` (or `randaugment`) is accepted.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    policy: Literal["randaugment", "none"] = "randaugment"
    num_ops: int = Field(3, ge=1, le=10)
    magnitude: int = Field(9, ge=0)
    num_magnitude_bins: int = Field(31, ge=2)
    on: Literal["device", "loader"] = "device"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"policy": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _magnitude_in_bins(self) -> AugmentConfig:
        if self.magnitude >= self.num_magnitude_bins:
            raise ValueError(f"magnitude {self.magnitude} must be below num_magnitude_bins "
                             f"({self.num_magnitude_bins})")
        return self

    @property
    def enabled(self) -> bool:
        return self.policy != "none"


def op_magnitude(op: str, cfg: AugmentConfig, size: tuple[int, int]) -> tuple[float, bool]:
    """(magnitude, signed) of `op` at the configured bin, for images of `size` (height, width)."""
    frac = cfg.magnitude / (cfg.num_magnitude_bins - 1)  # position in torchvision's linspace
    height, width = size
    table = {
        "ShearX": (0.3 * frac, True), "ShearY": (0.3 * frac, True),
        "TranslateX": (150.0 / 331.0 * width * frac, True), "TranslateY": (150.0 / 331.0 * height * frac, True),
        "Rotate": (30.0 * frac, True),
        "Brightness": (0.9 * frac, True), "Color": (0.9 * frac, True), "Contrast": (0.9 * frac, True),
        "Sharpness": (0.9 * frac, True),
        # torchvision: 8 - round(arange(bins) / ((bins - 1) / 4)); solarize: linspace(255, 0, bins)
        "Posterize": (float(8 - round(cfg.magnitude / ((cfg.num_magnitude_bins - 1) / 4))), False),
        "Solarize": (255.0 * (1 - frac), False),
    }
    return table.get(op, (0.0, False))


def sample_ops(draw_seed: int, view: int, cfg: AugmentConfig, size: tuple[int, int]) -> np.ndarray:
    """The ops of one image: `(num_ops, 2)` float64 rows of (op index, signed magnitude).

    Drawn from `(draw_seed, view)` alone: ops uniformly among OPS, sign +-1 with probability 1/2.
    """
    rng = np.random.default_rng([int(draw_seed), int(view), 0xA06])
    ops = np.zeros((cfg.num_ops, 2), dtype=np.float64)
    for j in range(cfg.num_ops):
        index, negative = int(rng.integers(len(OPS))), bool(rng.integers(2))
        value, signed = op_magnitude(OPS[index], cfg, size)
        ops[j] = (index, -value if signed and negative else value)
    return ops


def apply_op(img: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One RandAugment op on a uint8 (..., 3, H, W) tensor, with torchvision's public functions."""
    import torchvision.transforms.functional as F  # here: the config imports this module, not the ops
    from torchvision.transforms import InterpolationMode

    bilinear = InterpolationMode.BILINEAR
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, interpolation=bilinear,
                        shear=[shear, 0.0] if op == "ShearX" else [0.0, shear], center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return F.affine(img, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=bilinear)
    colour = {
        "Rotate": lambda: F.rotate(img, magnitude, interpolation=bilinear),
        "Brightness": lambda: F.adjust_brightness(img, 1.0 + magnitude),
        "Color": lambda: F.adjust_saturation(img, 1.0 + magnitude),
        "Contrast": lambda: F.adjust_contrast(img, 1.0 + magnitude),
        "Sharpness": lambda: F.adjust_sharpness(img, 1.0 + magnitude),
        "Posterize": lambda: F.posterize(img, int(magnitude)),
        "Solarize": lambda: F.solarize(img, magnitude),
        "AutoContrast": lambda: F.autocontrast(img),
        "Equalize": lambda: F.equalize(img),
        "Identity": lambda: img,
    }
    return colour[op]()


def apply_ops(img: torch.Tensor, ops: np.ndarray) -> torch.Tensor:
    """The per-image reference: the sampled ops of one image applied in order (uint8 in, uint8 out)."""
    for index, magnitude in np.asarray(ops).reshape(-1, 2):
        img = apply_op(img, OPS[int(index)], float(magnitude))
    return img
