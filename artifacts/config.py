"""Typed configs: a dataclass is the schema; YAML files and ``key=value`` overrides fill it.

    cfg = load_config(RLConfig, "configs/train/dler_testbed.yaml", ["learning_rate=1e-5"])

Unknown keys and values of the wrong type are errors that name the key, not silent typos.
Nested dataclasses are addressed with dots (``reward.alpha=0.5``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from artifacts.errors import ShortcotError

T = TypeVar("T")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ShortcotError as err:
                last = err
        raise last or ShortcotError(f"config key {key}: cannot use {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ShortcotError(f"config key {key}: expected a mapping, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        return [_coerce(v, inner, key) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ShortcotError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ShortcotError(f"config key {key}: {value!r} is not one of {list(args)}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ShortcotError(f"config key {key}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ShortcotError(
                f"config key {key}: expected {tp.__name__}, got {value!r}"
            ) from None
    return value


def _build(cls: type[T], values: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ShortcotError(
            f"unknown config key(s) {', '.join(prefix + k for k in sorted(unknown))}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> dict:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b": {"c": "x"}}`` (values parsed as YAML scalars)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ShortcotError(
                f"override {item!r} is not key=value; write e.g. learning_rate=1e-5"
            )
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            where = getattr(err, "problem", None) or "not YAML"
            raise ShortcotError(
                f"override {item!r}: the value is not valid YAML ({where}); quote it or fix it"
            ) from None
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml_mapping(path: str | os.PathLike, recipes: str = "configs/") -> dict:
    """The ``key: value`` mapping of a YAML file; every way it can be wrong (missing, a
    folder, not text, not YAML, not a mapping) is a one-line `ShortcotError`."""
    p = Path(path)
    if not p.exists():
        raise ShortcotError(
            f"config file {p} does not exist; check the path (recipes live in {recipes})"
        )
    if p.is_dir():
        raise ShortcotError(f"config file {p} is a folder; pass a YAML file")
    try:
        loaded = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ShortcotError(f"config file {p} is not a text file; pass a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "not YAML"
        raise ShortcotError(
            f"config file {p} is not valid YAML ({problem}{where}); fix it or pass a YAML recipe"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ShortcotError(f"config file {p} must hold a mapping of key: value")
    return loaded


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> T:
    """Build ``cls`` from a YAML file (optional) and ``key=value`` overrides (applied last)."""
    values: dict = read_yaml_mapping(path) if path is not None else {}
    values = _merge(values, parse_overrides(overrides or []))
    return _build(cls, values)


def config_to_dict(cfg: Any) -> dict:
    """A plain, JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(cfg)
