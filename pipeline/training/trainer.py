"""The trainer: P places x K images -> model -> miner + loss -> optimizer/scheduler, with per-epoch
validation Recall@N, best/last full-state checkpoints, and exact resume.

Read top to bottom: `train` builds everything from the config, then `_run_epochs` loops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pipeline.components.losses import build_loss, build_miner
from pipeline.components.optim import build_optimizer, build_scheduler
from pipeline.config import RunConfig, config_hash, dump_config
from pipeline.data.catalog import BEST_VAL_R1, VAL_R1, VALIDATION, recall_metric
from pipeline.data.datasets import EvalDataset, PlaceBatchSampler, TrainPlacesDataset, collate_places
from pipeline.data.device_augment import DeviceAugment
from pipeline.data.device_decode import DeviceDecoder, decoded_batches
from pipeline.data.transforms import normalize
from pipeline.errors import UserError
from pipeline.evaluation import evaluate
from pipeline.models import model_from_config
from pipeline.models.checkpoints import load_checkpoint, save_checkpoint
from pipeline.runs.folder import RunFolder
from pipeline.training.cost import PeakMemory, run_cost
from pipeline.training.lr_log import LRLog
from pipeline.evaluation.device import describe_device, resolve_channels_last, resolve_device, resolve_precision
from pipeline.training.reproducibility import make_deterministic, rng_state, set_rng_state

log = logging.getLogger(__name__)

# Called after every epoch with (epoch, metrics); may raise to stop the run (Optuna pruning).
EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; the run stops rather than save a broken model.

    A user error: the fix is in the config (learning rate, clipping, loss settings), as the
    message says; the sweep records it as the run's failure.
    """


class RunFolderInUse(UserError, FileExistsError):
    """The run folder already holds a run and `resume` was not asked for."""


@dataclass
class TrainState:
    """What survives an epoch boundary: enough to resume exactly."""

    epoch: int = 0                       # epochs completed
    best_recall1: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)


def default_run_dir(cfg: RunConfig) -> Path:
    """runs/<config hash>: one folder per distinct run."""
    return Path("runs") / config_hash(cfg)


