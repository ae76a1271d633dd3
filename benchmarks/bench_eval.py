"""Evaluation at benchmark scale: descriptor extraction (images/s) and exact kNN at the sizes of
MSLS val (18,871 database x 740 queries) and Pitts30k test (10,000 x 6,816).

Extraction runs the real path (an embedded benchmark at the real 480 x 640 resolution, decoded,
resized and normalised as `vpr evaluate --benchmark` does) through a ResNet-18 cut after layer3
with each aggregator, in fp32. kNN times the public `knn_search` (faiss on the CPU, torch on a
GPU) on random unit descriptors of D = 256 .. 8448 (8448: SALAD's descriptor).

    python benchmarks/bench_eval.py                          # both parts, defaults below
    python benchmarks/bench_eval.py --skip-extraction --dims 256 2048 8448
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import config_from_dict
from pipeline.data.datasets import EvalDataset
from pipeline.evaluation.descriptors import extract_descriptors
from pipeline.evaluation.knn import knn_search
from pipeline.models import model_from_config

SCALES = {"msls_val": (18_871, 740), "pitts30k": (10_000, 6_816)}


def extraction(aggregators: list[str], size: int, batch: int, device: str, repeats: int) -> None:
    """Images/s of descriptor extraction on an embedded Pitts30k at the real resolution."""
    from pipeline.data.synthetic.benchmarks import generate_benchmarks

    root = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    generate_benchmarks(root, ["pitts30k"], scale="small", image_size="480x640", progress=False)
    dataset = EvalDataset(root / "pitts30k", (size, size))
    print(f"\nextraction: {len(dataset)} images of 480x640 resized to {size}x{size}, batch {batch}, fp32, "
          f"{device}, torch threads {torch.get_num_threads()}, median of {repeats}\n")
    print("| aggregator | D | images/s | ms/image |")
    print("|---|---:|---:|---:|")
    for name in aggregators:
        cfg = config_from_dict({"model": {"pretrained": "none", "aggregator": {"name": name}},
                                "data": {"image_size": [size, size]}, "evaluation": {"resize": [size, size]}})
        model = model_from_config(cfg).eval().to(device)
        times = []
        for _ in range(repeats + 1):  # the first pass warms caches and kernels
            start = time.perf_counter()
            out = extract_descriptors(model, dataset, batch_size=batch, device=torch.device(device), progress=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])
        print(f"| {name} | {out.shape[1]} | {len(dataset) / seconds:,.1f} | {1000 * seconds / len(dataset):.1f} |",
              flush=True)


def knn(dims: list[int], k: int, device: str, repeats: int, seed: int) -> None:
    """Seconds of exact top-k search at each benchmark's size, per descriptor dimension."""
    print(f"\nexact kNN (knn_search, k={k}, {device}), median of {repeats}\n")
    print("| scale | database x queries | D | seconds | queries/s |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(seed)
    for scale, (n_db, n_q) in SCALES.items():
        for dim in dims:
            db = rng.standard_normal((n_db, dim), dtype=np.float32)
            q = rng.standard_normal((n_q, dim), dtype=np.float32)
            db /= np.linalg.norm(db, axis=1, keepdims=True)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            db_x, q_x = (torch.from_numpy(db).to(device), torch.from_numpy(q).to(device)) if device != "cpu" else (db, q)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                knn_search(db_x, q_x, k)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            print(f"| {scale} | {n_db:,} x {n_q:,} | {dim} | {seconds:.2f} | {n_q / seconds:,.0f} |", flush=True)


def main() -> None:
    """Parse the arguments and run the parts asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregators", nargs="+", default=["gem", "mixvpr", "convap"])
    parser.add_argument("--size", type=int, default=320, help="evaluation image side (default 320)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8448])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--skip-knn", action="store_true")
    args = parser.parse_args()
    if not args.skip_extraction:
        extraction(args.aggregators, args.size, args.batch, args.device, args.repeats)
    if not args.skip_knn:
        knn(args.dims, args.k, args.device, args.repeats, args.seed)


if __name__ == "__main__":
    main()
