"""CPU cost per training image of the loader, at the real datasets' resolution (640x480 JPEGs).

    python benchmarks/bench_loader.py [--data DIR] [--images 96] [--repeat 3]

Generates its own 480x640 embedded data (`vpr data synth --scale real`) unless `--data` names
one, then measures on one core, in one run:

- `reference_ms_per_image`: the naive path, PIL decode + Resize(320x320, bilinear) +
  torchvision RandAugment(num_ops=3, bilinear) per image, as GSV-Cities' loader does;
- `cpu_ms_per_image`: our path's CPU work per training image (what a loader worker does with
  `data.image_cache` set and `data.augment.on: device`: read the pre-resized uint8 image, draw
  its ops, collate);
- `device_augment_ms_per_image`: the batched RandAugment (`augment_batch`) on the `--device`
  (default: CPU tensors), the cost the device pays;
- `cpu_ms_per_image_decode_on_device`: the worker's CPU work with `data.decode: device` (read the
  JPEG bytes, draw the ops, collate), and `device_decode_resize_ms_per_image`: what the device then
  pays per image to decode (nvjpeg on CUDA, libjpeg-turbo on the CPU) and resize the batch;
- the components in between: PIL decode, PIL decode + resize, torchvision.io.decode_jpeg
  (libjpeg-turbo) + resize, the per-image reference augmentation on tensors, and the one-off
  cost of building the cache.

Prints one JSON object; `goal_met` checks cpu_ms_per_image <= 0.8 and >= 10x below the reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode, RandAugment
from torchvision.transforms import functional as F

from pipeline.data.augment import AugmentConfig, sample_ops
from pipeline.data.datasets import TrainPlacesDataset, collate_places, load_image
from pipeline.data.device_augment import augment_batch
from pipeline.data.device_decode import DeviceDecoder
from pipeline.data.image_cache import ResizedImageCache
from pipeline.data.synthetic import generate

SIZE = (320, 320)


def _per_image_ms(fn: Callable[[Path], object], paths: list[Path], repeat: int) -> float:
    """Best of `repeat` passes over `paths`, in milliseconds per image."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in paths:
            fn(path)
        best = min(best, (time.perf_counter() - start) / len(paths))
    return best * 1000


def _reference(path: Path, policy: RandAugment) -> torch.Tensor:
    with Image.open(path) as img:
        img = img.convert("RGB").resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR)
    return F.pil_to_tensor(policy(img))


def _turbo(path: Path) -> torch.Tensor:
    data = torchvision.io.read_file(str(path))
    img = torchvision.io.decode_jpeg(data)
    return F.resize(img, list(SIZE), InterpolationMode.BILINEAR, antialias=True)


def _device_ms(fn: Callable[[], object], count: int, device: torch.device, repeat: int) -> float:
    """Best of `repeat` calls of `fn` (after one warm-up) on `device`, in ms per image of `count`."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best / count * 1000


def _data(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data)
    root = Path(tempfile.mkdtemp(prefix="bench-loader-")) / "data"
    generate(root, seed=0, scale="real", image_size="480x640", progress=False)
    return root


def _items_ms(ds: TrainPlacesDataset, repeat: int, places: int = 8) -> float:
    """Our loader path per image: items of K views through the dataset and the collate."""
    items = [(p % len(ds), 1000 + p) for p in range(places * 4)]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for b in range(0, len(items), places):
            collate_places([ds[i] for i in items[b:b + places]])
        best = min(best, (time.perf_counter() - start) / (len(items) * ds.images_per_place))
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="embedded data root at 480x640 (default: generate)")
    parser.add_argument("--images", type=int, default=96, help="images timed per component")
    parser.add_argument("--repeat", type=int, default=3, help="passes per component (best is kept)")
    parser.add_argument("--device", default="cpu", help="where the device-side work is timed (cpu, cuda)")
    parser.add_argument("--device-batch", type=int, default=32, help="images per device-side batch")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)  # per core
    root = _data(args)
    paths = sorted((root / "gsv_xs" / "train").rglob("*.jpg"))[:args.images]
    with Image.open(paths[0]) as img:
        source = [img.height, img.width]
    policy = RandAugment(num_ops=3, interpolation=InterpolationMode.BILINEAR)
    torch.manual_seed(0)
    result: dict = {"source_size": source, "train_size": list(SIZE), "images": len(paths)}
    result["reference_ms_per_image"] = _per_image_ms(lambda p: _reference(p, policy), paths, args.repeat)
    result["pil_decode_ms"] = _per_image_ms(lambda p: Image.open(p).convert("RGB"), paths, args.repeat)
    result["pil_decode_resize_ms"] = _per_image_ms(lambda p: load_image(p, SIZE), paths, args.repeat)
    result["turbo_decode_resize_ms"] = _per_image_ms(_turbo, paths, args.repeat)

    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    ds = TrainPlacesDataset(root / "gsv_xs", image_size=SIZE, augment=AugmentConfig(on="device"))
    start = time.perf_counter()
    all_paths = [p for group in ds.place_images for p in group]
    ResizedImageCache(cache_dir, all_paths, SIZE)
    result["cache_build_ms_per_image"] = (time.perf_counter() - start) / len(all_paths) * 1000
    cached = TrainPlacesDataset(root / "gsv_xs", image_size=SIZE, augment=AugmentConfig(on="device"),
                                image_cache=cache_dir)
    result["cpu_ms_per_image"] = _items_ms(cached, args.repeat)
    result["cpu_ms_per_image_without_cache"] = _items_ms(ds, 1)
    result["loader_reference_augment_ms_per_image"] = _items_ms(
        TrainPlacesDataset(root / "gsv_xs", image_size=SIZE, augment=AugmentConfig(on="loader"),
                           image_cache=cache_dir), 1)

    places = max(1, args.device_batch // 4)
    images, _, ops = collate_places([cached[(p % len(cached), 7 + p)] for p in range(places)])
    images = images.to(device)
    cfg = AugmentConfig()
    ops = torch.stack([torch.from_numpy(sample_ops(7 + i, 0, cfg, SIZE)) for i in range(len(images))])
    result["device"] = str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)
    result["device_augment_ms_per_image"] = _device_ms(lambda: augment_batch(images, ops), len(images),
                                                       device, args.repeat)

    encoded_set = TrainPlacesDataset(root / "gsv_xs", image_size=SIZE, augment=AugmentConfig(on="device"),
                                     decode="device")
    result["cpu_ms_per_image_decode_on_device"] = _items_ms(encoded_set, args.repeat)
    encoded, _, _ = collate_places([encoded_set[(p % len(encoded_set), 7 + p)] for p in range(places)])
    decoder = DeviceDecoder(SIZE, device)
    result["device_decode_resize_ms_per_image"] = _device_ms(lambda: decoder(encoded), len(encoded),
                                                             device, args.repeat)
    result["speedup_vs_reference"] = result["reference_ms_per_image"] / result["cpu_ms_per_image"]
    result["goal_met"] = bool(result["cpu_ms_per_image"] <= 0.8 and result["speedup_vs_reference"] >= 10)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
