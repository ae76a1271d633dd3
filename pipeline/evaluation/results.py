"""Evaluate a model on one split and keep per-query results (for statistics and figures)."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.transforms import normalize
from pipeline.evaluation.descriptors import PRECISIONS, extract_descriptors
from pipeline.evaluation.knn import BACKENDS, knn_search, resolve_backend
from pipeline.evaluation.recall import per_query_hits
from pipeline.runs.folder import RESULT_PREDICTIONS, RESULT_SUMMARY

log = logging.getLogger(__name__)



@dataclass
class EvaluationResult:
    """Recalls and per-query top-K of one model on one evaluation split.

    `predictions`/`scores` are [N_q, top_k] database indices/similarities, best first.
    `query_paths`/`database_paths` are relative to the split's common image directory.
    """

    dataset: str
    recalls: dict[int, float]
    predictions: np.ndarray
    scores: np.ndarray
    positives: list[np.ndarray]
    num_queries: int
    num_database: int
    descriptor_dim: int
    seconds: float
    images_per_second: float
    resize_policy: dict[str, Any] | None = None
    query_paths: list[str] = field(default_factory=list)
    database_paths: list[str] = field(default_factory=list)
    knn_backend: str = ""
    precision: str = "fp32"
    extraction_seconds: float = 0.0
    knn_seconds: float = 0.0

    @property
    def recall_at(self) -> list[int]:
        """The N of the recalls, in the order they were requested."""
        return list(self.recalls)

    @property
    def top_k(self) -> int:
        """Number of predictions kept per query."""
        return int(self.predictions.shape[1])

    def hits(self) -> np.ndarray:
        """Boolean [N_q, len(recall_at)]: whether each query hits at each N (for bootstrapping)."""
        return _hits(self.predictions, self.positives, self.recall_at, self.num_database)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary, without the per-query arrays."""
        return {
            "dataset": self.dataset,
            "recalls": {str(n): r for n, r in self.recalls.items()},
            "recall_at": self.recall_at,
            "top_k": self.top_k,
            "num_queries": self.num_queries,
            "num_database": self.num_database,
            "num_queries_without_positives": int(sum(len(p) == 0 for p in self.positives)),
            "descriptor_dim": self.descriptor_dim,
            "seconds": self.seconds,
            "extraction_seconds": self.extraction_seconds,
            "knn_seconds": self.knn_seconds,
            "images_per_second": self.images_per_second,
            "knn_backend": self.knn_backend,
            "precision": self.precision,
            "resize_policy": self.resize_policy,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the summary and the per-query predictions into `directory` (created; names: `pipeline.runs.folder`); return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RESULT_SUMMARY).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        lengths = np.array([len(p) for p in self.positives], dtype=np.int64)
        flat = (np.concatenate([np.asarray(p, dtype=np.int64) for p in self.positives])
                if self.positives else np.zeros(0, np.int64))
        # Ragged positives are stored flat with per-query lengths so loading needs no pickle.
        np.savez_compressed(
            directory / RESULT_PREDICTIONS,
            predictions=self.predictions, scores=self.scores, hits=self.hits(),
            recall_at=np.asarray(self.recall_at, dtype=np.int64),
            positives_flat=flat, positives_lengths=lengths,
            query_paths=np.asarray(self.query_paths, dtype=str),
            database_paths=np.asarray(self.database_paths, dtype=str),
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EvaluationResult:
        """Read a result written by `save`."""
        directory = Path(directory)
        summary = json.loads((directory / RESULT_SUMMARY).read_text())
        with np.load(directory / RESULT_PREDICTIONS, allow_pickle=False) as arrays:
            lengths = arrays["positives_lengths"]
            positives = (np.split(arrays["positives_flat"], np.cumsum(lengths)[:-1])
                         if len(lengths) else [])
            return cls(
                dataset=summary["dataset"],
                recalls={int(n): float(r) for n, r in summary["recalls"].items()},
                predictions=arrays["predictions"], scores=arrays["scores"], positives=positives,
                num_queries=summary["num_queries"], num_database=summary["num_database"],
                descriptor_dim=summary["descriptor_dim"], seconds=summary["seconds"],
                images_per_second=summary["images_per_second"],
                resize_policy=summary["resize_policy"],
                query_paths=arrays["query_paths"].tolist(),
                database_paths=arrays["database_paths"].tolist(),
                knn_backend=summary["knn_backend"], precision=summary["precision"],
                extraction_seconds=summary["extraction_seconds"],
                knn_seconds=summary["knn_seconds"],
            )


def evaluate(model: nn.Module, dataset: Any, recall_at: Sequence[int] = (1, 5, 10), top_k: int = 20,
             batch_size: int = 64, device: str | torch.device = "cpu", num_workers: int = 0,
             precision: str = "fp32", knn_backend: str = "auto",
             resize: dict[str, Any] | None = None, channels_last: bool = False,
             progress: bool = True,
             preprocess: Callable[[torch.Tensor], torch.Tensor] | None = normalize,
             ) -> EvaluationResult:
    """Extract descriptors of `dataset` (database items first, then queries), search each query's
    top_k database neighbours, and compute Recall@N for every N in `recall_at`.

    `resize` describes how images were resized (e.g. `{"size": [320, 320], "interpolation":
    "bilinear"}`) and is recorded verbatim; when None it is taken from the dataset's
    `image_size`/`interpolation` attributes if it has them. A top_k above the database size is
    clamped to it (with a warning); Recall@N for N at or beyond the database size then counts any
    positive. `preprocess` is applied to each batch on the device (see `extract_descriptors`).
    """
    ns = _check_arguments(recall_at, top_k, knn_backend, precision)
    resize = _resize_record(resize, dataset)
    n_db, n_q = dataset.num_database, dataset.num_queries
    _check_dataset(dataset, n_db, n_q)

    device = torch.device(device)
    start = time.perf_counter()
    descriptors = extract_descriptors(model, dataset, batch_size=batch_size, device=device,
                                      num_workers=num_workers, precision=precision,
                                      channels_last=channels_last, progress=progress,
                                      preprocess=preprocess)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # descriptors are written asynchronously
    extraction_seconds = time.perf_counter() - start

    database, queries = descriptors[:n_db], descriptors[n_db:]
    k = top_k
    if k > n_db:
        warnings.warn(f"top_k={top_k} exceeds the {n_db} database images of {dataset.name}; "
                      f"keeping {n_db} predictions per query", UserWarning, stacklevel=2)
        k = n_db
    backend = resolve_backend(knn_backend, database, queries)
    knn_start = time.perf_counter()
    scores, predictions = knn_search(database, queries, k, backend=backend)
    knn_seconds = time.perf_counter() - knn_start

    positives = [np.asarray(p, dtype=np.int64) for p in dataset.positives]
    hits = _hits(predictions, positives, ns, n_db)
    recalls = {int(n): float(100.0 * hits[:, j].mean()) for j, n in enumerate(ns)}
    base = _common_directory([*dataset.database_paths, *dataset.query_paths])
    result = EvaluationResult(
        dataset=str(dataset.name), recalls=recalls, predictions=predictions, scores=scores,
        positives=positives, num_queries=n_q, num_database=n_db,
        descriptor_dim=int(descriptors.shape[1]), seconds=0.0,
        images_per_second=len(dataset) / extraction_seconds if extraction_seconds > 0 else float("inf"),
        resize_policy=resize,
        query_paths=[_relative(p, base) for p in dataset.query_paths],
        database_paths=[_relative(p, base) for p in dataset.database_paths],
        knn_backend=backend, precision=precision,
        extraction_seconds=extraction_seconds, knn_seconds=knn_seconds,
    )
    result.seconds = time.perf_counter() - start
    log.info("%s: %s (%d queries, %d database, %.1f s)", result.dataset,
             ", ".join(f"R@{n}={r:.2f}" for n, r in result.recalls.items()), n_q, n_db, result.seconds)
    return result


def _check_arguments(recall_at: Sequence[int], top_k: int, knn_backend: str, precision: str) -> list[int]:
    """The recall cut-offs as a list; ValueError for arguments `evaluate` cannot honour."""
    ns = list(recall_at)
    if not ns or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in ns):
        raise ValueError(f"recall_at must be a non-empty list of positive integers, got {recall_at!r}")
    if top_k < max(ns):
        raise ValueError(f"top_k={top_k} is smaller than the largest N in recall_at={ns}: "
                         f"set top_k >= {max(ns)}")
    if knn_backend not in BACKENDS:
        raise ValueError(f"knn_backend '{knn_backend}' is not one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {list(PRECISIONS)}")
    return ns


