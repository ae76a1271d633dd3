"""Throughput benchmark: training images/s end-to-end vs model-only, and evaluation images/s.

Model-only = the training step on a uint8 batch already on the device (with and without the
device-side RandAugment of the GSV-Cities recipe). End-to-end = the trainer's data path feeding
the same step, once per loader variant (`--loaders`): `jpeg` (workers decode and resize with PIL),
`cache` (workers read `data.image_cache`, built first and not timed) and `device` (`data.decode:
device`: workers read JPEG bytes, the device decodes, nvjpeg on CUDA). The gap between model-only and
end-to-end is what data loading costs. Not a test: run it and copy the table into
benchmarks/RESULTS.md (`--json FILE` also writes the figures).

    vpr data synth --out data/bench --image-size 480x640
    python benchmarks/bench_train.py --data data/bench --image-size 320 --places 100 --k 4 \
        --aggregator mixvpr --workers 16 --steps 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from pipeline.config import load_config
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import EvalDataset, PlaceBatchSampler, TrainPlacesDataset, collate_places
from pipeline.evaluation import extract_descriptors
from pipeline.components.losses import build_loss, build_miner
from pipeline.components.optim import build_optimizer
from pipeline.evaluation.device import resolve_channels_last, resolve_device, resolve_precision
from pipeline.models import model_from_config
from pipeline.data.device_augment import DeviceAugment
from pipeline.data.device_decode import DeviceDecoder, decoded_batches
from pipeline.training.trainer import make_train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="embedded data root (vpr data synth --out ...)")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--places", type=int, default=100, help="places per batch (P)")
    parser.add_argument("--k", type=int, default=4, help="images per place (K)")
    parser.add_argument("--aggregator", default="mixvpr")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--loaders", default="jpeg,cache,device", help="end-to-end variants, comma-separated")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    size = args.image_size
    cfg = load_config(None, [f"data.train_root={args.data}/gsv_xs", f"data.val_root={args.data}/sf_xs/val",
                             f"data.image_size=[{size},{size}]", f"evaluation.resize=[{size},{size}]",
                             "model.pretrained=none", f"model.aggregator.name={args.aggregator}"])
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    channels_last = resolve_channels_last("auto", device)
    torch.backends.cudnn.benchmark = True
    model = model_from_config(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn, miner = build_loss(cfg.loss).to(device), build_miner(cfg.miner)
    optimizer = build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    net = torch.compile(model) if args.compile else model
    augment = DeviceAugment(AugmentConfig())  # the recipe's RandAugment, on the device
    plain = make_train_step(net, loss_fn, miner, optimizer, device, precision, channels_last)
    step = make_train_step(net, loss_fn, miner, optimizer, device, precision, channels_last, augment=augment)
    batch = args.places * args.k
    rows = []

    # Model-only: a fixed uint8 batch already on the device (ops as the loader would draw them).
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.arange(args.places, device=device).repeat_interleave(args.k)
    ops = _fixed_ops(cfg.data.train_root, size, args)
    for label, fn, extra in (("train, model only", plain, ()),
                             ("train, model only + device RandAugment", step, (ops,))):
        for _ in range(args.warmup):
            fn(images, labels, *extra)
        _sync(device)
        t = time.perf_counter()
        for _ in range(args.steps):
            fn(images, labels, *extra)
        _sync(device)
        rows.append((label, batch * args.steps / (time.perf_counter() - t)))

    # End-to-end: the trainer's loader variants, RandAugment on the device.
    for variant in [v for v in args.loaders.split(",") if v]:
        ds = _train_set(cfg.data.train_root, size, args.k, variant)
        sampler = PlaceBatchSampler(len(ds), args.places, seed=0, batches_per_epoch=args.steps + args.warmup)
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_places, num_workers=args.workers,
                            pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                            prefetch_factor=4 if args.workers > 0 else None)
        it = iter(loader) if not variant.startswith("device") else decoded_batches(
            loader, DeviceDecoder((size, size), device), depth=0 if variant == "device-inline" else 2)
        for _ in range(args.warmup):
            step(*next(it))
        _sync(device)
        t = time.perf_counter()
        n = 0
        for batch_images, batch_labels, batch_ops in it:
            step(batch_images, batch_labels, batch_ops)
            n += len(batch_images)
        _sync(device)
        rows.append((f"train, end to end ({LOADERS[variant]})", n / (time.perf_counter() - t)))
        del it, loader

    # Evaluation: descriptor extraction over the val split.
    val = EvalDataset(cfg.data.val_root, (size, size))
    extract_descriptors(model, val, batch_size=cfg.evaluation.batch_size, device=device, num_workers=args.workers,
                        precision=precision, channels_last=channels_last, progress=False)
    _sync(device)
    t = time.perf_counter()
    extract_descriptors(model, val, batch_size=cfg.evaluation.batch_size, device=device, num_workers=args.workers,
                        precision=precision, channels_last=channels_last, progress=False)
    _sync(device)
    rows.append(("evaluation, extraction (JPEG loader)", len(val) / (time.perf_counter() - t)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\n{name}, {size}x{size}, batch {args.places}x{args.k}, resnet18/layer3 + {args.aggregator}, "
          f"{precision}, workers {args.workers}, torch {torch.__version__}\n")
    print("| measure | images/s |\n| --- | ---: |")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "image_size": size, "batch": [args.places, args.k],
                       "aggregator": args.aggregator, "precision": precision, "workers": args.workers,
                       "torch": torch.__version__, "images_per_s": dict(rows)}, f, indent=2)


LOADERS = {"jpeg": "workers decode + resize JPEGs with PIL",
           "cache": "workers read data.image_cache",
           "device": "data.decode: device, workers read JPEG bytes",
           "device-inline": "data.decode: device, decoded in line, not ahead"}


def _train_set(root: str, size: int, k: int, variant: str) -> TrainPlacesDataset:
    """The training set as the trainer builds it for one loader variant."""
    if variant not in LOADERS:
        raise SystemExit(f"--loaders: unknown variant '{variant}'; choose from {', '.join(LOADERS)}")
    kwargs = {"augment": AugmentConfig()}
    if variant == "cache":
        kwargs["image_cache"] = tempfile.mkdtemp(prefix="bench-train-cache-")
    if variant.startswith("device"):
        kwargs["decode"] = "device"
    return TrainPlacesDataset(root, k, 4, None, (size, size), **kwargs)


def _fixed_ops(root: str, size: int, args: argparse.Namespace) -> torch.Tensor:
    """One batch of augmentation ops as the loader draws them, for the model-only measurement."""
    ds = TrainPlacesDataset(root, args.k, 4, None, (size, size), augment=AugmentConfig(), decode="device")
    return torch.cat([ds[(p % len(ds), p)][2] for p in range(args.places)])


if __name__ == "__main__":
    main()
