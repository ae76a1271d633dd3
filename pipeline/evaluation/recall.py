"""Recall@N of ranked predictions against each query's positives (database items within 25 m).

A query is a hit at N when any of its top-N predictions is a positive. Queries without any
positive stay in the denominator and always miss, so recalls are comparable across methods that
share a split, whatever its coverage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_query_hits(predictions: np.ndarray, positives: Sequence[np.ndarray],
                   ns: Sequence[int] = (1, 5, 10)) -> np.ndarray:
    """Boolean [N_q, len(ns)]: whether query i has a positive among its top ns[j] predictions.

    `predictions` is an integer [N_q, K] array of database indices, best first (a negative index
    marks a missing prediction and never hits). Every N in `ns` must satisfy 1 <= N <= K.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must have shape [N_q, K], got shape {predictions.shape}")
    if not np.issubdtype(predictions.dtype, np.integer):
        raise TypeError(f"predictions must hold integer database indices, got dtype {predictions.dtype}")
    n_q, k = predictions.shape
    if len(positives) != n_q:
        raise ValueError(f"positives has {len(positives)} entries but predictions has {n_q} queries")
    ns = _validate_ns(ns, k)

    # Rank of the first positive per query (k when none): encode (query, database index) pairs as
    # single int64 keys so one vectorised np.isin covers all queries.
    pos = [np.asarray(p, dtype=np.int64).ravel() for p in positives]
    pred = predictions.astype(np.int64, copy=False)
    width = int(max(pred.max(initial=-1), max((p.max(initial=-1) for p in pos), default=-1))) + 1
    flat = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError("positives must be non-negative database indices")
    pos_keys = np.repeat(np.arange(n_q, dtype=np.int64), [len(p) for p in pos]) * width + flat
    pred_keys = np.arange(n_q, dtype=np.int64)[:, None] * width + pred
    is_pos = np.isin(pred_keys, pos_keys) & (pred >= 0)
    first = np.where(is_pos.any(axis=1), is_pos.argmax(axis=1), k)
    return first[:, None] < np.asarray(ns)[None, :]


def recall_at_n(predictions: np.ndarray, positives: Sequence[np.ndarray],
                ns: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@N in percent for every N in `ns`, as `{N: recall}` in the order of `ns`."""
    hits = per_query_hits(predictions, positives, ns)
    if hits.shape[0] == 0:
        raise ValueError("recall is undefined without queries (predictions has 0 rows)")
    return {int(n): float(100.0 * hits[:, j].mean()) for j, n in enumerate(ns)}


def _validate_ns(ns: Sequence[int], k: int) -> list[int]:
    ns = list(ns)
    if not ns:
        raise ValueError("ns is empty: give at least one N for Recall@N")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Recall@N needs positive integer N, got {n!r}")
        if n > k:
            raise ValueError(f"Recall@{n} needs at least {n} predictions per query, but "
                             f"predictions has only K={k} columns")
    return [int(n) for n in ns]
