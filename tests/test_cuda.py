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
from pipeline.data.images import load_image
from pipeline.data.device_augment import augment_batch
from pipeline.data.device_decode import DeviceDecoder, EncodedImages, decoded_batches
from pipeline.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SIZE = (320, 320)


def _paths(root, count):
    return sorted((root / "gsv_xs" / "train").rglob("*.jpg"))[:count]


def test_nvjpeg_decodes_the_pixels_libjpeg_decodes_within_a_few_levels(real_data):
    paths = _paths(real_data, 32)
    batch = EncodedImages.read(paths)
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


def test_decoding_batch_after_batch_never_overwrites_the_last_one(real_data):
    # nvjpeg writes on a stream of its own: with kernels still queued on ours (the GPU busy with
    # a training step), the next decode must not reuse memory the last batch still reads.
    paths = _paths(real_data, 32)
    decoder = DeviceDecoder(SIZE, "cuda")
    batches = [EncodedImages.read(paths[i:i + 8]) for i in range(0, 32, 8)]
    expected = [decoder(b).cpu() for b in batches]
    for _ in range(10):
        got = []
        for batch in batches:
            torch.cuda._sleep(2_000_000)  # keep the stream busy, as a training step does
            got.append(decoder(batch))
        assert all(torch.equal(g.cpu(), e) for g, e in zip(got, expected))
    ahead = []
    for images, _ in decoded_batches([(b, None) for b in batches * 5], decoder, depth=2):
        torch.cuda._sleep(2_000_000)  # the consumer's stream busy while the next batch decodes
        ahead.append(images)
    assert all(torch.equal(a.cpu(), expected[i % 4]) for i, a in enumerate(ahead))
