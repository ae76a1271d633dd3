"""Errors that are the user's to fix, and the one way they are worded.

Every error raised for bad input (paths, names, configs, data, params) derives from `UserError`:
the CLI prints it as one line (exit 2); any other exception is a bug and keeps its traceback.
This module also owns the one formatter of pydantic validation errors and the one YAML reader
(which refuses duplicate keys), so every config, study, tuning and params file reports the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong, where, and what would be right."""


class ConfigError(UserError, ValueError):
    """An invalid configuration; the message names the file (when there is one) and key paths."""

    def __init__(self, problems: str | list[str], source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" ({source})" if source else ""
        if len(self.problems) == 1 and not source:
            message = self.problems[0]
        else:
            message = f"invalid config{where}:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


class ImageLoadError(UserError, OSError):
    """An image file could not be read or decoded; the message names the file."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping from `path`; duplicate keys, syntax errors and a non-mapping top level are
    ConfigErrors naming the file (and line), so every YAML the project reads is read one way."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: YAML error: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML error: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(
    err: ValidationError,
    sections: Mapping[tuple[str, ...], tuple[str, Mapping[str, type[BaseModel]]]],
    models: Mapping[tuple[str, ...], type[BaseModel]] | None = None,
    prefix: tuple[str, ...] = (),
) -> list[str]:
    """One line per pydantic error, as `key.path: what is wrong (what would be right)`.

    (Slightly over 60 lines on purpose: one walk over the error location, then one branch per
    pydantic error kind, read top to bottom.)

    `sections` maps the path of each tagged-union field to (label, registry) so the tag pydantic
    inserts in locations is dropped and unknown names list the registry. `models` maps section
    paths to their model classes so unknown keys list the valid ones. `prefix` is prepended.
    """
    models = models or {}
    lines = []
    for e in err.errors():
        path: list[str] = []
        component: tuple[tuple[str, ...], str, type[BaseModel], str] | None = None
        loc = list(e["loc"])
        i = 0
        while True:
            key = tuple(path)
            if key in sections and i < len(loc) and isinstance(loc[i], str) and loc[i] in sections[key][1]:
                label, registry = sections[key]
                component = (key, label, registry[loc[i]], loc[i])
                i += 1
            if i >= len(loc):
                break
            path.append(str(loc[i]))
            i += 1
        dotted = ".".join(prefix + tuple(path)) or "<root>"
        kind = e["type"]
        if kind == "extra_forbidden":
            parent = tuple(path[:-1])
            if component is not None and component[0] == parent:
                _, label, model, tag = component
                valid = [f for f in model.model_fields if f != "name"]
                lines.append(f"{dotted}: not accepted by {label} {tag!r} (valid: {', '.join(valid) or 'none'})")
            else:
                model = models.get(parent)
                valid_txt = f" (valid: {', '.join(model.model_fields)})" if model is not None else ""
                lines.append(f"{dotted}: unknown key{valid_txt}")
        elif kind in ("union_tag_invalid", "union_tag_not_found") and tuple(path) in sections:
            label, registry = sections[tuple(path)]
            valid = ", ".join(registry)
            if kind == "union_tag_invalid":
                lines.append(f"{dotted}.name: unknown {label} {e['ctx']['tag']!r} (valid: {valid})")
            else:
                lines.append(f"{dotted}.name: missing (valid: {valid})")
        elif kind in ("value_error", "assertion_error"):
            text = str(e.get("ctx", {}).get("error", e["msg"]))
            # Validators start their message with the field they are about: attach it to the path.
            match = re.match(r"(\w+): ", text)
            owner = component[2] if component is not None and component[0] == tuple(path) else models.get(tuple(path))
            if match and owner is not None and match.group(1) in owner.model_fields:
                field_path = ".".join(prefix + tuple(path) + (match.group(1),))
                lines.append(f"{field_path}: {text[match.end():]}")
            else:
                lines.append(text if dotted == "<root>" else f"{dotted}: {text}")
        elif kind == "missing":
            lines.append(f"{dotted}: required")
        else:
            lines.append(f"{dotted}: {e['msg']} (got {_short(e['input'])})")
    return lines