def _resize_record(resize: dict[str, Any] | None, dataset: Any) -> dict[str, Any] | None:
    """The resize policy to record: as given, else the dataset's own; a JSON-safe copy."""
    if resize is None and hasattr(dataset, "image_size"):
        size = dataset.image_size
        resize = {"size": None if size is None else list(size),
                  "interpolation": getattr(dataset, "interpolation", None)}
    resize = copy.deepcopy(resize)  # recorded as given, never aliased to the caller's dict
    try:
        json.dumps(resize)
    except TypeError as err:
        raise TypeError(f"resize must be JSON-serialisable to be recorded: {err}") from None
    return resize


def _hits(predictions: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int],
          num_database: int) -> np.ndarray:
    k = predictions.shape[1]
    if k == num_database:
        # The whole database is ranked (top_k was clamped): a hit at N >= N_db is a hit anywhere.
        ns = [min(n, k) for n in ns]
    return per_query_hits(predictions, positives, ns)


def _check_dataset(dataset: Any, n_db: int, n_q: int) -> None:
    """Fail before any compute when the split cannot be evaluated."""
    if n_db == 0 or n_q == 0:
        raise ValueError(f"{dataset!r}: evaluation needs database images and queries "
                         f"(has {n_db} database, {n_q} queries)")
    if len(dataset) != n_db + n_q:
        raise ValueError(f"{dataset!r}: len(dataset)={len(dataset)} but num_database + num_queries "
                         f"= {n_db + n_q}")
    if len(dataset.positives) != n_q:
        raise ValueError(f"{dataset!r}: {len(dataset.positives)} positive lists for {n_q} queries")
    if len(dataset.database_paths) != n_db or len(dataset.query_paths) != n_q:
        raise ValueError(f"{dataset!r}: path lists ({len(dataset.database_paths)} database, "
                         f"{len(dataset.query_paths)} queries) do not match the counts")


def _common_directory(paths: Sequence[str | Path]) -> str:
    """Deepest directory containing every path (the split directory for database/ + queries/)."""
    if not paths:
        return ""
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def _relative(path: str | Path, base: str) -> str:
    """Path relative to `base`, with forward slashes, so saved results do not leak machine paths."""
    return Path(os.path.relpath(os.path.abspath(path), base)).as_posix()
