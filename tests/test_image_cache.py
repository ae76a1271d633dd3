"""The pre-resized training image cache: the same pixels as decoding every time, built once,
rebuilt when the dataset changes."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import TrainPlacesDataset
from pipeline.errors import ImageLoadError
from pipeline.errors import UserError

SIZE = (24, 32)


def _train(root, cache=None, augment=None) -> TrainPlacesDataset:
    return TrainPlacesDataset(root / "gsv_xs", image_size=SIZE, augment=augment, image_cache=cache)


def test_cached_items_equal_decoded_items(embedded_root, tmp_path):
    plain = _train(embedded_root)
    cached = _train(embedded_root, tmp_path / "cache")
    for item in [(0, 5), (17, 99), (len(plain) - 1, 3)]:
        assert all(torch.equal(a, b) for a, b in zip(plain[item], cached[item]))
    aug = AugmentConfig(on="loader")  # augmentation runs after the cache, per epoch
    assert torch.equal(_train(embedded_root, augment=aug)[(3, 8)][0],
                       _train(embedded_root, tmp_path / "cache", aug)[(3, 8)][0])


def test_cache_is_built_once_and_rebuilt_when_an_image_changes(embedded_copy, tmp_path):
    cache = tmp_path / "cache"
    first = _train(embedded_copy, cache)
    files = sorted(cache.glob("*.u8"))
    assert len(files) == 1
    built = files[0].stat().st_mtime_ns
    _train(embedded_copy, cache)  # same dataset: reuses the file
    assert sorted(cache.glob("*.u8")) == files and files[0].stat().st_mtime_ns == built

    victim = first.place_images[2][0]
    shutil.copy(first.place_images[3][0], victim)  # another picture under the same name
    os.utime(victim, ns=(1, 1))
    changed = _train(embedded_copy, cache)
    assert len(list(cache.glob("*.u8"))) == 2  # a new cache, not stale pixels
    assert torch.equal(changed.cache.load(victim), changed.cache.load(first.place_images[3][0]))


def test_a_broken_image_stops_the_build_naming_it(embedded_copy, tmp_path):
    victim = Path(_train(embedded_copy).place_images[0][0])
    victim.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=re.escape(victim.name)):
        _train(embedded_copy, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.json"))  # no half-built cache is ever used


def test_unwritable_cache_folder_is_a_user_error(embedded_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="data.image_cache"):
        _train(embedded_root, blocker / "cache")
