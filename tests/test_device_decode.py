"""`data.decode: device`: loader workers read JPEG bytes, the training device decodes and resizes.

Run here on the CPU (libjpeg-turbo through torchvision.io); tests/test_cuda.py runs the nvjpeg side
where a GPU is present. The loader path (PIL decode + resize in the worker) is the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, config_from_dict, config_hash, semantic_dict
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import TrainPlacesDataset, collate_places
from pipeline.data.images import load_image
from pipeline.data.device_decode import DeviceDecoder, EncodedImages, read_jpeg_bytes
from pipeline.errors import ImageLoadError

SIZE = (320, 320)


def _train_jpegs(root: Path, count: int) -> list[Path]:
    return sorted((root / "gsv_xs" / "train").rglob("*.jpg"))[:count]


def _encoded(paths: list[Path]) -> EncodedImages:
    return EncodedImages.read(paths)


def test_decoded_on_the_device_the_pixels_are_the_loaders_within_one_level(real_data):
    paths = _train_jpegs(real_data, 12)
    with Image.open(paths[0]) as img:
        assert (img.height, img.width) == (480, 640)  # the real datasets' size: resized on the device
    ours = DeviceDecoder(SIZE, "cpu")(_encoded(paths))
    reference = torch.stack([load_image(p, SIZE) for p in paths])
    assert ours.dtype == torch.uint8 and ours.shape == reference.shape == (12, 3, *SIZE)
    diff = (ours.int() - reference.int()).abs()
    # Both decode with libjpeg-turbo; the resizes (torch antialiased bilinear vs PIL's bilinear
    # filter) round differently. Measured: max 1 level, mean 0.16.
    assert diff.max() <= 2 and diff.float().mean() < 0.5


def test_a_batch_of_mixed_sizes_comes_back_in_its_order(real_data, tmp_path):
    big = _train_jpegs(real_data, 3)
    small = tmp_path / "small.jpg"  # already at the training size: decoded, not resized
    Image.open(big[0]).convert("RGB").resize((SIZE[1], SIZE[0])).save(small, quality=90)
    paths = [big[0], small, big[1], small, big[2]]
    ours = DeviceDecoder(SIZE, "cpu")(_encoded(paths))
    for i, path in enumerate(paths):
        diff = (ours[i].int() - load_image(path, SIZE).int()).abs()
        assert diff.max() <= 2, path
    assert torch.equal(ours[1], ours[3])
    assert not torch.equal(ours[0], ours[2])


def test_items_carry_the_same_views_labels_and_ops_as_the_loader_path(real_data):
    root = real_data / "gsv_xs"
    pixels = TrainPlacesDataset(root, 4, 4, image_size=SIZE, augment=AugmentConfig())
    encoded = TrainPlacesDataset(root, 4, 4, image_size=SIZE, augment=AugmentConfig(), decode="device")
    items = [(p, 1000 + p) for p in range(3)]
    images, labels, ops = collate_places([pixels[i] for i in items])
    jpegs, labels_d, ops_d = collate_places([encoded[i] for i in items])
    assert isinstance(jpegs, EncodedImages) and len(jpegs) == 12
    assert torch.equal(labels, labels_d) and torch.equal(ops, ops_d) and ops.shape[1] == 3
    decoded = DeviceDecoder(SIZE, "cpu")(jpegs)
    assert (decoded.int() - images.int()).abs().max() <= 2  # the same views, in the same order


def test_a_file_that_is_not_a_jpeg_is_named_in_the_worker(tmp_path):
    png = tmp_path / "x.jpg"
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(ImageLoadError, match=r"x\.jpg: not a JPEG file.*data\.decode=loader"):
        read_jpeg_bytes(png)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg: an empty file"):
        read_jpeg_bytes(empty)
    with pytest.raises(ImageLoadError, match=r"missing\.jpg: cannot read image"):
        read_jpeg_bytes(tmp_path / "missing.jpg")


def test_a_jpeg_that_does_not_decode_is_named_among_its_batch(real_data, tmp_path):
    good = _train_jpegs(real_data, 3)
    broken = tmp_path / "truncated.jpg"
    data = good[1].read_bytes()
    broken.write_bytes(data[:len(data) // 2])
    batch = _encoded([good[0], broken, good[2]])
    with pytest.raises(ImageLoadError, match=r"truncated\.jpg: cannot decode JPEG on cpu"):
        DeviceDecoder(SIZE, "cpu")(batch)


def test_decode_on_device_refuses_settings_that_need_pixels_in_the_loader():
    with pytest.raises(ConfigError, match=r"data.decode: 'device' reads JPEG bytes.*image_cache: null"):
        config_from_dict({"data": {"decode": "device", "image_cache": "cache"}})
    with pytest.raises(ConfigError, match=r"augment.on: loader"):
        config_from_dict({"data": {"decode": "device", "augment": {"on": "loader"}}})
    with pytest.raises(ConfigError, match=r"data.decode"):
        config_from_dict({"data": {"decode": "gpu"}})


def test_decode_on_device_is_a_new_identity_and_the_default_renames_no_run():
    default = config_from_dict({})
    assert "decode" not in semantic_dict(default)["data"]  # runs recorded before the field kept their hash
    device = config_from_dict({"data": {"decode": "device"}})
    assert semantic_dict(device)["data"]["decode"] == "device"
    assert config_hash(device) != config_hash(default)
    assert config_hash({"data": {"decode": "loader"}}) == config_hash(default)


def _batches(paths: list[Path], per_batch: int) -> list[tuple[EncodedImages, torch.Tensor]]:
    return [(_encoded(paths[i:i + per_batch]), torch.full((per_batch,), i)) for i in range(0, len(paths), per_batch)]


def test_batches_decoded_ahead_arrive_in_order_with_their_labels(real_data):
    from pipeline.data.device_decode import decoded_batches

    paths = _train_jpegs(real_data, 12)
    decoder = DeviceDecoder(SIZE, "cpu")
    got = list(decoded_batches(_batches(paths, 4), decoder, depth=2))
    assert [int(labels[0]) for _, labels in got] == [0, 4, 8]
    for (images, _), start in zip(got, (0, 4, 8)):
        assert torch.equal(images, decoder(_encoded(paths[start:start + 4])))


def test_a_decoding_error_reaches_the_consumer_and_stopping_early_ends_the_thread(real_data, tmp_path):
    import threading

    from pipeline.data.device_decode import decoded_batches

    paths = _train_jpegs(real_data, 8)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:2000])
    batches = _batches(paths[:4] + [broken] + paths[5:8], 4)
    stream = decoded_batches(batches, DeviceDecoder(SIZE, "cpu"))
    first, _ = next(stream)
    assert first.shape == (4, 3, *SIZE)
    with pytest.raises(ImageLoadError, match=r"broken\.jpg"):
        next(stream)

    stream = decoded_batches(_batches(paths, 2), DeviceDecoder(SIZE, "cpu"), depth=1)
    next(stream)
    stream.close()  # what a `break` out of the training loop does
    assert not [t for t in threading.enumerate() if t.name == "jpeg-decode"]


def test_vpr_train_names_a_file_that_is_not_a_jpeg_in_one_line(embedded_copy, tmp_path, capsys):
    from pipeline.cli import main

    city = sorted((embedded_copy / "gsv_xs" / "train").iterdir())[0]
    for path in city.glob("*.jpg"):  # PNG bytes under .jpg names: every place of the city
        with Image.open(path) as img:
            img.load()
            img.save(path, format="PNG")
    code = main(["train", "--set", f"data.train_root={embedded_copy}/gsv_xs",
                 "--set", f"data.val_root={embedded_copy}/sf_xs/val", "--set", "data.decode=device",
                 "--set", "data.image_size=[32,32]", "--set", "evaluation.resize=[32,32]",
                 "--set", "model.pretrained=none", "--set", "training.places_per_batch=100",
                 "--set", "training.batches_per_epoch=4", "--set", "data.num_workers=1",
                 "--set", "training.device=cpu", "--set", "training.epochs=1",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vpr: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{city.name}/" in err and "not a JPEG file" in err and "data.decode=loader" in err


def test_a_full_size_batch_of_jpegs_leaves_the_workers_within_a_small_file_limit(embedded_root, tmp_path):
    # A batch crosses from a worker as one shared-memory block: at P x K = 100 x 4 with 2 workers
    # prefetching 4 batches each, a tensor per image would need over 1,000 file descriptors.
    script = tmp_path / "load.py"
    script.write_text(f"""
import resource, sys
from torch.utils.data import DataLoader
from pipeline.data.augment import AugmentConfig
from pipeline.data.datasets import PlaceBatchSampler, TrainPlacesDataset, collate_places
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
ds = TrainPlacesDataset("{embedded_root}/gsv_xs", 4, 4, image_size=(32, 32), augment=AugmentConfig(), decode="device")
sampler = PlaceBatchSampler(len(ds), 100, seed=0, batches_per_epoch=12)
loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_places, num_workers=2, prefetch_factor=4,
                    persistent_workers=True)
print(sum(len(images) for images, _, _ in loader))
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(12 * 100 * 4)
