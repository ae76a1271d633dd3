"""The augmentation policy on a whole uint8 batch, on the training device (CPU or CUDA alike).

Each image keeps its own ops and magnitudes (drawn by `pipeline.data.augment.sample_ops` in the
loader). Step j of the policy groups the images by their j-th op: every affine op of the step
(shear, translate, rotate) is one batched `affine_grid`/`grid_sample` with a matrix per image,
every colour op one vectorised expression with a factor per image. Between ops the batch stays
uint8, rounded or truncated as torchvision's tensor functions do, so the result matches the
per-image reference `augment.apply_ops` (tests/test_augment.py states the tolerance).

Which images take which op is decided from the ops tensor on the host (the loader produced it
there), so the device never has to report back mid-batch. What the host sends (image indices,
magnitudes, affine matrices: a few bytes per image) goes through pinned memory without blocking, so
the host queues the whole policy without waiting for the GPU; the sampling grid is built on the
device (measured on an H100, benchmarks/RESULTS.md: building it on the host and copying it cost
more than the model's step).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as nnf

from pipeline.data.augment import AFFINE_OPS, OPS, AugmentConfig
from pipeline.data.transforms import host_to_device

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@functools.lru_cache(maxsize=8)
def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(1, H*W, 3) pixel centres in centred coordinates, with a 1 for the translation (torchvision's grid)."""
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w)], dim=-1)
    return base.view(1, h * w, 3).to(device)


def _inverse_affine(angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, shear_x: torch.Tensor,
                    shear_y: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) output->input pixel maps, centred coordinates, as torchvision's affine defines them
    (angles in degrees; rotation about the centre (cx, cy), then shear, then translation)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m = torch.stack([d, -b, torch.zeros_like(a), -c, a, torch.zeros_like(a)], dim=1)
    m[:, 2] = m[:, 0] * (-cx - tx) + m[:, 1] * (-cy - ty) + cx
    m[:, 5] = m[:, 3] * (-cx - tx) + m[:, 4] * (-cy - ty) + cy
    return m.view(-1, 2, 3)


