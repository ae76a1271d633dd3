"""The study file's schema (pydantic) and how its validation errors are worded.

Cross-field rules (labels named anywhere are cells, benchmarks exist, every cell resolves to a
valid run config) need the parsed study and live in `pipeline.studies.study`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from pipeline.components.base import StrictConfig
from pipeline.data.catalog import SPLITS

__all__ = ["DATASETS", "KINDS", "METRICS", "StudyFileConfig", "describe_errors"]

KINDS = ("final", "per_epoch", "top_k")
DATASETS = tuple(SPLITS)  # keys of published numbers: the evaluation splits of the catalog
METRICS = ("R@1", "R@5", "R@10")


_Percent = Annotated[float, Field(ge=0, le=100)]


class _MetricsConfig(StrictConfig):
    r1: _Percent = Field(alias="R@1")
    r5: _Percent = Field(alias="R@5")
    r10: _Percent | None = Field(None, alias="R@10")


# One optional entry per evaluation split of the catalog, and the per-epoch series of SF-XS val.
_PublishedCellConfig = create_model(
    "_PublishedCellConfig", __base__=StrictConfig,
    **{key: (_MetricsConfig | None, None) for key in DATASETS},
    per_epoch=(dict[Annotated[int, Field(ge=0)], _MetricsConfig] | None, None),
)


class _VariantConfig(StrictConfig):
    label: Annotated[str, Field(min_length=1)]
    set_: dict[str, Any] = Field(default_factory=dict, alias="set")

    @field_validator("set_", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class StudyFileConfig(StrictConfig):
    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
    # The seed paper and its table or figure; a study beyond the papers leaves both out.
    paper: Annotated[str, Field(pattern=r"^\d{3}$")] | None = None
    reproduces: Annotated[str, Field(min_length=1)] | None = None
    title: Annotated[str, Field(min_length=1)]
    kind: Literal["final", "per_epoch", "top_k"]
    base: dict[str, Any] = Field(default_factory=dict)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    variants: list[_VariantConfig] = Field(default_factory=list)
    published: dict[str, _PublishedCellConfig] = Field(default_factory=dict)
    baseline: str | None = None  # a cell label: the report adds "<cell> Δ <baseline>" rows
    qualitative: list[str] = Field(default_factory=list)  # cell labels the qualitative figure shows
    # Standard benchmarks the evaluate stage tests this study's runs on (a list, or "all").
    benchmarks: list[str] | Literal["all"] = Field(default_factory=list)
    cost: bool = False  # the report adds a cost table and a recall-vs-cost figure

    @field_validator("paper", mode="before")
    @classmethod
    def _quoted_paper(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML reads 003 as the number 3
            raise ValueError(f'write the paper id as a quoted string, e.g. paper: "{value:03d}"')
        return value

    @field_validator("base", "grid", "published", mode="before")
    @classmethod
    def _none_is_empty_map(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("variants", "qualitative", mode="before")
    @classmethod
    def _none_is_empty_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"repeated seed in {seeds}")
        return seeds


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _loc_text(loc: Sequence[Any]) -> str:
    # Keys that are dotted config paths or labels are quoted so the path stays readable.
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.replace("_", "").isalnum():
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out or "<root>"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The schema model whose keys live at `loc` (for 'valid keys' hints)."""
    if not loc:
        return StudyFileConfig
    if loc[0] == "variants" and len(loc) == 2:
        return _VariantConfig
    if loc[0] == "published" and len(loc) == 2:
        return _PublishedCellConfig
    if loc[0] == "published" and len(loc) in (3, 4):
        return _MetricsConfig
    return None


def describe_errors(err: ValidationError) -> list[str]:
    """Study-file wording of a validation error. Not `pipeline.errors.format_validation_error`:
    study keys are dotted config paths, cell labels and `R@N` aliases, which must be quoted
    (`grid['optimizer.lr']`, `published['gem / adamw']`) to stay unambiguous; that formatter joins
    locations with dots and lists field names, not aliases."""
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        where = _loc_text(loc)
        if e["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            valid = f" (valid: {', '.join(_fields(model))})" if model is not None else ""
            lines.append(f"{where}: unknown key{valid}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required")
        elif e["type"] == "value_error":
            lines.append(f"{where}: {e['ctx']['error']}")
        elif e["type"] == "literal_error" and loc == ["kind"]:
            lines.append(f"kind: must be one of {', '.join(KINDS)} (got {e['input']!r})")
        else:
            got = repr(e["input"])
            lines.append(f"{where}: {e['msg']} (got {got if len(got) <= 60 else got[:57] + '...'})")
    return lines
