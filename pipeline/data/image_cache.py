"""A prepare-time cache of training images, decoded and resized once to the training size.

Why (measured by benchmarks/bench_loader.py, recorded in benchmarks/RESULTS.md): decoding one
640x480 JPEG alone costs ~2 ms of CPU with PIL or libjpeg-turbo, over twice the 0.8 ms per image
a loader core may spend to keep a GPU fed. Reading the same image from this cache is one copy of
H*W*3 bytes. The cached pixels are exactly `load_image(path, size, interpolation)`'s, so runs
with and without the cache compute the same thing (the cache folder is not part of a run's
identity). Augmentation still runs per epoch, after the cache, on the resized image, as in the
GSV-Cities recipe.

Layout: `<folder>/<key>.u8`, a raw uint8 array (N, 3, H, W) in the order of the image list, and
`<key>.json` naming the images; `key` hashes the size, the filter and every image's path, byte
size and modification time, so a changed dataset gets a new cache instead of stale pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.data.images import load_image
from pipeline.errors import ImageLoadError, UserError

CACHE_VERSION = 1


class ImageCacheError(UserError, OSError):
    """The cache folder cannot be created or written."""


def _key(paths: Sequence[Path], size: tuple[int, int], interpolation: str) -> str:
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, list(size), interpolation]).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


class ResizedImageCache:
    """Images of a training set at one size, in one memory-mapped file; built on first use."""

    def __init__(self, folder: str | Path, paths: Sequence[str | Path], size: tuple[int, int],
                 interpolation: str = "bilinear", progress: bool = False) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation
        self.position = {str(p): i for i, p in enumerate(self.paths)}
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ImageCacheError(f"data.image_cache: cannot create '{folder}' ({err})") from None
        key = _key(self.paths, self.size, interpolation)
        self.file, self.meta = folder / f"{key}.u8", folder / f"{key}.json"
        self._array: np.ndarray | None = None
        if not self.meta.is_file():
            self._build(progress)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, *self.size)

    def _build(self, progress: bool) -> None:
        """Decode and resize every image once (a broken image stops with ImageLoadError)."""
        tmp = self.file.with_suffix(f".tmp{os.getpid()}")
        try:
            array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=self.shape)
            for i, path in enumerate(tqdm(self.paths, desc="image cache", unit="img", disable=not progress)):
                array[i] = load_image(path, self.size, self.interpolation).numpy()
            array.flush()
            del array
            os.replace(tmp, self.file)
            # the json goes last: its presence means the array is complete
            self.meta.write_text(json.dumps({"version": CACHE_VERSION, "size": list(self.size),
                                             "interpolation": self.interpolation,
                                             "paths": [str(p) for p in self.paths]}))
        except ImageLoadError:
            tmp.unlink(missing_ok=True)
            raise
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ImageCacheError(f"data.image_cache: cannot write '{self.file}' ({err})") from None

    def __contains__(self, path: str | Path) -> bool:
        return str(path) in self.position

    def load(self, path: str | Path) -> torch.Tensor:
        """The cached uint8 CHW image of `path` (a copy: callers may modify it)."""
        if self._array is None:  # opened per process, after any fork
            self._array = np.memmap(self.file, dtype=np.uint8, mode="r", shape=self.shape)
        return torch.from_numpy(np.array(self._array[self.position[str(path)]]))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # loader workers map the file themselves
        return state