def _affine_params(ops: list[str], mags: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    """Per-image (angle, tx, ty, shear_x, shear_y, cx, cy) of the affine ops, torchvision's way."""
    n = len(ops)
    p = torch.zeros(7, n, dtype=torch.float64)
    for i, op in enumerate(ops):
        m = float(mags[i])
        if op in ("ShearX", "ShearY"):  # sheared about the top-left corner
            p[3 if op == "ShearX" else 4, i] = math.degrees(math.atan(m))
            p[5, i], p[6, i] = -w * 0.5, -h * 0.5
        elif op == "TranslateX":
            p[1, i] = int(m)
        elif op == "TranslateY":
            p[2, i] = int(m)
        else:  # Rotate: torchvision's rotate inverts the angle of its affine matrix
            p[0, i] = -m
    return list(p)


def _affine(x: torch.Tensor, ops: list[str], mags: torch.Tensor) -> torch.Tensor:
    """Shear/translate/rotate of n images in one grid_sample (bilinear, zero fill, rounded)."""
    n, _, h, w = x.shape
    theta = _inverse_affine(*_affine_params(ops, mags, h, w)).to(torch.float32)
    # torchvision's grid: pixel centres in centred coordinates, mapped, then rescaled to [-1, 1]
    scaled = host_to_device(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h]), x.device)
    grid = (_base_grid(h, w, x.device) @ scaled).view(n, h, w, 2)
    out = nnf.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma as uint8 (truncated), (n, 1, H, W)."""
    r, g, b = x.float().unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).to(torch.uint8).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """ratio * x + (1 - ratio) * other, clamped and truncated to uint8 (torchvision's _blend).

    `ratio` is float64: both weights are formed in double and then cast, as Python floats are."""
    r, rest = ratio.to(torch.float32), (1.0 - ratio).to(torch.float32)
    return (r * x.float() + rest * other.float()).clamp_(0, 255).to(torch.uint8)


def _blurred(x: torch.Tensor) -> torch.Tensor:
    """torchvision's sharpness reference image: 3x3 smoothing (centre 5), borders unchanged."""
    kernel = torch.ones(3, 3, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(3, 1, 3, 3)
    inner = nnf.conv2d(x.float(), kernel, groups=3).round_().clamp_(0, 255).to(torch.uint8)
    out = x.clone()
    out[..., 1:-1, 1:-1] = inner
    return out


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 255] (constant channels unchanged)."""
    lo = x.amin(dim=(-2, -1), keepdim=True).float()
    hi = x.amax(dim=(-2, -1), keepdim=True).float()
    flat = hi == lo
    scale = torch.where(flat, torch.ones_like(hi), 255.0 / (hi - lo).clamp_min(1))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((x.float() - lo) * scale).clamp_(0, 255).to(torch.uint8)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel of each image, torchvision's look-up-table rule."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.long).scatter_add_(
        1, flat, torch.ones_like(flat))
    last = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)  # last occupied level
    step = (h * w - hist.gather(1, last[:, None])) // 255           # sum of nonzero bins but the last
    lut = (hist.cumsum(1) + step // 2) // step.clamp_min(1)
    lut = nnf.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, flat).to(torch.uint8)
    out = torch.where(step == 0, x.reshape(n * c, h * w), out)      # one level only: unchanged
    return out.view(n, c, h, w)


def _colour(x: torch.Tensor, op: str, mags: torch.Tensor) -> torch.Tensor:
    """One colour op on n images, with a magnitude per image."""
    m = host_to_device(mags.to(torch.float64), x.device).view(-1, 1, 1, 1)
    if op == "Brightness":
        return _blend(x, torch.zeros_like(x), 1.0 + m)
    if op == "Color":
        return _blend(x, _grey(x), 1.0 + m)
    if op == "Contrast":
        return _blend(x, _grey(x).float().mean(dim=(-3, -2, -1), keepdim=True), 1.0 + m)
    if op == "Sharpness":
        return _blend(x, _blurred(x), 1.0 + m) if min(x.shape[-2:]) > 2 else x
    if op == "Posterize":
        keep = (256 - 2 ** (8 - m.long())).to(torch.uint8)  # mask of the top `bits` bits
        return x & keep
    if op == "Solarize":  # x >= m for integer x is x >= ceil(m): exact without a float64 copy
        return torch.where(x >= m.ceil().clamp(0, 256).to(torch.int16), 255 - x, x)
    if op == "AutoContrast":
        return _autocontrast(x)
    if op == "Equalize":
        return _equalize(x)
    return x  # Identity


def augment_batch(images: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Apply each image's sampled ops to a uint8 (B, 3, H, W) batch; `ops` is (B, num_ops, 2) on the host.

    Returns a new uint8 tensor on the images' device. An ops tensor with no ops returns `images`.
    """
    ops = ops.detach().to("cpu", torch.float64)
    if ops.numel() == 0:
        return images
    x = images.clone()
    for j in range(ops.shape[1]):
        kinds = [OPS[int(k)] for k in ops[:, j, 0]]
        affine = [i for i, k in enumerate(kinds) if k in AFFINE_OPS]
        if affine:
            idx = torch.tensor(affine)
            dev = host_to_device(idx, x.device)
            x[dev] = _affine(x[dev], [kinds[i] for i in affine], ops[idx, j, 1])
        for op in sorted(set(kinds) - AFFINE_OPS - {"Identity"}):
            idx = torch.tensor([i for i, k in enumerate(kinds) if k == op])
            dev = host_to_device(idx, x.device)
            x[dev] = _colour(x[dev], op, ops[idx, j, 1])
    return x


class DeviceAugment:
    """The training step's hook: `augment(images_on_device, ops)` when the policy runs on the device."""

    def __init__(self, cfg: AugmentConfig | None) -> None:
        self.active = cfg is not None and cfg.enabled and cfg.on == "device"

    def __call__(self, images: torch.Tensor, ops: torch.Tensor | None) -> torch.Tensor:
        if not self.active or ops is None:
            return images
        return augment_batch(images, ops)
