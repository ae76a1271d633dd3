"""Training augmentation: the GSV-Cities RandAugment policy per image, reproducible from the draw
seed, and the batched device path equal to the per-image reference.

Tolerance of the batched path: it repeats torchvision's tensor arithmetic (same grids, same
rounding and truncation to uint8 after every op), so on CPU tensors it is expected to be exact;
the tests allow at most 0.1 % of pixel values off by more than one level and a mean absolute
difference below 0.02 levels, room for float reassociation on other platforms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import RandAugment

from pipeline.config import ConfigError, config_from_dict
from pipeline.data.augment import OPS, AugmentConfig, apply_ops, op_magnitude, sample_ops
from pipeline.data.datasets import PlaceBatchSampler, TrainPlacesDataset, collate_places
from pipeline.data.images import load_image
from pipeline.data.device_augment import augment_batch

SIZE = (48, 64)  # not square, so x and y cannot be confused


def _dataset(root, augment: AugmentConfig | None) -> TrainPlacesDataset:
    return TrainPlacesDataset(root / "gsv_xs", images_per_place=4, image_size=SIZE, augment=augment)


@pytest.fixture(scope="module")
def images(embedded_root) -> torch.Tensor:
    paths = sorted((embedded_root / "gsv_xs" / "train").rglob("*.jpg"))[:96]
    return torch.stack([load_image(p, SIZE) for p in paths])


def _close(reference: torch.Tensor, batched: torch.Tensor) -> None:
    diff = (reference.int() - batched.int()).abs()
    assert (diff > 1).float().mean().item() <= 1e-3
    assert diff.float().mean().item() < 0.02


def test_augmentation_changes_pixels_per_image_and_is_reproducible_from_the_draw_seed(embedded_root):
    plain = _dataset(embedded_root, None)
    aug = _dataset(embedded_root, AugmentConfig(on="loader"))
    base, labels, _ = plain[(5, 77)]
    first, labels_aug, ops = aug[(5, 77)]
    assert torch.equal(labels, labels_aug) and ops.shape == (4, 0, 2)  # nothing left for the device
    changed = [not torch.equal(a, b) for a, b in zip(base, first)]
    assert sum(changed) >= 3  # an image can draw three no-op-like ops, rarely
    assert torch.equal(first, aug[(5, 77)][0])  # same draw seed: same pixels
    assert not torch.equal(first, aug[(5, 78)][0])  # another draw seed: other ops
    # each image of an item has its own ops
    drawn = [sample_ops(77, k, AugmentConfig(), SIZE) for k in range(4)]
    assert len({d.tobytes() for d in drawn}) == 4


def test_policy_none_is_the_identity(embedded_root):
    plain = _dataset(embedded_root, None)
    none = _dataset(embedded_root, AugmentConfig(policy="none"))
    for item in [(0, 1), (9, 12345)]:
        a, b = plain[item], none[item]
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_worker_count_does_not_change_augmented_batches(embedded_root):
    ds = _dataset(embedded_root, AugmentConfig(on="loader"))

    def batches(workers):
        sampler = PlaceBatchSampler(len(ds), 4, seed=3, batches_per_epoch=2)
        return [x.clone() for x, _, _ in DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                                                    collate_fn=collate_places)]

    assert all(torch.equal(a, b) for a, b in zip(batches(0), batches(2)))


@pytest.mark.parametrize("op", OPS)
def test_each_op_batched_equals_the_per_image_reference(images, op):
    cfg = AugmentConfig()
    value, signed = op_magnitude(op, cfg, SIZE)
    for sign in ((1, -1) if signed else (1,)):
        ops = torch.tensor([[OPS.index(op), sign * value]], dtype=torch.float64).expand(len(images), 1, 2)
        reference = torch.stack([apply_ops(img, o.numpy()) for img, o in zip(images, ops)])
        _close(reference, augment_batch(images, ops))


def test_sampled_policy_batched_equals_reference(images):
    cfg = AugmentConfig()
    ops = torch.stack([torch.from_numpy(sample_ops(1000 + i, i % 4, cfg, SIZE)) for i in range(len(images))])
    reference = torch.stack([apply_ops(img, o.numpy()) for img, o in zip(images, ops)])
    batched = augment_batch(images, ops)
    _close(reference, batched)
    assert not torch.equal(batched, images)


def test_device_path_in_the_loader_equals_the_loader_path(embedded_root):
    on_loader = _dataset(embedded_root, AugmentConfig(on="loader"))
    on_device = _dataset(embedded_root, AugmentConfig(on="device"))
    items = [(p, 1000 + p) for p in range(8)]
    ref = collate_places([on_loader[i] for i in items])
    raw, labels, ops = collate_places([on_device[i] for i in items])
    assert ops.shape == (32, 3, 2) and torch.equal(labels, ref[1])
    _close(ref[0], augment_batch(raw, ops))


def test_distribution_of_ops_and_magnitudes_is_torchvisions():
    cfg = AugmentConfig()
    drawn = np.concatenate([sample_ops(seed, 0, cfg, SIZE) for seed in range(3000)])  # 9000 ops
    counts = np.bincount(drawn[:, 0].astype(int), minlength=len(OPS))
    expected = len(drawn) / len(OPS)  # torchvision draws the op uniformly
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 36.0  # 13 degrees of freedom: p ~ 0.001
    # magnitudes: torchvision's bin 9 of 31 for the same image size, sign +-1 with probability 1/2
    space = RandAugment(num_ops=3)._augmentation_space(31, SIZE)
    for i, op in enumerate(OPS):
        mags = drawn[drawn[:, 0] == i, 1]
        values, signed = space[op]
        want = float(values[9]) if values.ndim else 0.0
        assert np.allclose(np.abs(mags), abs(want), atol=1e-5), op
        if signed and want:
            assert 0.4 < (mags < 0).mean() < 0.6, op


def test_config_section_defaults_to_gsv_cities_and_accepts_none():
    cfg = config_from_dict({})
    assert (cfg.data.augment.policy, cfg.data.augment.num_ops, cfg.data.augment.magnitude,
            cfg.data.augment.num_magnitude_bins) == ("randaugment", 3, 9, 31)
    assert config_from_dict({"data": {"augment": "none"}}).data.augment.policy == "none"
    with pytest.raises(ConfigError, match="data.augment: magnitude 31 must be below"):
        config_from_dict({"data": {"augment": {"magnitude": 31}}})
    with pytest.raises(ConfigError, match="data.augment.policy"):
        config_from_dict({"data": {"augment": "autoaugment"}})
