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


def _raw_search(db, q, k: int) -> None:
    """The backend's search alone (faiss IndexFlatIP on the CPU, matmul + topk on a GPU)."""
    if isinstance(db, np.ndarray):
        import faiss

        index = faiss.IndexFlatIP(db.shape[1])
        index.add(db)
        index.search(q, k)
    else:
        torch.topk(q @ db.T, k, dim=1)


def knn(dims: list[int], k: int, device: str, repeats: int, seed: int, full_up_to: int) -> None:
    """Seconds of exact top-k search at each benchmark's size, per descriptor dimension: the raw
    backend search, and the public `knn_search` (tie-exact ordering) up to D = `full_up_to`.

    Random unit vectors are the worst case of `knn_search`'s tie handling: in high D their
    similarities crowd within the float32 error bound, so most queries fall back to a float64
    rescoring of the whole database (minutes at D = 8448); real descriptors are not that crowded."""
    print(f"\nexact kNN (k={k}, {device}), median of {repeats}; knn_search up to D = {full_up_to}\n")
    print("| scale | database x queries | D | raw search (s) | knn_search (s) | queries/s (raw) |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(seed)
    for scale, (n_db, n_q) in SCALES.items():
        for dim in dims:
            db = rng.standard_normal((n_db, dim), dtype=np.float32)
            q = rng.standard_normal((n_q, dim), dtype=np.float32)
            db /= np.linalg.norm(db, axis=1, keepdims=True)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            db_x, q_x = (torch.from_numpy(db).to(device), torch.from_numpy(q).to(device)) if device != "cpu" else (db, q)
            def timed(fn) -> float:
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    fn()
                    if device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                return statistics.median(times)

            raw = timed(lambda: _raw_search(db_x, q_x, k))
            full = f"{timed(lambda: knn_search(db_x, q_x, k)):.2f}" if dim <= full_up_to else "-"
            print(f"| {scale} | {n_db:,} x {n_q:,} | {dim} | {raw:.2f} | {full} | {n_q / raw:,.0f} |", flush=True)


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
    parser.add_argument("--full-up-to", type=int, default=2048,
                        help="time the public knn_search (tie-exact) up to this D; random vectors above it "
                        "trigger its slow full-database rescoring")
    args = parser.parse_args()
    if not args.skip_extraction:
        extraction(args.aggregators, args.size, args.batch, args.device, args.repeats)
    if not args.skip_knn:
        knn(args.dims, args.k, args.device, args.repeats, args.seed, args.full_up_to)


if __name__ == "__main__":
    main()
