"""PyTorch datasets: training places (K views of one place) with a P-places sampler, and evaluation splits.

Images are returned as uint8 CHW tensors, resized on the loader workers; conversion to float and
ImageNet normalisation happen on the device (`pipeline.data.transforms.normalize`), so a GPU
receives a quarter of the bytes and the workers skip a float pass. A training item also carries
each image's augmentation ops (`pipeline.data.augment`), drawn from the item's draw seed: the
loader applies them itself (`augment.on: loader`) or leaves them to the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.data.augment import AugmentConfig, apply_ops, sample_ops
from pipeline.data.decoded_cache import process_cache
from pipeline.data.device_decode import EncodedImages, decode_setting_problem
from pipeline.data.image_cache import ResizedImageCache
from pipeline.data.images import INTERPOLATIONS, load_image
from pipeline.data.benchmarks.formats import read_split
from pipeline.data.index import EvalSplitIndex, index_training_set
from pipeline.errors import ConfigError

class TrainPlacesDataset(Dataset):
    """Places of a GSV-XS / GSV-Cities training set; an item is K images of one place.

    Items are addressed by `(place_index, draw_seed)` pairs produced by `PlaceBatchSampler`, so
    which K views are drawn depends only on the seed, never on worker count or global RNG state.
    """

    def __init__(self, root: str | Path, images_per_place: int = 4, min_images_per_place: int = 4,
                 cities: Sequence[str] | None = None, image_size: tuple[int, int] = (320, 320),
                 interpolation: str = "bilinear", parameter: str = "data.train_root",
                 augment: AugmentConfig | None = None, image_cache: str | Path | None = None,
                 decode: str = "loader") -> None:
        if images_per_place < 1:
            raise ConfigError(f"images_per_place must be >= 1, got {images_per_place}")
        manifest = index_training_set(root, parameter)
        if cities:
            unknown = sorted(set(cities) - set(manifest["city"]))
            if unknown:
                raise ConfigError(f"data.cities: {unknown} not found under '{root}'; available: "
                                 f"{sorted(manifest['city'].unique())}")
            manifest = manifest[manifest["city"].isin(list(cities))]
        groups = manifest.groupby(["city", "place_id"], sort=True)["path"].apply(list)
        groups = groups[groups.apply(len) >= max(min_images_per_place, images_per_place)]
        if len(groups) == 0:
            raise ConfigError(f"{parameter}: no place under '{root}' has at least "
                             f"{max(min_images_per_place, images_per_place)} images")
        self.root = Path(root)
        self.place_keys: list[tuple[str, int]] = list(groups.index)
        self.place_images: list[list[str]] = [sorted(v) for v in groups.values]
        self.images_per_place = images_per_place
        self.image_size = tuple(image_size)
        self.interpolation = interpolation
        self.augment = augment if augment is not None and augment.enabled else None
        problem = decode_setting_problem(decode, image_cache, bool(self.augment and self.augment.on == "loader"))
        if problem:
            raise ConfigError(f"data.decode: {problem}")
        self.decode = decode
        self.cache = None if image_cache is None else ResizedImageCache(
            image_cache, [p for paths in self.place_images for p in paths], self.image_size, interpolation)

    def __len__(self) -> int:
        return len(self.place_images)

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.place_images)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor | EncodedImages, torch.Tensor,
                                                                 torch.Tensor]:
        """`(images, labels, ops)`: K uint8 views (or, with `decode="device"`, their JPEG bytes),
        their place label, and the augmentation ops still to apply on the device, `(K, num_ops, 2)`
        (`(K, 0, 2)` when none are left)."""
        place, draw_seed = item if isinstance(item, tuple) else (item, item)
        paths = self.place_images[place]
        rng = np.random.default_rng(draw_seed)
        chosen = rng.choice(len(paths), size=self.images_per_place, replace=False)
        ops = torch.zeros((self.images_per_place, 0, 2), dtype=torch.float64)
        if self.augment is not None:  # drawn for the training size, whichever side resizes
            ops = torch.from_numpy(np.stack([sample_ops(draw_seed, k, self.augment, self.image_size)
                                             for k in range(self.images_per_place)]))
        labels = torch.full((self.images_per_place,), place, dtype=torch.long)
        if self.decode == "device":
            return EncodedImages.read([paths[i] for i in chosen]), labels, ops
        images = [self.cache.load(paths[i]) if self.cache is not None
                  else load_image(paths[i], self.image_size, self.interpolation) for i in chosen]
        if self.augment is not None and self.augment.on == "loader":  # the per-image reference
            images = [apply_ops(img, o.numpy()) for img, o in zip(images, ops)]
            ops = ops[:, :0]
        return torch.stack(images), labels, ops

    def __repr__(self) -> str:
        cities = sorted({c for c, _ in self.place_keys})
        return (f"TrainPlacesDataset({self.root}: {len(self)} places, {self.num_images} images, "
                f"{len(cities)} cities, K={self.images_per_place}, size={self.image_size}, "
                f"augment={self.augment.policy + ' on ' + self.augment.on if self.augment else 'none'}, "
                f"decode on {self.decode})")


class PlaceBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of P distinct places, reshuffled each epoch, deterministic in (seed, epoch).

    Yields lists of `(place_index, draw_seed)`. An epoch is one pass over the places in full
    batches unless `batches_per_epoch` is set, in which case passes repeat as needed.
    """

    def __init__(self, num_places: int, places_per_batch: int, seed: int = 0,
                 batches_per_epoch: int | None = None) -> None:
        if places_per_batch > num_places:
            raise ConfigError(f"training.places_per_batch={places_per_batch} exceeds the "
                             f"{num_places} places available in the training set")
        self.num_places = num_places
        self.places_per_batch = places_per_batch
        self.seed = seed
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle to produce (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch or self.num_places // self.places_per_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        produced, order, cursor = 0, rng.permutation(self.num_places), 0
        while produced < len(self):
            if cursor + self.places_per_batch > len(order):
                order, cursor = rng.permutation(self.num_places), 0
            places = order[cursor:cursor + self.places_per_batch]
            cursor += self.places_per_batch
            draws = rng.integers(0, 2**62, size=len(places))
            yield [(int(p), int(d)) for p, d in zip(places, draws)]
            produced += 1


def collate_places(batch: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor | EncodedImages, torch.Tensor,
                                                                   torch.Tensor]:
    """Stack P items of K images into a flat (P*K, C, H, W) batch (or P*K JPEGs to decode on the
    device) with place labels and the per-image augmentation ops left for the device (P*K, num_ops, 2)."""
    images = [b[0] for b in batch]
    flat = EncodedImages.concat(images) if isinstance(images[0], EncodedImages) else torch.cat(images)
    return flat, torch.cat([b[1] for b in batch]), torch.cat([b[2] for b in batch])


class EvalDataset(Dataset):
    """Database then queries of one evaluation split, with each query's positives.

    `ds[i]` is `(uint8 image CHW, i)`; indices below `num_database` are database images.
    """

    def __init__(self, split_dir: str | Path, image_size: tuple[int, int] | None = (320, 320),
                 interpolation: str = "bilinear", radius: float = 25.0,
                 parameter: str = "dataset") -> None:
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation '{interpolation}' is not one of {sorted(INTERPOLATIONS)}")
        self.index: EvalSplitIndex = read_split(split_dir, radius, parameter)
        self.image_size = None if image_size is None else tuple(image_size)
        self.interpolation = interpolation

    @property
    def name(self) -> str:
        return self.index.name

    @property
    def database_paths(self) -> list[Path]:
        return self.index.database_paths

    @property
    def query_paths(self) -> list[Path]:
        return self.index.query_paths

    @property
    def positives(self) -> list[np.ndarray]:
        return self.index.positives

    @property
    def num_database(self) -> int:
        return len(self.index.database_paths)

    @property
    def num_queries(self) -> int:
        return len(self.index.query_paths)

    def __len__(self) -> int:
        return self.num_database + self.num_queries

    def path(self, i: int) -> Path:
        return self.database_paths[i] if i < self.num_database else self.query_paths[i - self.num_database]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.path(i)
        cache = process_cache()  # decoded once per process, reused across epochs and runs
        key = cache.key(path, self.image_size, self.interpolation)
        image = cache.get(key)
        if image is None:
            image = load_image(path, self.image_size, self.interpolation)
            cache.put(key, image)
        return image, i

    def __repr__(self) -> str:
        return (f"EvalDataset({self.name}: {self.num_database} database, {self.num_queries} queries, "
                f"size={self.image_size}, {self.interpolation})")
