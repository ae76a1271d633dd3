"""Training places, the P x K sampler and evaluation splits, on the embedded data."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.data.datasets import EvalDataset, PlaceBatchSampler, TrainPlacesDataset, collate_places
from pipeline.data.images import load_image
from pipeline.errors import ImageLoadError
from pipeline.data.index import DatasetLayoutError, compute_positives, utm_of
from pipeline.errors import UserError


def test_train_dataset_yields_k_views_of_one_place(embedded_root):
    ds = TrainPlacesDataset(embedded_root / "gsv_xs", images_per_place=4, image_size=(32, 32))
    assert len(ds) > 50 and "places" in repr(ds)
    images, labels, ops = ds[(3, 123)]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 3, 3, 3]
    assert ops.shape == (4, 0, 2)  # no augmentation asked: nothing left for the device
    again, _, _ = ds[(3, 123)]
    assert torch.equal(images, again)  # the draw depends only on the seed


def test_cities_subset_and_unknown_city(embedded_root):
    full = TrainPlacesDataset(embedded_root / "gsv_xs", image_size=(32, 32))
    city = sorted({c for c, _ in full.place_keys})[0]
    sub = TrainPlacesDataset(embedded_root / "gsv_xs", cities=[city], image_size=(32, 32))
    assert 0 < len(sub) < len(full) and {c for c, _ in sub.place_keys} == {city}
    with pytest.raises(ValueError, match="Atlantis"):
        TrainPlacesDataset(embedded_root / "gsv_xs", cities=["Atlantis"])


def test_min_images_per_place_filters(embedded_root):
    ds = TrainPlacesDataset(embedded_root / "gsv_xs", min_images_per_place=4, image_size=(32, 32))
    strict = TrainPlacesDataset(embedded_root / "gsv_xs", min_images_per_place=6, image_size=(32, 32))
    assert len(strict) <= len(ds)
    assert all(len(v) >= 6 for v in strict.place_images)


def test_sampler_distinct_places_deterministic_and_reshuffled():
    sampler = PlaceBatchSampler(num_places=50, places_per_batch=8, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert len(first) == len(sampler) == 6
    for batch in first:
        assert len({p for p, _ in batch}) == 8
    sampler.set_epoch(0)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(PlaceBatchSampler(50, 8, seed=4)) != first
    long = PlaceBatchSampler(50, 8, seed=3, batches_per_epoch=20)
    assert len(list(long)) == 20


def test_sampler_rejects_batches_larger_than_the_dataset():
    with pytest.raises(ValueError, match="places_per_batch=20 exceeds the 10 places"):
        PlaceBatchSampler(10, 20)


def test_loader_batches_are_identical_with_and_without_workers(embedded_root):
    ds = TrainPlacesDataset(embedded_root / "gsv_xs", image_size=(32, 32))

    def batches(workers):
        sampler = PlaceBatchSampler(len(ds), 4, seed=0, batches_per_epoch=2)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate_places)
        return [(x.clone(), y.clone(), o.clone()) for x, y, o in loader]

    serial, parallel = batches(0), batches(2)
    assert serial[0][0].shape == (16, 3, 32, 32)
    for (a, la, oa), (b, lb, ob) in zip(serial, parallel):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(oa, ob)


def test_eval_dataset_orders_database_then_queries(embedded_root):
    ds = EvalDataset(embedded_root / "sf_xs" / "val", image_size=(32, 32))
    assert len(ds) == ds.num_database + ds.num_queries and ds.num_queries > 0
    image, index = ds[ds.num_database]
    assert index == ds.num_database and image.shape == (3, 32, 32)
    expected = compute_positives(utm_of(ds.database_paths), utm_of(ds.query_paths), 25.0)
    assert all(np.array_equal(a, b) for a, b in zip(ds.positives, expected))
    assert "sf_xs/val" in repr(ds)


def test_missing_root_names_the_parameter_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"data.val_root: '.*nowhere'.*database/"):
        EvalDataset(tmp_path / "nowhere", parameter="data.val_root")
    with pytest.raises(DatasetLayoutError, match=r"data.train_root: .*train/<City>"):
        TrainPlacesDataset(tmp_path / "nowhere")


def test_missing_queries_folder(embedded_copy):
    shutil.rmtree(embedded_copy / "sf_xs" / "val" / "queries")
    with pytest.raises(DatasetLayoutError, match="no 'queries/' folder"):
        EvalDataset(embedded_copy / "sf_xs" / "val")


def test_loader_raises_on_a_truncated_image_naming_it(embedded_copy):
    ds = EvalDataset(embedded_copy / "sf_xs" / "val", image_size=(32, 32))
    victim = ds.database_paths[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ImageLoadError, match=re.escape(str(victim))):
        ds[0]
    empty = ds.query_paths[0]
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="cannot read image"):
        load_image(empty, (32, 32))


def test_original_gsv_cities_layout_loads_the_same_places(tmp_path):
    from pipeline.data.synthetic import generate

    generate(tmp_path / "d", seed=1, scale="demo", image_size=32, gsv_cities_layout=True, progress=False)
    xs = TrainPlacesDataset(tmp_path / "d" / "gsv_xs", image_size=(32, 32))
    original = TrainPlacesDataset(tmp_path / "d" / "gsv_cities", image_size=(32, 32))
    assert len(original) == len(xs) and original.num_images == xs.num_images
    assert original.place_keys == xs.place_keys
    assert [len(v) for v in original.place_images] == [len(v) for v in xs.place_images]


def test_eval_images_are_decoded_once_and_a_changed_file_is_reread(embedded_copy):
    from pipeline.data.decoded_cache import process_cache

    cache = process_cache()
    cache.clear()
    ds = EvalDataset(embedded_copy / "sf_xs" / "val", image_size=(32, 32))
    first = [ds[i][0] for i in range(5)]
    assert cache.misses == 5 and cache.hits == 0
    again = [ds[i][0] for i in range(5)]  # the next epoch, or the next run in this process
    assert cache.hits == 5 and all(torch.equal(a, b) for a, b in zip(first, again))
    again[0].zero_()  # a caller's copy: the cache is unharmed
    assert torch.equal(ds[0][0], first[0])
    other = EvalDataset(embedded_copy / "sf_xs" / "val", image_size=(24, 24))
    assert other[0][0].shape == (3, 24, 24)  # another size is another image
    shutil.copy(ds.path(1), ds.path(0))  # a changed file is read again
    import os
    os.utime(ds.path(0), ns=(1, 1))
    assert torch.equal(ds[0][0], first[1])


def test_eval_cache_is_bounded(embedded_root, monkeypatch):
    from pipeline.data.decoded_cache import DecodedImageCache

    monkeypatch.setenv("VPR_EVAL_CACHE_MB", "0.01")  # 10 KB: three 32x32 images
    small = DecodedImageCache()
    ds = EvalDataset(embedded_root / "sf_xs" / "val", image_size=(32, 32))
    for i in range(10):
        small.put(small.key(ds.path(i), (32, 32), "bilinear"), ds[i][0])
    assert small.bytes <= small.max_bytes and small.bytes == 3 * 3 * 32 * 32
    monkeypatch.setenv("VPR_EVAL_CACHE_MB", "lots")
    with pytest.raises(UserError, match="VPR_EVAL_CACHE_MB"):
        DecodedImageCache()
