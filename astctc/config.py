"""Dataclass configs from YAML, with `key.sub=value` overrides from the command line.

Every config in astctc is a (nested) dataclass; this module turns dicts into them and back, so
a run can write its fully resolved config and a later run can read it unchanged.

Reading checks types (a `null` only where the field allows one; a number must be finite; an
integer may be written 2e6, YAML 1.1's string for it) and then runs the checks registered for
the config's class (`register_check`): a value no run can use is an error when the config is
read, naming the file or the `--set` override it came from and its key. A key given twice in one
YAML mapping is an error too (PyYAML would keep the last one silently).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot be used; `key` is its dotted path ("" for the whole config)."""

    def __init__(self, key: str, problem: str, whole: bool = False):
        """The message is "key: problem", or just `problem` when `whole` (it names the key)."""
        super().__init__(problem if whole or not key else f"{key}: {problem}")
        self.key = key


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a section (mapping)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _is_optional(tp: Any) -> bool:
    return tp is Any or type(None) in typing.get_args(tp)


class _Empty:
    """The value of an override with nothing after '=' (`--set data.train=`): the empty
    string for a str field, null for the others."""

    def __repr__(self) -> str:
        return "an empty value"


EMPTY = _Empty()


def _convert(tp: Any, value: Any, where: str, strict: bool) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is EMPTY:
        value = "" if tp is str else None
    if value is None:
        if _is_optional(tp) or not strict:
            return None
        raise ConfigError(where, f"expected {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, strict)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, where, strict)
        return value
    if origin in (list, tuple) and args:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        if origin is tuple and Ellipsis not in args:
            if len(value) != len(args):
                raise ConfigError(where, f"expected a list of {len(args)} values, got {value!r}")
            return tuple(_convert(a, v, f"{where}[{i}]", strict) for i, (a, v) in enumerate(zip(args, value)))
        return origin(_convert(args[0], v, f"{where}[{i}]", strict) for i, v in enumerate(value))
    if origin is dict and len(args) == 2:
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}", strict) for k, v in value.items()}
    if tp in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float, str)):
        value = _number(tp, value)
        if tp is float and strict and isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(where, f"must be a finite number, not {value!r}")
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(where, f"expected {_type_name(tp)}, got {value!r}")
    return value


def _number(tp: type, value: int | float | str) -> int | float | str:
    """`value` as a `tp` where it is one: YAML 1.1 reads "3e-3" and "2e6" as strings, and an
    integer may be written as a whole number in exponent notation; anything else unchanged."""
    if isinstance(value, str):
        try:
            value = float(value) if tp is float else int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return value
    if tp is float:
        return float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def from_dict(cls: type[T], data: dict | None, where: str = "", strict: bool = False) -> T:
    """Build dataclass `cls` from a dict, recursively; unknown keys are an error. With
    `strict`, so is a null for a field that cannot be None (what a user writes is read
    strictly; configs saved by earlier versions, which may hold such nulls, are not)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(where, f"expected a section (mapping), got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        raise ConfigError(
            f"{where}.{unknown[0]}".lstrip("."),
            "unknown config key"
            + (f" (also {', '.join(unknown[1:])})" if unknown[1:] else "")
            + (f"; did you mean {f'{where}.{close[0]}'.lstrip('.')}?" if close else ""),
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}".lstrip("."), strict) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _yaml_problem(e: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line or None, one-line description) of a YAML parse error."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        problem += f" ({context}" + (f" from line {cmark.line + 1}" if cmark is not None else "") + ")"
    return (mark.line + 1 if mark is not None else None), problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last
    one silently, so an edited config could run with a value its reader never sees."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden: not a duplicate
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, typing.Hashable):  # SafeLoader reports it
            continue
        if key in first:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first[key]})", key_node.start_mark
            )
        first[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(text: str) -> Any:
    """yaml.safe_load, but a key given twice in one mapping is a yaml.YAMLError."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _parse_value(item: str, raw: str) -> Any:
    try:
        return read_yaml(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"--set {item!r}: invalid YAML value: {_yaml_problem(e)[1]}") from None


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML; nothing after '=' is EMPTY) to a
    nested dict, in place. ValueError naming the override for one that is not key=value, is
    not YAML, or goes through a key that is not a section."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: not key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set {item!r}: {key.strip()!r} is not a dotted key (a.b.c)")
        node = data
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None or child is EMPTY:  # a missing section, or one set to null: created
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = _parse_value(item, raw) if raw.strip() else EMPTY
    return data


