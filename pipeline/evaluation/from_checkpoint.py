"""`vpr evaluate` and a sweep's testing: load a trained checkpoint, evaluate it on splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config import RunConfig, config_from_dict
from pipeline.data.benchmarks.protocol import ProtocolConfig, resolve_resize
from pipeline.data.datasets import EvalDataset
from pipeline.evaluation.device import resolve_channels_last, resolve_device, resolve_precision
from pipeline.evaluation.results import evaluate
from pipeline.models import model_from_config
from pipeline.models.checkpoints import load_checkpoint


def model_from_checkpoint(checkpoint: str | Path) -> tuple[nn.Module, RunConfig, int | None]:
    """(network in eval mode, its run config, the checkpoint's epoch) from a run's best or last checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    cfg = config_from_dict(ckpt["config"])
    with torch.device("meta"):  # shapes only: the weights come from the file (no random init to pay for)
        model = model_from_config(cfg, pretrained="none")
    model.load_state_dict(ckpt["model"], assign=True)
    return model.eval(), cfg, ckpt.get("epoch")


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | Path, out_dir: str | Path | None = None,
                        device: str = "auto", resize: tuple[int, int] | None = None,
                        interpolation: str | None = None, batch_size: int = 64, num_workers: int = 0,
                        progress: bool = True) -> dict[str, Any]:
    """Evaluate `checkpoint` (a run's best or last checkpoint) on the split folder `dataset`.

    The resize policy defaults to the run config's `evaluation.resize`/`interpolation` and is
    recorded with the result. Writes the result (summary and per-query predictions) to `out_dir` when given.
    """
    model, cfg, epoch = model_from_checkpoint(checkpoint)
    summary = evaluate_model(model, cfg, dataset, out_dir, device, resize, interpolation, batch_size,
                             num_workers, progress)
    summary["checkpoint"] = str(checkpoint)
    summary["epoch"] = epoch
    return summary


def evaluate_model(model: nn.Module, cfg: RunConfig, dataset: str | Path, out_dir: str | Path | None = None,
                   device: str = "auto", resize: tuple[int, int] | None = None,
                   interpolation: str | None = None, batch_size: int = 64, num_workers: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """`evaluate_checkpoint` for a network already loaded (one load serves every test set)."""
    size = tuple(resize) if resize else tuple(cfg.evaluation.resize)
    ds = EvalDataset(dataset, size, interpolation or cfg.evaluation.interpolation, cfg.evaluation.positive_radius_m,
                     parameter="--dataset")
    return _evaluate_dataset(model, cfg, ds, cfg.evaluation.recall_at, cfg.evaluation.top_k, batch_size, device, num_workers,
                     progress, out_dir)


def evaluate_on_benchmark(model: nn.Module, cfg: RunConfig, root: str | Path, protocol: ProtocolConfig,
                          out_dir: str | Path | None = None, device: str = "auto", num_workers: int = 0,
                          progress: bool = True) -> dict[str, Any]:
    """A loaded network on one benchmark folder (any format) under `protocol`; the result's summary
    with the protocol it ran under (`protocol`, and the image size it resolved to)."""
    ds = EvalDataset(root, None, protocol.interpolation or cfg.evaluation.interpolation,
                     protocol.positive_radius_m, parameter="--benchmark")
    ds.image_size = resolve_resize(protocol, tuple(cfg.evaluation.resize), ds.database_paths[0])
    summary = _evaluate_dataset(model, cfg, ds, protocol.recall_at, protocol.top_k, protocol.batch_size, device, num_workers,
                        progress, out_dir)
    return {**summary, "protocol": {**protocol.model_dump(), "resize": list(ds.image_size)}}


def _evaluate_dataset(model: nn.Module, cfg: RunConfig, ds: EvalDataset, recall_at: list[int], top_k: int, batch_size: int,
              device: str, num_workers: int, progress: bool, out_dir: str | Path | None) -> dict[str, Any]:
    """`ds` through `model` at the run's precision and memory format on `device`; the result saved
    to `out_dir` when given; its summary."""
    dev = resolve_device(device)
    result = evaluate(model, ds, recall_at=recall_at, top_k=top_k, batch_size=batch_size, device=dev,
                      num_workers=num_workers, precision=resolve_precision(cfg.training.precision, dev),
                      channels_last=resolve_channels_last(cfg.training.channels_last, dev),
                      resize={"size": list(ds.image_size), "interpolation": ds.interpolation}, progress=progress)
    if out_dir:
        result.save(out_dir)
    return result.to_dict()
