"""Reading configs: YAML -> overrides -> typed dataclasses, for curricula and sweeps alike.

One generic parser builds every section from its dataclass's type hints (`_build`,
`_coerce`): Literal, Optional, int, float, bool, str, lists, tuples, dicts, nested
dataclasses, and types with a `from_raw(raw, key)` constructor (a sweep's `Param`).
`--set key.sub=value` overrides are applied to the raw mapping first; lists of stages are
addressed by index or by stage name (`--set stages.base.iterations=10`). Every error names
the key, the value and what is allowed; `load_config` adds the file.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import yaml

from pipelines.config.checks import check_stages, validate, validate_sweep
from pipelines.config.errors import ConfigError
from pipelines.config.schema import PipelineConfig
from pipelines.config.sweep import SweepConfig


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read a YAML config, apply `key.sub=value` overrides, check types and invariants.

    Raises:
        ConfigError: naming the file, key, value and what is allowed.
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    for item in overrides:
        apply_override(raw, item)
    try:
        return from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def from_dict(raw: dict[str, Any]) -> PipelineConfig:
    """Build and validate a `PipelineConfig` from a nested dict (YAML or `to_dict` output)."""
    config = _build(PipelineConfig, raw, "")
    validate(config)
    if config.sweep is not None:
        validate_sweep(config.sweep)
    return config


def load_sweep_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[PipelineConfig, SweepConfig]:
    """Read a sweep YAML (a pipeline YAML with a `sweep:` section): (pipeline, its sweep).

    Raises:
        ConfigError: naming the file, key, value and what is allowed.
    """
    config = load_config(path, overrides)
    if config.sweep is None:
        raise ConfigError(f"{path}: a `sweep:` mapping is required (see pipelines/config/sweep.py)")
    try:
        check_stages(config, config.sweep)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config, config.sweep


def parse_sweep(raw: dict[str, Any]) -> SweepConfig:
    """A checked `SweepConfig` from a `sweep:` mapping (YAML or `SweepConfig.to_dict` output)."""
    sweep = _build(SweepConfig, raw, "sweep.")
    validate_sweep(sweep)
    return sweep


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `key.sub=value` in the nested dict `raw`; the value is parsed as YAML.

    Stage entries are addressed by list index or by their `name`.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    value = yaml.safe_load(text) if text.strip() else ""
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, here)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"override {item!r}: {here} is a value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is a value, not a section")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "s": [{"name": "x", "k": 2}]}` -> `{"a.b": 1, "s.x.k": 2, ...}`.

    Stage lists flatten by stage name, the same keys `--set` accepts.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{item.get('name', i)}."))
        else:
            out[name] = value
    return out


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (allowed in {where.rstrip('.') or 'the top level'}: "
            f"{sorted(known)})"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}{f.name}"
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key {key}")
            continue
        kwargs[f.name] = _coerce(hints[f.name], raw[f.name], key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if hasattr(tp, "from_raw"):
        return tp.from_raw(value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: allowed values are {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{key}={value!r}: expected a list of {len(args)} items")
            return tuple(_coerce(a, v, f"{key}.{i}") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0]
        items = [_coerce(item, v, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return {k: _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _list_index(items: list, part: str, key: str) -> int:
    if part.isdigit():
        if int(part) >= len(items):
            raise ConfigError(f"override key {key}: index {part} out of range (0..{len(items) - 1})")
        return int(part)
    names = [x.get("name") for x in items if isinstance(x, dict)]
    if part not in names:
        raise ConfigError(f"override key {key}: no entry named {part!r} (names: {names})")
    return names.index(part)
