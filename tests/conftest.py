"""Shared fixtures: real files on disk, generated once per session where they are expensive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tests never download (pretrained: imagenet reads only the cache a test fills); inherited by subprocesses.
os.environ["VPR_OFFLINE"] = "1"

from services import mlflow_server, postgres  # noqa: F401  (shared-service fixtures, tests/services.py)

REAL_METADATA = Path(os.environ.get("VPR_REAL_METADATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real-metadata"))


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory) -> Path:
    """The embedded datasets at demo scale with small images (read-only: copy before mutating)."""
    from pipeline.data.synthetic import generate

    out = tmp_path_factory.mktemp("embedded") / "data"
    generate(out, seed=0, scale="demo", image_size=32, progress=False)
    return out


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """The embedded datasets at the real resolution (480x640 JPEGs, `real` scale; read-only)."""
    from pipeline.data.synthetic import generate

    out = tmp_path_factory.mktemp("real") / "data"
    generate(out, seed=0, scale="real", image_size="480x640", progress=False)
    return out


@pytest.fixture
def embedded_copy(embedded_root, tmp_path) -> Path:
    """A private copy of the embedded datasets that a test may corrupt."""
    dst = tmp_path / "data"
    shutil.copytree(embedded_root, dst)
    return dst


@pytest.fixture(scope="session")
def real_metadata() -> Path:
    """The real SF-XS / Tokyo-XS / GSV-XS metadata folder; tests using it skip where it is absent."""
    if not REAL_METADATA.is_dir():
        pytest.skip(f"real metadata folder {REAL_METADATA} is absent")
    return REAL_METADATA
