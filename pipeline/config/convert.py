"""params.yaml's values into the config dataclasses, and the dataclasses back into plain values.

`build` walks a dataclass's fields and `convert`s each value to its field's type hint, so an
unknown key, a missing one or a wrong type fails as one ConfigError that names the key: an
unknown key first, then the first field in order that is missing or mistyped. `type_name` says
in words what a type allows. Range checks and checks of one setting against another run in each
dataclass's ``__post_init__`` (or in a ``validate`` its holder calls) and raise the same error.

Why not pydantic (installed with mlflow; measured with pydantic 2.14 on these stdlib dataclasses,
each given a ``__pydantic_config__``): in strict Python mode it refuses a dict for a dataclass
("Input should be an instance of ..."); in lax mode it turns "1" into 1 and 1 into true, which
params.yaml must refuse. Strict JSON mode (the YAML dumped to JSON first) accepts and refuses
what `convert` does, but it gathers every error instead of the first, reports an unknown key
after the other errors, takes an empty string for a string, and wraps a ``__post_init__``
ConfigError as "Value error, ...". Turning its errors back into this package's one-line
``KEY = VALUE is not allowed; expected ...`` messages needs the field type at each error's
location: the same walk of the types as below, on top of the library. cattrs is not among the
project's dependencies. So the walk stays here, in about a hundred lines.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pipeline.config.base import ConfigError, check, fail


def type_name(tp: Any) -> str:
    """What a value of type `tp` looks like in YAML, in words ("a list of 2 integers")."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if args[1:] == (Ellipsis,):
            return f"a list of {type_name(args[0])}s"
        return f"a list of {len(args)} {type_name(args[0])}s"
    if origin is dict:
        return f"a mapping of names to {type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        keys = ", ".join(f.name for f in dataclasses.fields(tp))
        return f"a mapping with keys {keys}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, str(tp)
    )


def convert(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML value into `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is Literal:
        check(value in typing.get_args(tp), key, value, type_name(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            check(type(None) in args, key, value, type_name(tp))
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            # One type besides null (an optional block): its own error names the inner key.
            raise errors[0]
        fail(key, value, type_name(tp))
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        check(isinstance(value, list | tuple), key, value, type_name(tp))
        item = typing.get_args(tp)[0]
        return tuple(convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(tp)
        check(
            isinstance(value, list | tuple) and len(value) == len(args),
            key,
            value,
            type_name(tp),
        )
        return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        check(isinstance(value, Mapping), key, value, type_name(tp))
        value_type = typing.get_args(tp)[1]
        return {str(k): convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value  # checked by the section that holds it (cut.translators' overrides)
    if tp is bool:
        check(isinstance(value, bool), key, value, "true/false")
        return value
    if tp is int:
        check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        check(
            isinstance(value, int | float) and not isinstance(value, bool), key, value, "a number"
        )
        return float(value)
    if tp is str:
        check(isinstance(value, str) and value != "", key, value, "a non-empty string")
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")


def build(cls: type, raw: Any, key: str) -> Any:
    """The dataclass `cls` from the YAML mapping `raw` found at `key` ("" for the top level)."""
    check(isinstance(raw, Mapping), key, raw, type_name(cls))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(
            f"params.yaml: unknown key {where}{unknown[0]}; allowed keys under "
            f"{key or 'the top level'}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, spec in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in raw:
            kwargs[name] = convert(raw[name], hints[name], sub)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.yaml: missing key {sub} ({type_name(hints[name])})")
    return cls(**kwargs)


def run_settings(config: Any) -> dict[str, Any]:
    """The fields of a config section that define a run (all but the ``runtime`` ones), as plain
    values (tuples become lists), so they compare equal to a checkpoint's saved copy."""
    plain = to_dict(config)
    return {
        spec.name: plain[spec.name]
        for spec in dataclasses.fields(config)
        if not spec.metadata.get("runtime")
    }


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config section, for logging (tuples become lists)."""
    return _lists(dataclasses.asdict(config))


def _lists(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _lists(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def flatten_mapping(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(flatten_mapping(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
