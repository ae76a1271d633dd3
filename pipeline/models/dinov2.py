"""DINOv2 ViT backbones (Oquab et al., "DINOv2: Learning Robust Visual Features without
Supervision", TMLR 2024), built from timm's architecture, as BoQ and SALAD fine-tune them.

- The network is timm's `vit_{small,base}_patch14_dinov2` (the same layers as facebookresearch/dinov2,
  LayerScale included), created without a download; torch hub would need the network at run time.
- `pretrained`: "dinov2" loads Meta's released weights (`dinov2_vit{s,b}14_pretrain.pth`; timm
  converts their key names) from the torch hub cache, downloading them there unless `VPR_OFFLINE`
  is set (then the error says where to put the file); a path loads that file; "none" is random init.
- `num_unfrozen_blocks` = N: the last N transformer blocks train, everything before them is frozen
  (patch embedding, class token, position embedding, the first blocks), as BoQ
  (amaralibey/Bag-of-Queries src/backbones.py: every parameter frozen, then `blocks[-N:]` unfrozen)
  and SALAD (serizba/salad models/backbones/dinov2.py: `blocks[:-N]` run without gradients) do.
  The frozen part runs under `torch.no_grad()`, so it costs no activation memory.
- The output is the patch tokens as a feature map (B, C, H/14, W/14), the class token apart
  (`forward_features`, which SALAD aggregates); like both references, the final LayerNorm is
  not applied. Image sides must be multiples of 14 (the patch size).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError

PATCH = 14
DINOV2_DEPTH = 12  # transformer blocks of ViT-S/14 and ViT-B/14
# name -> (timm architecture, file name of Meta's released weights)
DINOV2: dict[str, tuple[str, str]] = {
    "dinov2_vits14": ("vit_small_patch14_dinov2", "dinov2_vits14_pretrain.pth"),
    "dinov2_vitb14": ("vit_base_patch14_dinov2", "dinov2_vitb14_pretrain.pth"),
}
_URL = "https://dl.fbaipublicfiles.com/dinov2/{}/{}"


class DinoV2Error(UserError, ValueError):
    """An impossible DINOv2 setting (image size, number of unfrozen blocks, weights)."""


def check_patch_multiple(image_size: Sequence[int], what: str = "data.image_size") -> None:
    """Both sides multiples of the patch size (14), or a one-line DinoV2Error naming the nearest sizes."""
    bad = [s for s in image_size if int(s) % PATCH]
    if bad:
        near = [max(PATCH, round(int(s) / PATCH) * PATCH) for s in image_size]
        raise DinoV2Error(f"{what} {[int(s) for s in image_size]}: a DINOv2 backbone needs sides that are multiples of "
                          f"{PATCH} (its patch size), e.g. {near}")


def weights_path(name: str) -> Path:
    """Where Meta's weights of `name` are expected: the torch hub cache (`TORCH_HOME` honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / DINOV2[name][1]


def weights_url(name: str) -> str:
    return _URL.format(name, DINOV2[name][1])


def _state_dict(name: str, pretrained: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    from pipeline.models.backbones import PretrainedWeightsNotFound, offline

    if pretrained == "none":
        return None
    if pretrained == "dinov2":
        path = weights_path(name)
        if not path.is_file():
            if offline():
                raise PretrainedWeightsNotFound(
                    f"DINOv2 weights for {name} not found at {path}, and VPR_OFFLINE is set so nothing is "
                    f"downloaded. On a machine with internet fetch {weights_url(name)} and put it at {path} (or set "
                    "TORCH_HOME so that <TORCH_HOME>/hub/checkpoints/ holds it), pass pretrained: <path>, or use "
                    "pretrained: none.")
            try:
                torch.hub.download_url_to_file(weights_url(name), str(path), progress=True)
            except OSError as err:
                raise PretrainedWeightsNotFound(f"DINOv2 weights for {name} could not be downloaded from "
                                                f"{weights_url(name)} ({err}); put the file at {path}.") from None
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsNotFound(f"pretrained weights file {path} for {name} not found; give an existing "
                                            "file, pretrained: dinov2 (Meta's weights) or pretrained: none.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


class DinoV2Backbone(nn.Module):
    """A DINOv2 ViT whose last `num_unfrozen_blocks` blocks train; images -> patch-token feature map."""

    def __init__(self, name: str = "dinov2_vitb14", pretrained: str | os.PathLike = "dinov2",
                 num_unfrozen_blocks: int = 2) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        if name not in DINOV2:
            raise DinoV2Error(f"unknown DINOv2 backbone {name!r}; valid: {', '.join(DINOV2)}")
        self.name = name
        self.vit = timm.create_model(DINOV2[name][0], pretrained=False, dynamic_img_size=True, num_classes=0)
        depth = len(self.vit.blocks)
        if isinstance(num_unfrozen_blocks, bool) or not 0 <= num_unfrozen_blocks <= depth:
            raise DinoV2Error(f"num_unfrozen_blocks must be in 0..{depth} for {name} ({depth} blocks), "
                              f"got {num_unfrozen_blocks!r}")
        state = _state_dict(name, pretrained)
        if state is not None:
            missing, unexpected = self.vit.load_state_dict(checkpoint_filter_fn(state, self.vit), strict=False)
            if missing or unexpected:
                from pipeline.models.backbones import PretrainedWeightsMismatch

                raise PretrainedWeightsMismatch(f"weights for {name} do not fit: missing {missing[:5]}, unexpected "
                                                f"{unexpected[:5]}")
        self.num_unfrozen_blocks = num_unfrozen_blocks
        self.split = depth - num_unfrozen_blocks       # blocks[:split] are frozen
        self.vit.requires_grad_(False)
        for block in self.vit.blocks[self.split:]:
            block.requires_grad_(True)
        self.out_channels: int = self.vit.embed_dim
        self.stride: int = PATCH
        self.layers_to_crop: tuple[int, ...] = ()
        self.frozen_modules: tuple[str, ...] = ("patch_embed", "cls_token", "pos_embed",
                                                *(f"blocks.{i}" for i in range(self.split)))

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature map (B, C, H/14, W/14), class token (B, C))."""
        b, _, h, w = images.shape
        check_patch_multiple((h, w), "image size")
        with torch.no_grad():  # the frozen part: no gradients, no stored activations
            x = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(self.vit.patch_embed(images))))
            for block in self.vit.blocks[:self.split]:
                x = block(x)
        x = x.detach()
        for block in self.vit.blocks[self.split:]:
            x = block(x)
        prefix = self.vit.num_prefix_tokens
        fmap = x[:, prefix:].transpose(1, 2).reshape(b, self.out_channels, h // PATCH, w // PATCH)
        return fmap, x[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> patch-token feature map (B, C, H/14, W/14)."""
        return self.forward_features(images)[0]

    def feature_shape(self, image_size: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) of the feature map for `image_size`; a one-line error when it is not a multiple of 14."""
        check_patch_multiple(image_size)
        return self.out_channels, int(image_size[0]) // PATCH, int(image_size[1]) // PATCH

    def extra_repr(self) -> str:
        return (f"name={self.name}, trainable_blocks={self.num_unfrozen_blocks}/{len(self.vit.blocks)}, "
                f"out_channels={self.out_channels}, patch={PATCH}")
