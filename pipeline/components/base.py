"""The base of every component's parameter model, and tagged unions over a registry.

A registry is a plain dict from the name users write in YAML to the component's parameter
model; the model's fields are the constructor's keyword names and its `build(...)` returns the
object, so a name builds exactly one class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.errors import ConfigError, format_validation_error


class StrictConfig(BaseModel):
    """Base of the file-schema models (studies, tunings, profiles): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ComponentConfig(BaseModel):
    """Base of every component's parameter model: `name` plus the constructor's keywords."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    target: ClassVar[Any] = None  # the class this name builds (or its import path, see target_class)
    name: str

    @classmethod
    def target_class(cls) -> type | None:
        """The class this name builds."""
        return cls.target

    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments (everything but `name` and `distance`)."""
        return self.model_dump(exclude={"name", "distance"})


def name_shorthand(value: Any) -> Any:
    """A bare name stands for the component with all-default parameters: `miner: none`."""
    return {"name": value} if isinstance(value, str) else value


def tagged_union(registry: Mapping[str, type[BaseModel]]) -> Any:
    """The pydantic type `{name: ..., params...}` (or a bare name) over the models of `registry`."""
    return Annotated[Union[tuple(registry.values())], Field(discriminator="name"),  # noqa: UP007
                     BeforeValidator(name_shorthand)]


def coerce(kind: str, registry: Mapping[str, type[BaseModel]], union: Any, cfg: Any) -> Any:
    """Accept a parameter model, a dict or a bare name; return the validated model of `registry`.

    Invalid input is a ConfigError whose lines start with `kind` (e.g. `loss.margin: ...`).
    """
    if isinstance(cfg, BaseModel) and type(cfg) in registry.values():
        return cfg
    if isinstance(cfg, BaseModel):
        cfg = cfg.model_dump()
    try:
        return TypeAdapter(union).validate_python(cfg)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, {(): (kind, registry)}, prefix=(kind,))) from None
