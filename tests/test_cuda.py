"""The CUDA side of the GPU path: nvjpeg decoding, the batched augmentation and a bf16 training run
on the GPU. Skipped without CUDA (CI has none); the same code paths run on the CPU in
tests/test_device_decode.py, tests/test_augment.py and tests/test_trainer.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.config import load_config
from pipeline.data.augment import AugmentConfig, sample_ops
from pipeline.data.datasets import load_image
from pipeline.data.device_augment import augment_batch
from pipeline.data.device_decode import DeviceDecoder, EncodedImages, read_jpeg_bytes
from pipeline.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SIZE = (320, 320)


def _paths(root, count):
    return sorted((root / "gsv_xs" / "train").rglob("*.jpg"))[:count]


def test_nvjpeg_decodes_the_pixels_libjpeg_decodes_within_a_few_levels(real_data):
    paths = _paths(real_data, 32)
    batch = EncodedImages([read_jpeg_bytes(p) for p in paths], [str(p) for p in paths])
    gpu = DeviceDecoder(SIZE, "cuda")(batch)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8 and gpu.shape == (32, 3, *SIZE)
    reference = torch.stack([load_image(p, SIZE) for p in paths])
    diff = (gpu.cpu().int() - reference.int()).abs()
    # nvjpeg's IDCT and chroma upsampling differ from libjpeg-turbo's by a level or two.
    stats = (f"mean {diff.float().mean():.3f}, max {diff.max()}, >2: {(diff > 2).float().mean():.2e}, "
             f">4: {(diff > 4).float().mean():.2e}, >8: {(diff > 8).float().mean():.2e}")
    print(stats)
    assert diff.float().mean() < 1.0 and (diff > 8).float().mean() < 1e-3, stats


def test_the_batched_augmentation_on_cuda_equals_the_cpu(real_data):
    paths = _paths(real_data, 16)
    images = torch.stack([load_image(p, SIZE) for p in paths])
    cfg = AugmentConfig()
    ops = torch.stack([torch.from_numpy(sample_ops(11 + i, 0, cfg, SIZE)) for i in range(len(images))])
    cpu = augment_batch(images, ops)
    gpu = augment_batch(images.cuda(), ops).cpu()
    diff = (cpu.int() - gpu.int()).abs()
    # grid_sample and float rounding may differ by one level at a few pixels between devices.
    assert (diff > 1).float().mean() < 1e-3 and diff.float().mean() < 0.02


def test_a_bf16_channels_last_run_with_nvjpeg_trains_on_the_gpu(real_data, tmp_path):
    cfg = load_config(None, [
        f"data.train_root={real_data}/gsv_xs", f"data.val_root={real_data}/sf_xs/val",
        "data.image_size=[320,320]", "evaluation.resize=[320,320]", "model.pretrained=none",
        "data.decode=device", "data.num_workers=2", "training.device=cuda", "training.epochs=2",
        "training.places_per_batch=8", "training.batches_per_epoch=3", "scheduler.warmup_steps=0"])
    summary = train(cfg, out_dir=tmp_path / "run", progress=False)
    assert summary["precision"] == "bf16" and summary["channels_last"] is True
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2 and all(math.isfinite(h["train_loss"]) for h in history)
    assert all(0 <= h["val_recall_at_1"] <= 100 for h in history)
