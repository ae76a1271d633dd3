"""Time exact kNN at SF-XS-test scale (27,191 database x 1,000 queries, k=20) per backend.

Prints one markdown table row per (backend, D): the median of `--repeats` runs of the public
`knn_search` (candidates + canonical tie-ordering) and of the raw backend search alone.

    python benchmarks/bench_knn.py --dims 256 2048
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from pipeline.evaluation.knn import faiss_gpu_available, knn_search


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random float32 rows of unit L2 norm."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def median_seconds(fn: Callable[[], object], repeats: int, cuda: bool = False) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_faiss(db: np.ndarray, q: np.ndarray, k: int) -> None:
    import faiss

    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    index.search(q, k)


def raw_torch(db: torch.Tensor, q: torch.Tensor, k: int) -> None:
    torch.topk(q @ db.T, k, dim=1)


def main() -> None:
    """Parse arguments, run the timings and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=27_191)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"database={args.database} queries={args.queries} k={args.k} "
          f"torch_threads={torch.get_num_threads()} median of {args.repeats}\n")
    print("| backend | D | knn_search (s) | raw search (s) | queries/s |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(args.seed)
    for dim in args.dims:
        db, q = unit_vectors(rng, args.database, dim), unit_vectors(rng, args.queries, dim)
        db_t, q_t = torch.from_numpy(db), torch.from_numpy(q)
        runs = [
            ("faiss-cpu", lambda: knn_search(db, q, args.k, backend="faiss"),
             lambda: raw_faiss(db, q, args.k), False),
            ("torch-cpu", lambda: knn_search(db_t, q_t, args.k, backend="torch"),
             lambda: raw_torch(db_t, q_t, args.k), False),
        ]
        if torch.cuda.is_available():
            db_c, q_c = db_t.cuda(), q_t.cuda()
            runs.append(("torch-cuda", lambda: knn_search(db_c, q_c, args.k, backend="torch"),
                         lambda: raw_torch(db_c, q_c, args.k), True))
            if faiss_gpu_available():  # pip install -e '.[gpu]'
                runs.append(("faiss-gpu", lambda: knn_search(db_c, q_c, args.k, backend="faiss"),
                             lambda: knn_search(db_c, q_c, args.k, backend="faiss"), True))
        reference = None
        for name, full, raw, cuda in runs:
            t_full = median_seconds(full, args.repeats, cuda)
            t_raw = median_seconds(raw, args.repeats, cuda)
            _, idx = full()
            reference = idx if reference is None else reference
            same = "" if np.array_equal(idx, reference) else " (RANKING DIFFERS)"
            print(f"| {name}{same} | {dim} | {t_full:.3f} | {t_raw:.3f} | "
                  f"{args.queries / t_full:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
