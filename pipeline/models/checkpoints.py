"""Checkpoint files: written atomically, loaded with `weights_only=True`.

Everything stored is a tensor, a number, a string or a container of those, so loading never
unpickles arbitrary objects. A run's best checkpoint holds its config and model weights, which is
all `model_from_config` + `load_state_dict` need to rebuild the trained model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing or cannot be loaded."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically (a killed process leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (safe loading, no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: cannot load checkpoint ({err})") from None
