"""Descriptor extraction: one forward pass over an evaluation dataset, descriptors kept on the device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipeline.data.transforms import normalize

PRECISIONS = ("fp32", "bf16")


def _check_extraction_arguments(dataset: Dataset, batch_size: int, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {list(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset!r} is empty: nothing to extract")


def extract_descriptors(model: nn.Module, dataset: Dataset, batch_size: int = 64,
                        device: str | torch.device = "cpu", num_workers: int = 0,
                        precision: str = "fp32", channels_last: bool = False, progress: bool = True,
                        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = normalize,
                        ) -> torch.Tensor:
    """Run `model` over every item of `dataset` and return float32 descriptors [len(dataset), D].

    `dataset[i]` must be `(image CHW, i)`. Batches are copied to `device` and passed through
    `preprocess` there (default: ImageNet normalisation of uint8 images, as in training; `None`
    only casts to float32). The result stays on `device`: it is preallocated after the first batch
    and written slice by slice, so there is no per-batch host sync. `precision="bf16"` runs the
    forward pass under bfloat16 autocast; the descriptors are stored in float32 either way.

    The model is moved to `device` (and to channels_last memory format when asked), both in
    place as `nn.Module.to` does; it runs in eval mode and its training mode is restored after.
    """
    _check_extraction_arguments(dataset, batch_size, precision)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")

    was_training = model.training
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    out: torch.Tensor | None = None
    start = 0
    try:
        with torch.inference_mode(), tqdm(total=len(dataset), unit="img", disable=not progress,
                                          desc="descriptors") as bar:
            for images, indices in loader:
                _check_order(indices, start, dataset)
                images = images.to(device, non_blocking=True)
                x = preprocess(images) if preprocess is not None else images.to(torch.float32)
                x = x.contiguous(memory_format=memory_format)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    desc = model(x)
                if desc.ndim != 2 or desc.shape[0] != x.shape[0]:
                    raise ValueError(f"model must return descriptors of shape [B, D] = "
                                     f"[{x.shape[0]}, D], got shape {tuple(desc.shape)}")
                if out is None:
                    # A normal (not inference) tensor, so callers may later modify it in place.
                    with torch.inference_mode(False):
                        out = torch.empty((len(dataset), desc.shape[1]), dtype=torch.float32,
                                          device=device)
                elif desc.shape[1] != out.shape[1]:
                    raise ValueError(f"model returned descriptors of dimension {desc.shape[1]} after "
                                     f"earlier batches of dimension {out.shape[1]}")
                out[start:start + desc.shape[0]] = desc  # casts bf16 to float32
                start += desc.shape[0]
                bar.update(desc.shape[0])
    finally:
        model.train(was_training)
    if out is None or start != len(dataset):
        raise ValueError(f"{dataset!r}: the loader yielded {start} items, expected {len(dataset)}")
    return out


def _check_order(indices: torch.Tensor | list, start: int, dataset: Dataset) -> None:
    """The loader is sequential, so the items' own indices must be start, start+1, ...

    A dataset that returns something else would silently scramble database and query rows.
    """
    indices = torch.as_tensor(indices)
    expected = torch.arange(start, start + len(indices))
    if indices.ndim != 1 or not torch.equal(indices.to(torch.int64), expected):
        raise ValueError(f"{dataset!r}: item i must be (image, i); batch starting at {start} "
                         f"returned indices {indices.tolist()[:8]}...")
