"""pip's configuration as pip itself would see it: its files in pip's order, and the one merged
file a build hands to the pip inside the image.

pip reads, lowest precedence first: the global files (``$XDG_CONFIG_DIRS/pip/pip.conf``, default
``/etc/xdg/pip/pip.conf``, then ``/etc/pip.conf``), the user files (``~/.pip/pip.conf``, then
``$XDG_CONFIG_HOME/pip/pip.conf``; skipped when ``PIP_CONFIG_FILE`` names an existing file), the
environment's own ``<prefix>/pip.conf``, the file ``PIP_CONFIG_FILE`` names, and last the
``PIP_*`` variables, which beat every section. ``PIP_CONFIG_FILE=/dev/null`` means no file at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# Options that name paths of this host (or its logs and caches): meaningless inside an image.
# The CA bundle reaches the build as a secret of its own.
_HOST_ONLY = frozenset(
    {
        "cert",
        "client-cert",
        "log",
        "log-file",
        "local-log",
        "cache-dir",
        "target",
        "prefix",
        "root",
        "src",
        "user",
        "config-file",
        "requirement",
        "constraint",
        "build-constraint",
        "editable",
        "report",
    }
)

_LOCATIONS = frozenset({"index-url", "extra-index-url", "find-links"})


def pip_config_files(env: Mapping[str, str], prefix: Path | None) -> list[Path]:
    """pip's configuration files, lowest precedence first; empty for ``/dev/null``."""
    explicit = env.get("PIP_CONFIG_FILE", "")
    if explicit == os.devnull:
        return []
    xdg_dirs = [d for d in env.get("XDG_CONFIG_DIRS", "").split(os.pathsep) if d] or ["/etc/xdg"]
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs]
    files.append(Path("/etc/pip.conf"))
    home = env.get("HOME", "")
    if not (explicit and Path(explicit).exists()):
        if home:
            files.append(Path(home) / ".pip" / "pip.conf")
        config_home = env.get("XDG_CONFIG_HOME", "") or (f"{home}/.config" if home else "")
        if config_home:
            files.append(Path(config_home) / "pip" / "pip.conf")
    if prefix is not None:
        files.append(prefix / "pip.conf")
    if explicit:
        files.append(Path(explicit))
    return files


def merged_pip_config(env: Mapping[str, str], files: Sequence[Path]) -> str:
    """One pip.conf that gives the pip inside an image what the host's pip would see.

    Later files win key by key within a section; ``PIP_*`` variables are written into
    ``[global]`` and over the same key of every other section, since pip puts them above all
    sections. Options that name host paths are left out. Empty text when nothing is configured.
    """
    import configparser  # here, not at the top: capture imports this module, builds use this

    merged: dict[str, dict[str, str]] = {}
    for path in files:
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            text = path.read_text(encoding="utf-8")
            parser.read_string(text, source=str(path))
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue  # pip itself would fail on a broken file; the build then meets it there
        for section in parser.sections():
            values = merged.setdefault(section, {})
            for key, value in parser.items(section):
                values[_normalise(key)] = value
    for name, value in sorted(env.items()):
        if not name.startswith("PIP_") or name == "PIP_CONFIG_FILE":
            continue
        key = _normalise(name.removeprefix("PIP_"))
        merged.setdefault("global", {})[key] = value
        for section, values in merged.items():
            if section != "global" and key in values:
                values[key] = value
    lines: list[str] = []
    for section in sorted(merged, key=lambda s: (s != "global", s)):
        kept = {
            key: value
            for key, value in ((k, _portable(k, v)) for k, v in merged[section].items())
            if key not in _HOST_ONLY and value
        }
        if not kept:
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in sorted(kept.items()))
        lines.append("")
    return "\n".join(lines)


def _portable(key: str, value: str) -> str:
    """Index and link locations that mean the same inside an image: http(s) URLs only (a
    ``file://`` index or a local folder of wheels is a path of this host)."""
    if key not in _LOCATIONS:
        return value
    return " ".join(u for u in value.split() if u.lower().startswith(("http://", "https://")))


def _normalise(key: str) -> str:
    return key.strip().lower().replace("_", "-")


def _value(value: str) -> str:
    """A value on one logical line; continuation lines (extra-index-url lists) stay indented."""
    parts = [p.strip() for p in value.splitlines() if p.strip()]
    return "\n    ".join(parts)
