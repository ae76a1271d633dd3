"""The configuration real users run, end to end on every CI run: the `paper` profile's settings
(320x320 resize of 640x480 JPEGs, ImageNet-style weights from the torch hub cache, RandAugment on
the device, the pre-resized image cache) on embedded data at the real resolution, a few steps of
8 places x 4 images and the validation of a small split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from pipeline.config import load_config
from pipeline.models import model_from_config
from pipeline.training.trainer import train

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture
def imagenet_cache(tmp_path, monkeypatch) -> dict:
    """A resnet18 state dict where torchvision keeps ImageNet weights, in a private TORCH_HOME."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VPR_OFFLINE", "1")  # never download, whatever happens
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "resnet18-f37072fd.pth")
    return state


def _paper_overrides() -> list[str]:
    """The `paper` profile's run settings, as `--set` items."""
    profile = yaml.safe_load(PARAMS.read_text())["profiles"]["paper"]
    items = (profile.get("run") or {}).get("set") or {}
    return [f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
            for key, value in items.items()]


@pytest.mark.slow
def test_paper_profile_path_at_the_real_resolution(real_data, imagenet_cache, tmp_path):
    overrides = _paper_overrides()
    # The paper profile keeps the recipe's 320 x 320 and ImageNet weights (each study's own, by default).
    assert not any(o.startswith(("data.image_size", "model.pretrained")) for o in overrides)
    cfg = load_config(None, overrides + [
        f"data.train_root={real_data}/gsv_xs", f"data.val_root={real_data}/sf_xs/val",
        f"data.image_cache={tmp_path / 'cache'}", "data.num_workers=2", "training.device=cpu",
        "training.places_per_batch=8", "training.images_per_place=4", "training.batches_per_epoch=2",
        "training.epochs=1"])
    assert cfg.data.augment.policy == "randaugment" and cfg.data.augment.on == "device"
    assert list(cfg.data.image_size) == [320, 320] and cfg.model.pretrained == "imagenet"
    model = model_from_config(cfg)  # the weights come from the file the fixture wrote
    stem = [v for v in model.state_dict().values() if v.shape == (64, 3, 7, 7)]
    assert len(stem) == 1 and torch.equal(stem[0], imagenet_cache["conv1.weight"])

    summary = train(cfg, out_dir=tmp_path / "run", progress=False)
    recalls = {k: v for k, v in summary.items() if "recall" in k and isinstance(v, (int, float))}
    assert recalls and all(math.isfinite(v) and 0 <= v <= 100 for v in recalls.values())
    assert list((tmp_path / "cache").glob("*.u8"))  # training read the pre-resized images
