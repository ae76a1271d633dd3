"""Uncertainty for Recall@N: bootstrap confidence intervals over queries, a paired bootstrap test
between two models on the same queries, tie marking against a column's best, mean/std over seeds.

Recall@N is the mean of per-query hits (1 if a correct place is in the top N, else 0), so the
natural unit of resampling is the query. Resampling Q queries with replacement only changes how
often each *distinct* per-query value (or value pair, for the paired test) is drawn, and those
counts are Multinomial(Q, observed frequencies). We draw the counts directly: the same bootstrap
distribution as indexing Q random queries, at a cost independent of Q (bool hits have 2 distinct
values, 4 pairs), so a report with hundreds of cells stays fast on a laptop CPU.

Inputs may also be per-query means over seeds (floats in [0, 1]); the same code applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np

N_BOOT: Final = 2000
ALPHA: Final = 0.05

# Sentences for the captions, so the method is stated where the numbers are.
METHOD_CI: Final = (f"Brackets: 95% percentile bootstrap confidence interval over queries "
                    f"({N_BOOT:,} resamples).")
METHOD_TIES: Final = (f"Bold: best value of the column; †: not significantly worse than the column's best "
                      f"(paired bootstrap over the same queries, one-sided p ≥ {ALPHA:g}).")
METHOD: Final = f"{METHOD_CI} {METHOD_TIES}"

# Bound on n_boot x n_distinct int64 counts held at once (continuous inputs have up to Q distinct).
_MAX_BLOCK: Final = 4_000_000


def _as_rows(values: np.ndarray, name: str) -> np.ndarray:
    """Per-query values as float [Q, k] (k=1 for one model, 2 for a pair); rejects empty input."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty per-query array [Q], got shape {np.shape(values)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: per-query values must be finite")
    return arr


def _bootstrap_means(rows: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column means of `n_boot` resamples (with replacement) of the rows of `rows` [Q, k]: [n_boot, k].

    Drawn as multinomial counts over the distinct rows (see the module docstring), deterministic
    for a given seed.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    q = rows.shape[0]
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    probs = counts / q
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK // len(distinct))
    out = np.empty((n_boot, rows.shape[1]))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        draws = rng.multinomial(q, probs, size=stop - start)   # [b, n_distinct] resample counts
        out[start:stop] = draws @ distinct / q
    return out


def bootstrap_ci(hits: np.ndarray, n_boot: int = N_BOOT, alpha: float = ALPHA,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the recall, in percent.

    `hits` is the per-query hit vector [Q] of one model at one N (bool, or per-query means over
    seeds in [0, 1]). Queries are resampled with replacement `n_boot` times.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    means = _bootstrap_means(_as_rows(hits, "hits"), n_boot, seed)[:, 0]
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(100.0 * low), float(100.0 * high)


def paired_bootstrap_pvalue(hits_a: np.ndarray, hits_b: np.ndarray, n_boot: int = N_BOOT,
                            seed: int = 0) -> float:
    """One-sided p-value for "a is better than b" on the same queries (paired bootstrap).

    Queries are resampled jointly, so both models see the same resample; p is the share of
    resamples in which a does *not* beat b, with the usual +1 correction ((#{a* <= b*} + 1) /
    (n_boot + 1)), so p is never 0 and identical models give p = 1.
    """
    a = _as_rows(hits_a, "hits_a")
    b = _as_rows(hits_b, "hits_b")
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs the same queries: hits_a has {a.shape[0]} queries, "
                         f"hits_b has {b.shape[0]}")
    means = _bootstrap_means(np.hstack([a, b]), n_boot, seed)
    not_better = int(np.count_nonzero(means[:, 0] <= means[:, 1]))
    return (not_better + 1) / (n_boot + 1)


def mark_ties(cells: Mapping[str, np.ndarray], alpha: float = ALPHA, best: str | None = None,
              n_boot: int = N_BOOT, seed: int = 0) -> tuple[str, set[str]]:
    """The best cell and the cells not significantly worse than it.

    `cells` maps a label to its per-query hits [Q] (same queries for all). The best is the
    highest mean (first in mapping order on equal means) unless `best` names it (so the bold cell
    of a table, chosen from displayed values, is the reference). A cell b is a tie when the paired
    test of best vs b gives p >= alpha. The returned set excludes the best itself.
    """
    if not cells:
        raise ValueError("mark_ties needs at least one cell")
    arrays = {label: _as_rows(h, f"hits of {label!r}")[:, 0] for label, h in cells.items()}
    sizes = {label: len(a) for label, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"mark_ties needs the same queries for every cell, got query counts {sizes}")
    if best is None:
        best = max(arrays, key=lambda label: arrays[label].mean())   # max keeps the first on equal means
    elif best not in arrays:
        raise ValueError(f"best {best!r} is not one of the cells {sorted(arrays)}")
    ties = {label for label, h in arrays.items()
            if label != best and paired_bootstrap_pvalue(arrays[best], h, n_boot, seed) >= alpha}
    return best, ties


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of e.g. one metric over seeds."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std