# ---- checks of values, registered per config class ------------------------------------------

_CHECKS: dict[type, list[Callable[[Any], None]]] = {}


def register_check(cls: type) -> Callable:
    """Decorator: `fn(config)` runs on every `cls` that `load_config` reads; it raises
    ConfigError (or ValueError) for a value no run can use."""

    def deco(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _CHECKS.setdefault(cls, []).append(fn)
        return fn

    return deco


def check_config_values(obj: Any) -> None:
    """Run the checks registered for obj's class."""
    for fn in _CHECKS.get(type(obj), []):
        fn(obj)


def at_least(obj: Any, prefix: str, minimum: float, *names: str) -> None:
    """ConfigError unless each named field of obj (None allowed) is >= minimum."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and not v >= minimum:
            raise ConfigError(f"{prefix}{n}", f"{prefix}{n} must be >= {minimum:g}, not {v!r}", whole=True)


def above(obj: Any, prefix: str, minimum: float, *names: str) -> None:
    """ConfigError unless each named field of obj (None allowed) is > minimum."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and not v > minimum:
            raise ConfigError(f"{prefix}{n}", f"{prefix}{n} must be > {minimum:g}, not {v!r}", whole=True)


def at_most(obj: Any, prefix: str, maximum: float, *names: str) -> None:
    """ConfigError unless each named field of obj (None allowed) is <= maximum: a size far
    beyond any real model fails here, naming its key, not as an allocation deep in torch."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and not v <= maximum:
            raise ConfigError(f"{prefix}{n}", f"{prefix}{n} must be <= {maximum:g}, not {v!r}", whole=True)


def fraction(obj: Any, prefix: str, *names: str, closed: bool = False) -> None:
    """ConfigError unless each named field is in [0, 1) ([0, 1] with closed)."""
    for n in names:
        v = getattr(obj, n)
        if not (0 <= v <= 1 if closed else 0 <= v < 1):
            raise ConfigError(
                f"{prefix}{n}", f"{prefix}{n} must be in [0, 1{']' if closed else ')'}, not {v!r}", whole=True
            )


def one_of(obj: Any, prefix: str, name: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    v = getattr(obj, name)
    if v not in choices:
        raise ConfigError(
            f"{prefix}{name}", f"{prefix}{name} must be one of {', '.join(choices)}, not {v!r}", whole=True
        )


# ---- reading and writing ------------------------------------------------------------------


def _origin(key: str, overrides: list[str], path: str | Path | None) -> str:
    """Where a key's value came from: the last --set naming it (or a section above or below
    it), else the config file."""
    for item in reversed(overrides):
        k = item.split("=", 1)[0].strip()
        if key and (k == key or key.startswith(k + ".") or k.startswith(key + ".")):
            return f"--set {item!r}"
    return str(path) if path is not None else "config"


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Read a YAML file (optional) and `--set` overrides into `cls`, then check the values.

    Every error is a ValueError whose message names the file (with the line, for YAML
    syntax) or the override it came from, and the key."""
    overrides = list(overrides)
    data: dict = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file (byte {e.start}); a config is YAML text") from None
        except IsADirectoryError:
            raise ValueError(f"{path}: is a directory, not a YAML config file") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        try:
            data = read_yaml(text)
        except yaml.YAMLError as e:
            line, problem = _yaml_problem(e)
            raise ValueError(f"{path}{f':{line}' if line else ''}: invalid YAML: {problem}") from None
        data = data if data is not None else {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping (key: value lines), not {type(data).__name__}")
    apply_overrides(data, overrides)
    try:
        obj = from_dict(cls, data, strict=True)
        check_config_values(obj)
    except ConfigError as e:
        raise ValueError(f"{_origin(e.key, overrides, path)}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path or 'config'}: {e.args[0] if e.args else e}") from None
    return obj


def save_config(obj: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
