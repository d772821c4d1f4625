"""Experiment parameters: ``--param K=V``, params files (YAML, JSON, TOML) and API values, merged
into dotted keys with their provenance."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from envsnap.errors import ParamsError
from envsnap.manifest import Param, ParamScalar, ParamSource, ParamValue, Redaction
from envsnap.redact import redact_param_value

# Later sources override earlier ones; within one source a key may be set once.
_PRECEDENCE: tuple[ParamSource, ...] = ("default", "file", "api", "cli")


def parse_cli_value(text: str) -> ParamScalar:
    """Type a command-line value: integer, float, true/false, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    # "nan" or "inf" typed as a value is more likely a word than a number.
    return number if math.isfinite(number) else text


def parse_cli_params(items: Sequence[str]) -> dict[str, ParamValue]:
    """``["lr=0.1", "a.b=4"]`` -> typed values; a key given twice differently is an error."""
    values: dict[str, ParamValue] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ParamsError(
                f"--param {item!r} is not KEY=VALUE", hint="write it as --param lr=0.1"
            )
        _check_key(key, f"--param {item!r}")
        value = parse_cli_value(raw)
        if key in values and values[key] != value:
            raise ParamsError(
                f"parameter {key!r} is given twice with different values "
                f"({values[key]!r} and {value!r})",
                hint="pass each --param once",
            )
        values[key] = value
    return values


def load_params_file(path: Path) -> dict[str, ParamValue]:
    """Read a YAML, JSON or TOML params file into flat dotted keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            f"params file {path} does not exist", hint="check the --params-file path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"params file {path} cannot be read ({exc})", hint="check it") from None
    data = _parse_params_text(text, path)
    if not isinstance(data, Mapping):
        raise ParamsError(
            f"params file {path} does not hold a mapping of names to values at its top level",
            hint="write it as key: value pairs",
        )
    return flatten_params(data, origin=str(path))


def _parse_params_text(text: str, path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
    except Exception as exc:  # each parser raises its own error type; all mean "malformed"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParamsError(
            f"params file {path} is not valid {suffix[1:].upper()} ({first_line})",
            hint="fix the file",
        ) from None
    raise ParamsError(
        f"params file {path} has an unknown extension {suffix!r}",
        hint="use .yaml, .yml, .json or .toml",
    )


def flatten_params(
    data: Mapping[Any, Any], *, origin: str, prefix: str = ""
) -> dict[str, ParamValue]:
    """Nested mappings become dotted keys; lists of scalars stay lists; anything else is JSON."""
    flat: dict[str, ParamValue] = {}
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        _check_key(key, origin)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, origin=origin, prefix=f"{key}."))
        else:
            flat[key] = _to_param_value(value)
    return flat


def _to_param_value(value: Any) -> ParamValue:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(v, bool | int | float | str) for v in value
    ):
        return tuple(value)
    # Dates, nulls and nested lists have no exact TOML twin in a flat param; JSON keeps them exact.
    return json.dumps(value, sort_keys=True, default=str)


def _check_key(key: str, origin: str) -> None:
    if not key or any(part == "" for part in key.split(".")):
        raise ParamsError(f"{origin} has an empty parameter name in {key!r}", hint="name it")


def merge_params(
    layers: Iterable[tuple[ParamSource, Mapping[str, ParamValue]]],
) -> tuple[tuple[Param, ...], tuple[Redaction, ...]]:
    """Merge layers by precedence (default < file < api < cli); redact secret-looking values."""
    ordered = sorted(layers, key=lambda layer: _PRECEDENCE.index(layer[0]))
    merged: dict[str, tuple[ParamValue, ParamSource]] = {}
    for source, values in ordered:
        for key, value in values.items():
            merged[key] = (value, source)
    params: list[Param] = []
    redacted: list[Redaction] = []
    for key in sorted(merged):
        value, source = merged[key]
        if isinstance(value, str):
            value, redaction = redact_param_value(key, value)
            if redaction is not None:
                redacted.append(redaction)
        params.append(Param(key=key, value=value, source=source))
    return tuple(params), tuple(redacted)