def train(cfg: RunConfig, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
          callbacks: list[EpochCallback] | None = None) -> dict[str, Any]:
    """Train one run to `cfg.training.epochs`; return a summary (also written to the run folder).

    With `resume=True` and a last checkpoint in `out_dir`, training continues from it and ends exactly
    where an uninterrupted run ends (same batches, same RNG streams). Without `resume`, an existing
    last checkpoint is refused so that nothing already computed is overwritten by accident.
    """
    out = Path(out_dir) if out_dir else default_run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out)
    if folder.last_checkpoint.exists() and not resume:
        raise RunFolderInUse(f"{folder.last_checkpoint} exists: pass --resume to continue that run, or choose "
                             "another --out")
    dump_config(cfg, folder.config)
    device = resolve_device(cfg.training.device)
    make_deterministic(cfg.seed, deterministic_kernels=device.type == "cpu")
    precision = resolve_precision(cfg.training.precision, device)
    channels_last = resolve_channels_last(cfg.training.channels_last, device)

    train_set = TrainPlacesDataset(cfg.data.train_root, cfg.training.images_per_place,
                                   cfg.data.min_images_per_place, cfg.data.cities,
                                   tuple(cfg.data.image_size), parameter="data.train_root",
                                   augment=cfg.data.augment, image_cache=cfg.data.image_cache,
                                   decode=cfg.data.decode)
    val_set = EvalDataset(cfg.data.val_root, tuple(cfg.evaluation.resize), cfg.evaluation.interpolation,
                          cfg.evaluation.positive_radius_m, parameter="data.val_root")
    sampler = PlaceBatchSampler(len(train_set), cfg.training.places_per_batch, seed=cfg.seed,
                                batches_per_epoch=cfg.training.batches_per_epoch)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_places,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0,
                        prefetch_factor=4 if cfg.data.num_workers > 0 else None)

    model = model_from_config(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss).to(device)
    miner = build_miner(cfg.miner)
    optimizer = build_optimizer(cfg.optimizer, model.parameter_groups(cfg.optimizer.lr, cfg.training.backbone_lr_scale))
    scheduler = build_scheduler(cfg.scheduler, optimizer, steps_per_epoch=len(sampler),
                                epochs=cfg.training.epochs)
    state = TrainState()
    if resume and folder.last_checkpoint.exists():
        state = _restore(folder.last_checkpoint, model, loss_fn, optimizer, scheduler)
        log.info("resumed %s at epoch %d", out, state.epoch)
    lr_log = LRLog(out)
    lr_log.restore(state.epoch)
    log.info("%r\n%r\n%r", train_set, val_set, model)

    ctx = _Context(cfg, device, precision, channels_last, folder, progress, lr_log)
    with PeakMemory(device) as memory:
        _run_epochs(ctx, state, model, loader, sampler, val_set, loss_fn, miner, optimizer, scheduler,
                    callbacks or [])
    summary = {"run_dir": str(out), "config_hash": config_hash(cfg), "epochs": state.epoch,
               "best_epoch": state.best_epoch, BEST_VAL_R1: state.best_recall1,
               # What "auto" resolved to on this machine (the config keeps "auto", and so the hash).
               "precision": precision, "channels_last": channels_last, "device": describe_device(device),
               "final": state.history[-1] if state.history else {},
               "cost": run_cost(model, state.history, folder.validation_summary(), memory.peak_mb)}
    folder.summary.write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class _Context:
    cfg: RunConfig
    device: torch.device
    precision: str
    channels_last: bool
    out: RunFolder
    progress: bool
    lr_log: LRLog
    _compiled: Any = None

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: `model` itself, or with `training.compile` one
        torch.compile wrapper made once per run (it shares the parameters; checkpoints and
        evaluation keep using `model`, so their keys and results do not depend on the setting)."""
        if not self.cfg.training.compile:
            return model
        if self._compiled is None:
            self._compiled = torch.compile(model)
        return self._compiled


def _run_epochs(ctx: _Context, state: TrainState, model, loader, sampler, val_set, loss_fn, miner,
                optimizer, scheduler, callbacks: list[EpochCallback]) -> None:
    cfg = ctx.cfg
    for epoch in range(state.epoch, cfg.training.epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        train_loss, images_seen = _train_one_epoch(ctx, epoch, model, loader, loss_fn, miner, optimizer,
                                                   scheduler)
        train_seconds = time.perf_counter() - start
        result = evaluate(model, val_set, recall_at=cfg.evaluation.recall_at, top_k=cfg.evaluation.top_k,
                          batch_size=cfg.evaluation.batch_size, device=ctx.device,
                          num_workers=cfg.data.num_workers,
                          precision="bf16" if ctx.precision == "bf16" else "fp32",
                          channels_last=ctx.channels_last, progress=False)
        metrics = {"epoch": epoch, "train_loss": train_loss, "lr": scheduler.current_lr(),
                   "epoch_seconds": train_seconds, "images_per_second": images_seen / train_seconds}
        metrics.update({recall_metric(VALIDATION.key, n, per_epoch=True): r for n, r in result.recalls.items()})
        scheduler.step_epoch(metrics)
        state.epoch = epoch + 1
        state.history.append(metrics)
        improved = metrics.get(VAL_R1, -1.0) > state.best_recall1
        if improved:
            state.best_recall1, state.best_epoch = metrics[VAL_R1], epoch
        ctx.lr_log.write()  # before the last checkpoint: a resume keeps only the rows of checkpointed epochs
        _save(ctx.out.last_checkpoint, cfg, state, model, loss_fn, optimizer, scheduler)
        if improved:
            save_checkpoint({"config": cfg.to_dict(), "epoch": epoch, "metrics": metrics,
                             "model": model.state_dict()}, ctx.out.best_checkpoint)
            result.save(ctx.out.validation_result)
        ctx.out.history.write_text(json.dumps(state.history, indent=2))
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if ctx.progress:
            tqdm.write(f"epoch {epoch}: loss {train_loss:.4f}, " +
                       ", ".join(f"R@{n} {r:.2f}" for n, r in result.recalls.items()))
        for callback in callbacks:
            callback(epoch, metrics)


def make_train_step(model, loss_fn, miner, optimizer, device: torch.device, precision: str,
                    channels_last: bool, max_grad_norm: float | None = None,
                    augment: Callable | None = None) -> Callable[..., torch.Tensor]:
    """One optimisation step on a uint8 batch: copy and normalise on the device, forward (bf16
    autocast when asked), mine, loss, backward, step. Returns the detached loss without reading it back."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(images: torch.Tensor, labels: torch.Tensor, ops: torch.Tensor | None = None) -> torch.Tensor:
        x = images.to(device, non_blocking=True)
        x = normalize(augment(x, ops) if augment is not None else x)  # data.augment on the device
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            descriptors = model(x)
        descriptors = descriptors.float()
        pairs = miner(descriptors, labels) if miner is not None else None
        loss = loss_fn(descriptors, labels, pairs) if pairs is not None else loss_fn(descriptors, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        return loss.detach()

    return step


def _train_one_epoch(ctx: _Context, epoch: int, model, loader, loss_fn, miner, optimizer,
                     scheduler) -> tuple[float, int]:
    """One pass over the sampler's batches; returns (mean loss, images seen).

    The loss is accumulated on the device and only read back every `log_every` steps, so the
    host never waits on the GPU inside the step.
    """
    model.train()
    device, cfg = ctx.device, ctx.cfg
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not ctx.progress, leave=False)
    step = make_train_step(ctx.compiled(model), loss_fn, miner, optimizer, device, ctx.precision,
                           ctx.channels_last, cfg.training.max_grad_norm, DeviceAugment(cfg.data.augment))
    batches = bar if cfg.data.decode == "loader" else decoded_batches(  # data.decode=device
        bar, DeviceDecoder(tuple(cfg.data.image_size), device))
    loss_sum = torch.zeros((), device=device)
    steps, images_seen = 0, 0
    start = time.perf_counter()
    with contextlib.closing(batches):  # stops the decoding thread also when a step raises
        for images, labels, ops in batches:
            ctx.lr_log.record(scheduler.batch_steps, epoch, scheduler.current_lr())
            loss_sum += step(images, labels, ops)
            scheduler.step_batch()
            steps += 1
            images_seen += len(images)
            if steps % cfg.training.log_every == 0:
                mean = _finite_mean(loss_sum, steps, epoch, steps)
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{images_seen / (time.perf_counter() - start):.0f}",
                                lr=f"{scheduler.current_lr():.2e}")
    return _finite_mean(loss_sum, max(steps, 1), epoch, steps), images_seen


def _finite_mean(loss_sum: torch.Tensor, steps: int, epoch: int, step: int) -> float:
    value = float(loss_sum.item()) / steps
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"training loss became {value} by epoch {epoch} step {step}; stopping. Lower the learning "
            "rate, enable training.max_grad_norm, or check the loss/miner settings")
    return value


def _save(path: Path, cfg: RunConfig, state: TrainState, model, loss_fn, optimizer, scheduler) -> None:
    save_checkpoint({
        "config": cfg.to_dict(), "epoch": state.epoch, "best_recall1": state.best_recall1,
        "best_epoch": state.best_epoch, "history": state.history,
        "model": model.state_dict(), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": None,  # bf16 needs no grad scaler
        "rng": rng_state(),
    }, path)


def _restore(path: Path, model, loss_fn, optimizer, scheduler) -> TrainState:
    ckpt = load_checkpoint(path, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    loss_fn.load_state_dict(ckpt["loss"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return TrainState(epoch=ckpt["epoch"], best_recall1=ckpt["best_recall1"], best_epoch=ckpt["best_epoch"],
                      history=list(ckpt["history"]))
