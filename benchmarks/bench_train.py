"""Throughput benchmark: training images/s end-to-end vs model-only, and evaluation images/s.

End-to-end = the real DataLoader (JPEG decode + resize on workers) feeding the real training step.
Model-only = the same step on a uint8 batch already on the device, so the gap between the two is
what data loading costs. Not a test: run it and copy the table into benchmarks/RESULTS.md.

    python benchmarks/bench_train.py --data data/bench --image-size 320 --places 100 --k 4 \
        --aggregator mixvpr --workers 16 --steps 30
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from pipeline.config import load_config
from pipeline.data.datasets import EvalDataset, PlaceBatchSampler, TrainPlacesDataset, collate_places
from pipeline.evaluation import extract_descriptors
from pipeline.components.losses import build_loss, build_miner
from pipeline.components.optim import build_optimizer
from pipeline.evaluation.device import resolve_channels_last, resolve_device, resolve_precision
from pipeline.models import model_from_config
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
    step = make_train_step(net, loss_fn, miner, optimizer, device, precision, channels_last)
    batch = args.places * args.k
    rows = []

    # Model-only: a fixed uint8 batch already on the device.
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.arange(args.places, device=device).repeat_interleave(args.k)
    for _ in range(args.warmup):
        step(images, labels)
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step(images, labels)
    _sync(device)
    model_only = batch * args.steps / (time.perf_counter() - t)
    rows.append(("train, model only", model_only))

    # End-to-end: JPEG files through the DataLoader.
    ds = TrainPlacesDataset(cfg.data.train_root, args.k, 4, None, (size, size))
    sampler = PlaceBatchSampler(len(ds), args.places, seed=0, batches_per_epoch=args.steps + args.warmup)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_places, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                        prefetch_factor=4 if args.workers > 0 else None)
    it = iter(loader)
    for _ in range(args.warmup):
        step(*next(it))
    _sync(device)
    t = time.perf_counter()
    n = 0
    for images_cpu, labels_cpu in it:
        step(images_cpu, labels_cpu)
        n += images_cpu.shape[0]
    _sync(device)
    rows.append(("train, end to end (JPEG loader)", n / (time.perf_counter() - t)))

    # Evaluation: descriptor extraction over the val split.
    val = EvalDataset(cfg.data.val_root, (size, size))
    extract_descriptors(model, val, batch_size=256, device=device, num_workers=args.workers,
                        precision=precision, channels_last=channels_last, progress=False)
    _sync(device)
    t = time.perf_counter()
    extract_descriptors(model, val, batch_size=256, device=device, num_workers=args.workers,
                        precision=precision, channels_last=channels_last, progress=False)
    _sync(device)
    rows.append(("evaluation, extraction (JPEG loader)", len(val) / (time.perf_counter() - t)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\n{name}, {size}x{size}, batch {args.places}x{args.k}, resnet18/layer3 + {args.aggregator}, "
          f"{precision}, workers {args.workers}, torch {torch.__version__}\n")
    print("| measure | images/s |\n| --- | ---: |")
    for label, value in rows:
        print(f"| {label} | {value:,.0f} |")


if __name__ == "__main__":
    main()
