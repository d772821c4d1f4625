"""Reading the TOML that envsnap itself writes, fast: the exact layout tomli_w emits (one
``key = value`` per line, ``[table]`` and ``[[array.of.tables]]`` headers, arrays one item a
line, short tables inline in arrays), parsed line by line.

tomllib reads any TOML but spends about 3 us per key; a 1,000-package manifest took 23 ms to
parse, most of ``envsnap diff``. This reader takes only what it is sure of: anything outside
that layout (a hand-edited file, another writer's spacing, an escape it does not know, a
duplicate key) returns None, and the caller parses the text with tomllib, which then accepts it
or names the error exactly as before. Whatever this reader returns, tomllib returns too
(``tests/unit/test_canonicaltoml.py`` compares the two).
"""

from __future__ import annotations

import re
from typing import Any

_INDENT = "    "
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED_KEY = re.compile(r'"[^"\\]*"')
_HEADER = re.compile(r"\[([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\]")
_ARRAY_HEADER = re.compile(r"\[\[([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\]\]")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)|[+-]?(?:inf|nan)"
)
# Control characters TOML forbids raw (tab is allowed; tomli_w never writes a raw CR).
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A basic string as tomli_w writes it, its escapes limited to those whose meaning is certain.
_STRING = re.compile(r'"((?:[^"\\]|\\[bnfr"\\]|\\u[0-9A-Fa-f]{4})*)"')
_ESCAPE = re.compile(r'\\([bnfr"\\]|u[0-9A-Fa-f]{4})')
_SIMPLE_ESCAPES = {"b": "\b", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
# One ``key = value`` of an inline table: a key, then a string or a bare scalar token.
_INLINE_PAIR = re.compile(
    r'([A-Za-z0-9_-]+|"[^"\\]*") = ("(?:[^"\\]|\\[bnfr"\\]|\\u[0-9A-Fa-f]{4})*"|[^ ,{}\[\]"]+|\[\])'
)


class _OutsideError(Exception):
    """The text leaves the layout this reader knows; tomllib decides."""


def loads(text: str) -> dict[str, Any] | None:
    """The document as tomllib would return it, or None when it is not laid out as tomli_w
    writes it (then parse it with tomllib)."""
    if _RAW_CONTROL.search(text):
        return None
    try:
        return _Reader(text.split("\n")).document()
    except _OutsideError:
        return None


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.index = 0
        self.root: dict[str, Any] = {}
        # Arrays made by [[headers]] (which later headers may extend), as opposed to arrays
        # written inline (which no header may touch).
        self.table_arrays: set[int] = set()

    def document(self) -> dict[str, Any]:
        lines = self.lines
        if lines[-1] != "":
            raise _OutsideError  # tomli_w ends every line, the last included, with a newline
        current = self.root
        keys: dict[str, str] = {}  # bare keys seen, checked once each
        while self.index < len(lines) - 1:
            line = lines[self.index]
            self.index += 1
            if not line:
                continue
            if line[0] == "[":
                current = self._header(line)
                continue
            raw_key, sep, raw_value = line.partition(" = ")
            if not sep:
                raise _OutsideError
            key = keys.get(raw_key)
            if key is None:
                key = _key(raw_key)
                if raw_key[0] != '"':
                    keys[raw_key] = key
            if key in current:
                raise _OutsideError  # TOML refuses a key defined twice; tomllib says so
            # tomli_w writes a mapping as a [table]; a table inline here is someone else's.
            current[key] = self._array() if raw_value == "[" else _scalar(raw_value)
        return self.root

    def _header(self, line: str) -> dict[str, Any]:
        match = _ARRAY_HEADER.fullmatch(line)
        if match is not None:
            *parents, last = match.group(1).split(".")
            table = self._walk(parents)
            existing = table.get(last)
            if existing is None:
                existing = table[last] = []
                self.table_arrays.add(id(existing))
            elif id(existing) not in self.table_arrays:
                raise _OutsideError
            new: dict[str, Any] = {}
            existing.append(new)
            return new
        match = _HEADER.fullmatch(line)
        if match is None:
            raise _OutsideError
        *parents, last = match.group(1).split(".")
        table = self._walk(parents)
        if last in table:
            raise _OutsideError  # a table defined twice, or over a value: tomllib's to judge
        new = table[last] = {}
        return new

    def _walk(self, parts: list[str]) -> dict[str, Any]:
        """The table a header's leading parts name, creating the missing ones implicitly."""
        table = self.root
        for part in parts:
            node = table.get(part)
            if node is None:
                node = table[part] = {}
            elif isinstance(node, list) and id(node) in self.table_arrays:
                node = node[-1]
            elif not isinstance(node, dict):
                raise _OutsideError
            table = node
        return table

    def _array(self) -> list[Any]:
        """A multi-line array: one item a line, indented, each with a comma, then ``]``. Its
        items are scalars or short tables; manifests hold no arrays of arrays."""
        items: list[Any] = []
        lines = self.lines
        while True:
            if self.index >= len(lines) - 1:
                raise _OutsideError
            line = lines[self.index]
            self.index += 1
            if line == "]":
                if not items:
                    raise _OutsideError  # tomli_w writes an empty array as []
                return items
            if not (line.startswith(_INDENT) and line.endswith(",")):
                raise _OutsideError
            raw = line[len(_INDENT) : -1]
            if raw[:1] == "{":
                items.append(_inline_table(raw))
            elif raw[:1] in ("[", " "):
                raise _OutsideError
            else:
                items.append(_scalar(raw))


def _key(raw: str) -> str:
    if _BARE_KEY.fullmatch(raw):
        return raw
    if _QUOTED_KEY.fullmatch(raw):
        return raw[1:-1]
    raise _OutsideError


def _scalar(raw: str) -> Any:
    first = raw[:1]
    if first == '"':
        inner = raw[1:-1]
        if raw[-1:] == '"' and len(raw) > 1 and '"' not in inner and "\\" not in inner:
            return inner
        return _string(raw)
    if raw == "true":
        return True
    if raw == "false":
        return False
    if raw == "[]":
        return []
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    raise _OutsideError


def _string(raw: str) -> str:
    match = _STRING.fullmatch(raw)
    if match is None:
        raise _OutsideError
    return _ESCAPE.sub(_unescape, match.group(1))


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 1:
        return _SIMPLE_ESCAPES[code]
    value = int(code[1:], 16)
    if 0xD800 <= value <= 0xDFFF:
        raise _OutsideError  # not a Unicode scalar value: tomllib refuses it
    return chr(value)


def _inline_table(raw: str) -> dict[str, Any]:
    """``{ key = value, key = value }`` as tomli_w writes a short table in an array."""
    if raw == "{}":
        return {}
    if not (raw.startswith("{ ") and raw.endswith(" }")):
        raise _OutsideError
    table: dict[str, Any] = {}
    position, end = 2, len(raw) - 2
    while True:
        match = _INLINE_PAIR.match(raw, position)
        if match is None:
            raise _OutsideError
        key = _key(match.group(1))
        if key in table:
            raise _OutsideError
        table[key] = _scalar(match.group(2))
        position = match.end()
        if position == end:
            return table
        if raw.startswith(", ", position):
            position += 2
        else:
            raise _OutsideError
