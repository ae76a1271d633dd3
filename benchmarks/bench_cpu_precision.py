"""What `training.precision: auto` and `training.channels_last: auto` buy on this CPU.

Times one training step (forward, backward, SGD step) and one inference batch of ResNet-18 cut
after layer3 with each aggregator, on one core, in three settings: fp32 in the contiguous layout
(what "auto" meant on CPUs before), fp32 channels_last, and bf16 autocast channels_last. Prints
JSON: milliseconds per image for each, and what "auto" resolves to here. Not a test.

    python benchmarks/bench_cpu_precision.py                  # demo size: 64 px, batch 64
    python benchmarks/bench_cpu_precision.py --size 320 --batch 16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline.config import load_config
from pipeline.evaluation.device import cpu_has_native_bf16, resolve_channels_last, resolve_precision
from pipeline.models import model_from_config

SETTINGS = {"fp32": (False, False), "fp32_channels_last": (True, False), "bf16_channels_last": (True, True)}


def ms_per_image(aggregator: str, size: int, batch: int, channels_last: bool, bf16: bool, train: bool,
                 repeats: int) -> float:
    """Best of `repeats` timed steps (after one untimed), in milliseconds per image."""
    cfg = load_config(None, ["model.pretrained=none", f"model.aggregator.name={aggregator}",
                             f"data.image_size=[{size},{size}]", f"evaluation.resize=[{size},{size}]"])
    torch.manual_seed(0)
    model = model_from_config(cfg).train(train)
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(train):
            y = model(x)
        if train:
            y.float().square().sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:]) * 1000 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="square image size (demo: 64, paper: 320)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (demo: 16 places x 4)")
    parser.add_argument("--aggregators", default="avg,gem,mixvpr,cosplace,convap")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cpu = torch.device("cpu")
    report = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "native_bf16": cpu_has_native_bf16(),
              "auto_precision": resolve_precision("auto", cpu),
              "auto_channels_last": resolve_channels_last("auto", cpu),
              "size": args.size, "batch": args.batch, "threads": 1, "ms_per_image": {}}
    for aggregator in args.aggregators.split(","):
        row = {}
        for name, (channels_last, bf16) in SETTINGS.items():
            for phase, train in (("train", True), ("eval", False)):
                row[f"{phase}_{name}"] = round(ms_per_image(aggregator, args.size, args.batch, channels_last,
                                                            bf16, train, args.repeats), 2)
        for phase in ("train", "eval"):
            row[f"{phase}_speedup_bf16_channels_last"] = round(row[f"{phase}_fp32"] / row[f"{phase}_bf16_channels_last"], 2)
        report["ms_per_image"][aggregator] = row
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
