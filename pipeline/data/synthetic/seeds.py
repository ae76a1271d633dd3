"""Seeds of the embedded-data generator: every image draws from its own named random stream."""

from __future__ import annotations

import zlib

import numpy as np


def stable_key(text: str) -> int:
    """A stable 32-bit integer for a name (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def rng_for(*parts: int | str) -> np.random.Generator:
    """Independent generator for a tuple of ints/names; the same tuple always gives the same stream."""
    return np.random.default_rng([stable_key(p) if isinstance(p, str) else int(p) for p in parts])
