"""Torchvision ResNet backbones, cut and frozen GSV-Cities style, with offline-only weights.

A backbone maps images (B, 3, H, W) to a feature map (B, C, H/s, W/s). Its submodules keep
torchvision's names (`conv1`, `bn1`, `layer1`, ...), so a torchvision state dict loads as is.

- `layers_to_crop`: which of layer3/layer4 to remove (GSV-Cities semantics). `[4]` cuts after
  layer3 (ResNet-18/34: 256 channels, stride 16), `[3, 4]` cuts after layer2 (128 ch, stride 8),
  `[]` keeps everything (512 ch, stride 32). ResNet-50 has 4x the channels. `fc` and `avgpool`
  are always removed. Cropping layer3 alone is refused: layer4 consumes layer3's output.
- `layers_to_freeze`: N in 0..(kept layers), as GSV-Cities freezes: only a pretrained backbone
  is frozen (random weights are never frozen); N >= 0 freezes the stem (conv1 + bn1), N >= 1 also
  layer1, ..., N >= 3 also layer3. Freezing is `requires_grad_(False)` only.
- `frozen_bn`: what frozen BatchNorm layers do under `model.train()`. "train" (GSV-Cities, the
  default): they stay in training mode, normalise with batch statistics and keep updating their
  running statistics. "eval": they are kept in eval mode (running statistics used and fixed).
- `pretrained`: "imagenet" loads torchvision's IMAGENET1K_V1 weights through torchvision's own
  loader and cache (downloaded when missing, checksum checked); with `VPR_OFFLINE=1` nothing is
  downloaded and the file must already be in the cache (the error says where). A path loads that
  state dict; "none" is random init.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from torch import nn

from pipeline.errors import UserError

if TYPE_CHECKING:
    import torchvision

# name -> torchvision's weights enum of that depth. Constructors and weights are looked up in
# torchvision when a backbone is built, so validating a config does not import it (~1.6 s).
BACKBONES: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}


def _constructor(name: str) -> Callable[..., torchvision.models.ResNet]:
    import torchvision.models

    return getattr(torchvision.models, name)


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights of backbone `name`: V1 for every depth, the weights the
    GSV-Cities / MixVPR line of work started from (`pretrained=True` in older torchvision)."""
    import torchvision.models

    _check_name(name)
    return getattr(torchvision.models, BACKBONES[name]).IMAGENET1K_V1

_CROPPABLE = (3, 4)
_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_STEM = ("conv1", "bn1")
_PROBE_SIZE = (64, 64)  # small dummy input to measure channels and stride


class PretrainedWeightsNotFound(UserError, FileNotFoundError):
    """Pretrained weights are not on disk; the message says where to put them."""


class PretrainedWeightsMismatch(UserError, ValueError):
    """A weights file does not fit the backbone (missing/unexpected keys or wrong shapes)."""


def imagenet_weights_path(name: str) -> Path:
    """Where the ImageNet weights of backbone `name` are expected: the torch hub cache.

    `torch.hub.get_dir()/checkpoints/<file name of torchvision's weights URL>`; honours
    TORCH_HOME at call time.
    """
    _check_name(name)
    url = imagenet_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


class BackboneError(UserError, ValueError):
    """An unknown backbone or an impossible crop/freeze setting."""


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")


def check_crop(layers_to_crop: Sequence[int]) -> tuple[int, ...]:
    """The canonical (sorted, unique) crop; BackboneError for anything GSV-Cities cannot cut.

    The one definition of a valid `layers_to_crop`: the run config validates with it too.
    """
    if isinstance(layers_to_crop, (str, bytes)) or not isinstance(layers_to_crop, Sequence):
        raise BackboneError(f"layers_to_crop must be a list of layer indices among {list(_CROPPABLE)},"
                            f" got {layers_to_crop!r}")
    bad = [x for x in layers_to_crop if isinstance(x, bool) or x not in _CROPPABLE]
    if bad:
        raise BackboneError(f"layers_to_crop may only contain {list(_CROPPABLE)}, got {list(layers_to_crop)}")
    crop = tuple(sorted(set(layers_to_crop)))
    if 3 in crop and 4 not in crop:
        raise BackboneError("layers_to_crop=[3] is invalid: layer4 consumes layer3's output; "
                            "use [4] (cut after layer3) or [3, 4] (cut after layer2)")
    return crop


