"""Experiment parameters: ``--param K=V``, params files (YAML, JSON, TOML) and API values, merged
into dotted keys with their provenance."""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from envsnap.capturing.redact import redact_param_value
from envsnap.errors import ParamsError
from envsnap.manifest import Param, ParamScalar, ParamSource, ParamValue, Redaction

# Later sources override earlier ones; within one source a key may be set once.
_PRECEDENCE: tuple[ParamSource, ...] = ("default", "file", "api", "cli")

# TOML integers are signed 64-bit; other TOML readers cannot read a manifest holding a larger one.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
# A params file is read whole; this keeps `--params-file /dev/zero` from filling memory.
MAX_PARAMS_FILE_BYTES = 64 * 1024 * 1024
# Nesting deeper than this is no experiment's configuration, and would exhaust Python's stack.
MAX_PARAMS_DEPTH = 64
# YAML anchors and aliases let a few hundred bytes stand for gigabytes ("billion laughs"). Values
# may expand to at most this many characters, or to four times the file's size if that is more.
MAX_EXPANDED_CHARS = 4_000_000
_EXPANSION_FACTOR = 4


def parse_cli_value(text: str) -> ParamScalar:
    """Type a command-line value: integer, float, true/false, else the string itself. An integer
    outside TOML's signed 64-bit range stays the string it was typed as."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        return number if _INT_MIN <= number <= _INT_MAX else text
    try:
        real = float(text)
    except ValueError:
        return text
    # "nan" or "inf" typed as a value is more likely a word than a number.
    return real if math.isfinite(real) else text


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
    text = _read_params_text(path)
    data = _parse_params_text(text, path)
    if not isinstance(data, Mapping):
        raise ParamsError(
            f"params file {path} does not hold a mapping of names to values at its top level",
            hint="write it as key: value pairs",
        )
    _check_expansion(data, path, limit=max(MAX_EXPANDED_CHARS, _EXPANSION_FACTOR * len(text)))
    return flatten_params(data, origin=f"params file {path}")


def _read_params_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PARAMS_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ParamsError(
            f"params file {path} does not exist", hint="check the --params-file path"
        ) from None
    except OSError as exc:
        raise ParamsError(
            f"params file {path} cannot be read ({exc.strerror or exc})",
            hint="check the --params-file path and its permissions",
        ) from None
    if len(raw) > MAX_PARAMS_FILE_BYTES:
        raise ParamsError(
            f"params file {path} is larger than {MAX_PARAMS_FILE_BYTES // (1024 * 1024)} MiB",
            hint="pass the parameters the run depends on, not a data file",
        )
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ParamsError(f"params file {path} is UTF-16 text, not UTF-8", hint="save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")  # a byte order mark, as some editors write, is dropped
    except UnicodeDecodeError as exc:
        raise ParamsError(
            f"params file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} is not UTF-8)",
            hint="save it as UTF-8",
        ) from None


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

            # libyaml's loader, where PyYAML was built with it, reads a large file ~10x faster.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            return yaml.load(text, Loader=loader) or {}  # noqa: S506 (a safe loader)
    except Exception as exc:  # each parser raises its own error type; all mean "malformed"
        raise ParamsError(
            f"params file {path} is not valid {suffix[1:].upper()} ({_parse_problem(exc)})",
            hint="fix the file",
        ) from None
    raise ParamsError(
        f"params file {path} has an unknown extension {suffix!r}",
        hint="use .yaml, .yml, .json or .toml",
    )


def _parse_problem(exc: Exception) -> str:
    """What a parser found wrong, in one line, without quoting the file's content."""
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    problem = getattr(exc, "problem", None)  # PyYAML's marked errors: problem and position
    mark = getattr(exc, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_expansion(data: Any, path: Path, *, limit: int) -> None:
    """Refuse data whose YAML aliases expand it far past the file's size, that refers to itself,
    or that nests too deeply; in time linear in the file, whatever the expansion."""
    sizes: dict[int, int] = {}  # id of a container -> its expanded size in characters
    open_now: set[int] = set()

    def size(value: Any, depth: int) -> int:
        if isinstance(value, str):
            return len(value) + 1
        if not isinstance(value, Mapping | list | tuple):
            return 1
        key = id(value)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_now:
            raise ParamsError(
                f"params file {path} has a value that contains itself (a recursive YAML alias)",
                hint="write the value out instead of referring to it",
            )
        if depth > MAX_PARAMS_DEPTH:
            raise ParamsError(
                f"params file {path} nests values more than {MAX_PARAMS_DEPTH} levels deep",
                hint="flatten the file",
            )
        open_now.add(key)
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        total = 1 + sum(size(k, depth) + size(v, depth + 1) for k, v in items)
        open_now.discard(key)
        sizes[key] = total
        return total

    if size(data, 0) > limit:
        raise ParamsError(
            f"params file {path} expands through YAML anchors and aliases to more than "
            f"{limit:,} characters of values",
            hint="write the values out, or refer to large values fewer times",
        )


def flatten_params(
    data: Mapping[Any, Any], *, origin: str, prefix: str = ""
) -> dict[str, ParamValue]:
    """Nested mappings become dotted keys; lists of scalars stay lists; anything else is JSON."""
    flat: dict[str, ParamValue] = {}
    _flatten(data, origin, prefix, flat, 0)
    return flat


def _flatten(
    data: Mapping[Any, Any], origin: str, prefix: str, flat: dict[str, ParamValue], depth: int
) -> None:
    if depth > MAX_PARAMS_DEPTH:
        raise ParamsError(
            f"{origin} nests parameters more than {MAX_PARAMS_DEPTH} levels deep (at {prefix!r})",
            hint="flatten them",
        )
    for raw_key, value in data.items():
        key = f"{prefix}{raw_key}"
        _check_key(key, origin)
        if isinstance(value, Mapping):
            _flatten(value, origin, f"{key}.", flat, depth + 1)
        else:
            flat[key] = _to_param_value(key, value, origin)


def _to_param_value(key: str, value: Any, origin: str) -> ParamValue:
    if isinstance(value, bool | int | float | str):
        _check_int(key, value, origin)
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(v, bool | int | float | str) for v in value
    ):
        for item in value:
            _check_int(key, item, origin)
        return tuple(value)
    # Dates, nulls and nested lists have no exact TOML twin in a flat param; JSON keeps them exact.
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):
        raise ParamsError(
            f"{origin} has a value for {key!r} that cannot be recorded (it contains itself, "
            "nests too deeply or mixes key types)",
            hint="give it as plain numbers, strings and lists",
        ) from None


def _check_int(key: str, value: object, origin: str) -> None:
    # Refused rather than recorded as a string: a silent change of type would rerun the
    # experiment with a value it was not given. Quoting it in the file keeps it, as a string.
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        raise ParamsError(
            f"{origin} sets {key!r} to an integer outside the signed 64-bit range TOML allows",
            hint="quote it to record it as a string",
        )


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
