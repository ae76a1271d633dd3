"""`data.decode: device`: loader workers only read JPEG bytes; the training device decodes and resizes.

Why: on a GPU node the loader cores, not the GPU, bound training at the real resolution (decoding a
640x480 JPEG costs ~2 ms of CPU; benchmarks/RESULTS.md). `data.image_cache` removes that cost by
storing pre-resized pixels (~300 KB per image on disk); this path removes it without the disk:
workers read the compressed file (~90 KB, microseconds), and `torchvision.io.decode_jpeg` decodes
the whole batch on the training device, with nvjpeg on CUDA and libjpeg-turbo on the CPU, one code
path. Images are then resized on the device (bilinear, antialiased like PIL's when shrinking), so
their pixels are close to, not identical with, the loader path's PIL resize (tests/test_device_decode.py
states the tolerance), which is why `data.decode` is part of a run's identity.

Decoding overlaps training: `decoded_batches` decodes the next batch in a background thread (on its
own CUDA stream) while the current one trains. Measured (benchmarks/RESULTS.md): on the CPU this
nearly doubles throughput; on an H100 it gained 2% over decoding in line, where the path reaches
~75% of the pre-resized cache's throughput.

JPEG only: the real datasets (GSV-Cities, SF-XS, Tokyo-XS) and the embedded data are JPEG; any
other file is refused in the worker with its name, as is a file nvjpeg or libjpeg cannot decode.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf

from pipeline.data.transforms import host_to_device
from pipeline.errors import ImageLoadError

JPEG_MAGIC = b"\xff\xd8\xff"
DECODE_CHOICES = ("loader", "device")


def decode_setting_problem(decode: str, image_cache: object, augment_on_loader: bool) -> str | None:
    """What is wrong with `data.decode` next to the other data settings (None: nothing). Device
    decoding leaves no pixels in the loader, where the image cache and loader-side augmentation
    would need them."""
    if decode not in DECODE_CHOICES:
        return f"must be one of {', '.join(DECODE_CHOICES)}, got {decode!r}"
    if decode == "device" and image_cache is not None:
        return ("'device' reads JPEG bytes, but image_cache supplies decoded pixels; set image_cache: "
                "null or decode: loader")
    if decode == "device" and augment_on_loader:
        return ("'device' leaves no pixels in the loader for data.augment.on: loader; set "
                "data.augment.on: device or data.decode: loader")
    return None


@dataclass
class EncodedImages:
    """A batch of images still JPEG-compressed: the files' bytes back to back in one 1-D uint8
    tensor, so a batch leaves a loader worker as one shared-memory block (one file descriptor;
    a tensor per image would hold P x K of them per batch in flight)."""

    blob: torch.Tensor
    lengths: list[int]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def data(self) -> list[torch.Tensor]:
        """One 1-D uint8 view per image (what `decode_jpeg` takes)."""
        return list(torch.split(self.blob, self.lengths))

    @staticmethod
    def read(paths: Sequence[str | Path]) -> EncodedImages:
        """The JPEG files' bytes (ImageLoadError naming a file that is not a readable JPEG)."""
        raws = [read_jpeg_bytes(p) for p in paths]
        return EncodedImages(torch.frombuffer(bytearray(b"".join(raws)), dtype=torch.uint8),
                             [len(r) for r in raws], [str(p) for p in paths])

    @staticmethod
    def concat(parts: Sequence[EncodedImages]) -> EncodedImages:
        """The images of several parts, in order (collating P places of K images)."""
        return EncodedImages(torch.cat([p.blob for p in parts]), [n for p in parts for n in p.lengths],
                             [s for p in parts for s in p.paths])


def read_jpeg_bytes(path: str | Path) -> bytes:
    """The bytes of a JPEG file; ImageLoadError naming the file otherwise."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot read image ({err})") from None
    if not raw.startswith(JPEG_MAGIC):
        what = "an empty file" if not raw else "not a JPEG file"
        raise ImageLoadError(f"{path}: {what}; data.decode=device decodes JPEG only, use "
                              "data.decode=loader for other formats")
    return raw


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg  # torchvision import kept off the worker path

    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec on every call; decode_jpeg still is its nvjpeg path
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class DeviceDecoder:
    """Decode a batch of JPEG bytes on `device` and resize it to `size` (height, width), uint8 NCHW."""

    def __init__(self, size: tuple[int, int], device: torch.device | str) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.device = torch.device(device)

    def __call__(self, batch: EncodedImages) -> torch.Tensor:
        if self.device.type == "cuda":
            # torchvision's nvjpeg decode writes its outputs on a stream of its own that does not
            # wait for ours: memory freed by our queued kernels (the last batch's decoded images)
            # could be overwritten before they ran. Waiting for this stream first closes that
            # window; in `decoded_batches` it is the side stream, so training does not wait.
            torch.cuda.current_stream(self.device).synchronize()
        try:
            images = _decode(batch.data, self.device)
        except RuntimeError:
            self._raise_for_broken_file(batch)
            raise
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):  # shapes are host-side metadata: no device sync
            by_shape.setdefault(tuple(image.shape), []).append(i)
        if len(by_shape) == 1:  # the usual case (the real datasets are all 640x480): no reordering
            return self._fit(torch.stack(images))
        out = torch.empty((len(images), 3, *self.size), dtype=torch.uint8, device=self.device)
        for members in by_shape.values():
            index = host_to_device(torch.tensor(members), self.device)
            out.index_copy_(0, index, self._fit(torch.stack([images[i] for i in members])))
        return out

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        """Images of one size at `size`: bilinear resize with antialiasing (as PIL's filter when
        shrinking), rounded to uint8; unchanged when already there."""
        if tuple(x.shape[-2:]) == self.size:
            return x
        y = nnf.interpolate(x.float(), size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return y.round_().clamp_(0, 255).to(torch.uint8)

    def _raise_for_broken_file(self, batch: EncodedImages) -> None:
        """The batch failed to decode: find the first file that does not decode alone and name it."""
        for data, path in zip(batch.data, batch.paths):
            try:
                _decode([data], self.device)
            except RuntimeError as err:
                raise ImageLoadError(f"{path}: cannot decode JPEG on {self.device} ({err})") from None


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def decoded_batches(loader: Iterable, decoder: DeviceDecoder, depth: int = 2) -> Iterator[tuple]:
    """Yield the loader's `(images, *rest)` batches with JPEG bytes replaced by decoded uint8 images
    on the decoder's device, decoding up to `depth` batches ahead in a background thread.

    On CUDA the thread decodes on a side stream and the consumer's stream waits for it on the
    device, not on the host. Batches that already hold pixels pass through unchanged. An error in
    the loader or the decoder is raised here, in the consumer; stopping early stops the thread.
    """
    if depth == 0:  # in line: decode each batch when it is needed
        for images, *rest in loader:
            yield (decoder(images) if isinstance(images, EncodedImages) else images, *rest)
        return
    device = decoder.device
    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for images, *rest in loader:
                event = None
                if isinstance(images, EncodedImages):
                    if side is not None:
                        with torch.cuda.stream(side):
                            images = decoder(images)
                            event = torch.cuda.Event()
                            event.record(side)
                    else:
                        images = decoder(images)
                if not put((images, event, rest)):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            put(_Failure(err))

    thread = threading.Thread(target=produce, name="jpeg-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            images, event, rest = item
            if event is not None:  # the consumer's stream waits on the device; the host goes on
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(event)
                images.record_stream(consumer)
            yield (images, *rest)
    finally:
        stop.set()
        thread.join(timeout=30)  # a loader stuck mid-batch must not hang the exit