def check_freeze(layers_to_freeze: int, layers_to_crop: Sequence[int]) -> int:
    """`layers_to_freeze` if it is in 0..(residual stages kept after `layers_to_crop`), else BackboneError."""
    kept = [n for i, n in enumerate(_LAYERS, start=1) if i not in check_crop(layers_to_crop)]
    if isinstance(layers_to_freeze, bool) or not isinstance(layers_to_freeze, int) \
            or not 0 <= layers_to_freeze <= len(kept):
        raise BackboneError(f"layers_to_freeze must be an int in 0..{len(kept)} with layers_to_crop="
                            f"{list(layers_to_crop)} (kept: {', '.join(kept)}), got {layers_to_freeze!r}")
    return layers_to_freeze


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without avgpool/fc and without the cropped layers.

    Attributes: `name`, `layers_to_crop`, `layers_to_freeze`, `out_channels` and `stride`
    (both measured with a dummy forward, not inferred from the name).
    """

    def __init__(self, name: str, resnet: torchvision.models.ResNet, layers_to_crop: Sequence[int] = (4,),
                 layers_to_freeze: int | None = 0, frozen_bn: str = "train") -> None:
        super().__init__()
        self.name = name
        self.layers_to_crop = check_crop(layers_to_crop)
        # Same attribute names as torchvision so state dict keys match the published files.
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer_names = tuple(n for i, n in enumerate(_LAYERS, start=1) if i not in self.layers_to_crop)
        for layer in self.layer_names:
            setattr(self, layer, getattr(resnet, layer))

        # None: nothing frozen (a random-init backbone); else the stem and layer1..layerN.
        self.layers_to_freeze = None if layers_to_freeze is None else check_freeze(layers_to_freeze,
                                                                                   self.layers_to_crop)
        self.frozen_modules: tuple[str, ...] = (() if layers_to_freeze is None
                                                else _STEM + self.layer_names[:layers_to_freeze])
        if frozen_bn not in ("train", "eval"):
            raise BackboneError(f"frozen_bn must be 'train' or 'eval', got {frozen_bn!r}")
        self.frozen_bn = frozen_bn
        for module_name in self.frozen_modules:
            getattr(self, module_name).requires_grad_(False)

        channels, height, _ = self.feature_shape(_PROBE_SIZE)
        self.out_channels: int = channels
        self.stride: int = _PROBE_SIZE[0] // height

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> feature map (B, out_channels, H/stride, W/stride)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for layer in self.layer_names:
            x = getattr(self, layer)(x)
        return x

    def train(self, mode: bool = True) -> ResNetBackbone:
        """Set train/eval mode; with frozen_bn 'eval', frozen modules stay in eval (fixed BN statistics)."""
        super().train(mode)
        if self.frozen_bn == "eval":
            for module_name in self.frozen_modules:
                getattr(self, module_name).eval()
        return self

    @torch.no_grad()
    def feature_shape(self, image_size: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) of the feature map for images of `image_size` (height, width).

        Runs one dummy forward in eval mode and restores every submodule's mode afterwards.
        """
        modes = {m: m.training for m in self.modules()}
        param = next(self.parameters())
        try:
            self.eval()
            dummy = torch.zeros(1, 3, int(image_size[0]), int(image_size[1]), device=param.device,
                                dtype=param.dtype)
            out = self(dummy)  # padding keeps every ResNet output at least 1x1, even for tiny images
        finally:
            for module, training in modes.items():
                module.training = training
        return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])

    def extra_repr(self) -> str:
        return (f"name={self.name}, layers_to_crop={list(self.layers_to_crop)}, "
                f"frozen={list(self.frozen_modules)}, frozen_bn={self.frozen_bn}, out_channels={self.out_channels}, "
                f"stride={self.stride}")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; all mean "not a weights file"
        raise PretrainedWeightsMismatch(f"cannot read weights file {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint wrapping the weights
    if not isinstance(state, dict):
        raise PretrainedWeightsMismatch(f"weights file {path} does not hold a state dict "
                                        f"(got {type(state).__name__})")
    return state


def _apply_weights(backbone: ResNetBackbone, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load `state` into the kept modules; keys of removed modules (fc, cropped layers) are ignored."""
    removed = ("fc.",) + tuple(f"{_LAYERS[i - 1]}." for i in backbone.layers_to_crop)
    kept = {k: v for k, v in state.items() if not k.startswith(removed)}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(kept))
    unexpected = sorted(set(kept) - set(own))
    wrong_shape = [f"{k}: file {tuple(kept[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in sorted(set(own) & set(kept)) if tuple(kept[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        parts = [f"{label} {len(items)}: {head(items)}" for label, items in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong_shape))
                 if items]
        raise PretrainedWeightsMismatch(f"weights file {path} does not match backbone {backbone.name} "
                                        f"(torchvision key names expected): " + "; ".join(parts))
    backbone.load_state_dict(kept, strict=True)


def offline() -> bool:
    """True when `VPR_OFFLINE` is set (to anything but '', '0', 'false'): nothing is downloaded."""
    return os.environ.get("VPR_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _imagenet_state_dict(name: str) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's ImageNet weights of `name` from its cache; downloaded (checksum checked) unless offline."""
    path = imagenet_weights_path(name)
    if offline() and not path.is_file():
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for {name} not found at {path}, and VPR_OFFLINE is set so nothing is "
            f"downloaded. On a machine with internet fetch {imagenet_weights(name).url} and put it at {path} "
            f"(or set TORCH_HOME so that <TORCH_HOME>/hub/checkpoints/ holds it), unset VPR_OFFLINE to let "
            f"torchvision download it, pass pretrained: <path to a .pth state dict>, or use pretrained: none.")
    if path.is_file():
        return _load_state_dict(path), path
    try:  # torchvision's loader: downloads into the same cache and checks the file's hash
        return imagenet_weights(name).get_state_dict(progress=True, check_hash=True), path
    except (OSError, RuntimeError) as err:  # no network, or a corrupt download (hash mismatch)
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for {name} could not be downloaded from {imagenet_weights(name).url} ({err}); "
            f"put the file at {path}, pass pretrained: <path to a .pth state dict>, or use pretrained: none.") \
            from None


