"""Dataclass configurations and their YAML form.

Every run writes the configuration it used beside its outputs (``config.yaml``), and
that file alone rebuilds the run: ``load_config(TrainConfig, path)``. Command-line
overrides use dotted keys: ``model.hypotheses=[32,16,8]``, ``optim.lr=1e-3``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """A dataclass as plain Python (tuples become lists, paths strings) for YAML/JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def _resolve(field_type: Any) -> Any:
    """The dataclass type inside ``X``, ``X | None`` or ``Optional[X]``, else None."""
    if dataclasses.is_dataclass(field_type):
        return field_type
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(field_type):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def from_dict(cls: type[T], data: dict) -> T:
    """Build dataclass ``cls`` from plain data, recursing into nested dataclasses.

    Unknown keys are an error (a typo in a config must not be ignored).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        nested = _resolve(hints[name])
        if nested is not None and isinstance(value, dict):
            value = from_dict(nested, value)
        kwargs[name] = value
    return cls(**kwargs)


def save_config(config: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read a YAML config into ``cls`` (``path`` None: ``cls``'s defaults) and apply
    ``key.sub=value`` overrides."""
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path is not None else to_dict(cls())
    return from_dict(cls, apply_overrides(data, overrides or []))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings (values parsed as YAML) to nested plain data."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data
