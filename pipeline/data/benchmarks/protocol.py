"""The evaluation protocol of benchmark tests: what is measured and how images are sized.

A benchmark test of a finished run is not part of the run's identity (its config hash): the
protocol travels with the test, is recorded in MLflow next to the metrics (tag
`vpr.protocol.<benchmark>`), and defaults to what the field reports: Recall@1/5/10/20, positives
within 25 m, images resized as the run's own evaluation resizes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

Size = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
NATIVE = "native"


class ProtocolConfig(BaseModel):
    """How benchmarks are evaluated (`params.yaml` profile `benchmarks.protocol`, `vpr evaluate` flags)."""

    model_config = ConfigDict(extra="forbid")

    recall_at: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10, 20], min_length=1)
    positive_radius_m: float = Field(25.0, gt=0)
    # [H, W]; null: the run's own evaluation.resize; "native": the benchmark's own image size (its
    # first database image's), e.g. 480 x 640 for the downloader's datasets.
    resize: Size | Literal["native"] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] | None = None
    batch_size: int = Field(64, ge=1)

    @field_validator("recall_at")
    @classmethod
    def _sorted(cls, values: list[int]) -> list[int]:
        return sorted(set(values))

    @property
    def top_k(self) -> int:
        """Predictions kept per query: enough to recompute every Recall@N."""
        return max(self.recall_at)


def resolve_resize(protocol: ProtocolConfig, run_resize: tuple[int, int], first_image: Path) -> tuple[int, int]:
    """The (height, width) the images are resized to under `protocol` for one benchmark."""
    if protocol.resize is None:
        return tuple(run_resize)
    if protocol.resize == NATIVE:
        with Image.open(first_image) as img:
            return img.height, img.width
    return tuple(protocol.resize)