def build_backbone(name: str = "resnet18", pretrained: str | os.PathLike = "imagenet",
                   layers_to_crop: Sequence[int] = (4,), layers_to_freeze: int = 0,
                   frozen_bn: str = "train") -> ResNetBackbone:
    """Build a cut ResNet backbone, frozen GSV-Cities style when it is pretrained.

    `pretrained`: "imagenet" (torchvision's cache; see the module docstring for VPR_OFFLINE),
    "none" (random init: nothing is frozen), or a path to a .pth state dict with torchvision key
    names. Raises BackboneError for an unknown name or invalid crop/freeze,
    PretrainedWeightsNotFound when the weights are absent, PretrainedWeightsMismatch when they do
    not fit.
    """
    _check_name(name)
    check_freeze(layers_to_freeze, layers_to_crop)
    # Load the weights before cutting: a bad file should fail before any module surgery.
    state: dict[str, torch.Tensor] | None = None
    if pretrained == "imagenet":
        state, path = _imagenet_state_dict(name)
    elif pretrained == "none":
        path = None
    elif isinstance(pretrained, (str, os.PathLike)) and str(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsNotFound(
                f"pretrained weights file {path} for {name} not found; give an existing .pth state dict, "
                f"pretrained: imagenet (torchvision's cache), or pretrained: none for random initialisation.")
        state = _load_state_dict(path)
    else:
        raise BackboneError(f"pretrained must be 'imagenet', 'none' or a path to a .pth file, got {pretrained!r}")

    freeze = layers_to_freeze if state is not None else None  # GSV-Cities: only pretrained layers freeze
    backbone = ResNetBackbone(name, _constructor(name)(weights=None), layers_to_crop, freeze, frozen_bn)
    if state is not None:
        _apply_weights(backbone, state, path)
    return backbone
