"""Evaluation images decoded once per process and reused across epochs and runs.

Validation re-reads the same split every epoch, and a long-lived sweep worker evaluates the same
splits run after run: decoding and resizing them again each time was most of a demo run's time.
The cache keeps the uint8 CHW tensors keyed by (file, its size and modification time, target
size, filter), so a changed file or another resize policy is a miss, never a stale image.

Bounded: at most `VPR_EVAL_CACHE_MB` megabytes (default 1024; 0 turns it off) per process. When
full it stops admitting instead of evicting: evaluation scans a split in the same order every
time, where least-recently-used eviction would miss on every image once a split exceeds the
bound, while keeping the first part gives a hit rate of bound / split size.
Each loader worker process has its own cache (evaluation in the main process, as the trainer
runs it, keeps it across epochs).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pipeline.errors import ConfigError

ENV_LIMIT = "VPR_EVAL_CACHE_MB"
DEFAULT_LIMIT_MB = 1024


def _limit_bytes() -> int:
    raw = os.environ.get(ENV_LIMIT, str(DEFAULT_LIMIT_MB))
    try:
        megabytes = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_LIMIT}={raw!r} is not a number of megabytes (0 turns the cache off)") from None
    if megabytes < 0:
        raise ConfigError(f"{ENV_LIMIT}={raw!r} must be >= 0 megabytes (0 turns the cache off)")
    return int(megabytes * 2**20)


class DecodedImageCache:
    """A per-process store of decoded images, bounded in bytes; admits until full."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = _limit_bytes() if max_bytes is None else max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._store: dict[tuple, torch.Tensor] = {}
        self._pid = os.getpid()

    @staticmethod
    def key(path: str | Path, size: tuple[int, int] | None, interpolation: str) -> tuple | None:
        """The identity of a decoded image; None for a file that cannot be read (never cached)."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return (str(path), stat.st_size, stat.st_mtime_ns, size, interpolation)

    def get(self, key: tuple | None) -> torch.Tensor | None:
        image = None if key is None else self._store.get(key)
        if image is None:
            self.misses += 1
            return None
        self.hits += 1
        return image.clone()  # callers may modify their copy

    def put(self, key: tuple | None, image: torch.Tensor) -> None:
        size = image.numel() * image.element_size()
        if key is not None and self.bytes + size <= self.max_bytes and key not in self._store:
            self._store[key] = image.clone()
            self.bytes += size

    def clear(self) -> None:
        self._store.clear()
        self.bytes = self.hits = self.misses = 0

    def __repr__(self) -> str:
        return (f"DecodedImageCache({len(self._store)} images, {self.bytes / 2**20:.1f} of "
                f"{self.max_bytes / 2**20:.0f} MB, {self.hits} hits, {self.misses} misses)")


_PROCESS_CACHE: DecodedImageCache | None = None


def process_cache() -> DecodedImageCache:
    """This process's evaluation image cache (created on first use, after any fork)."""
    global _PROCESS_CACHE
    if _PROCESS_CACHE is None or _PROCESS_CACHE._pid != os.getpid():
        _PROCESS_CACHE = DecodedImageCache()
    return _PROCESS_CACHE
