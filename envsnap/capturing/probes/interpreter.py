"""Which interpreter an experiment runs in: an activated venv or conda env, else the running
Python, described from ``sys`` or from its files (no subprocess), with its site directories."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from envsnap.manifest import Model, model

# Only an environment described from its files needs these: compiled by ``re`` on first use.
_PATCHLEVEL = r'(?m)^#define\s+PY_VERSION\s+"([^"]+)"'
_VERSION_PREFIX = r"^\d+(?:\.\d+){0,2}"


@model
class PythonTarget(Model):
    """The interpreter to describe: what it is, where it lives and where its packages are."""

    implementation: str
    version: str
    executable: str
    prefix: Path
    base_prefix: Path
    site_dirs: tuple[Path, ...]  # in import order: the first holding a distribution wins


# --- which interpreter ----------------------------------------------------------------------------


def current_target(env: Mapping[str, str]) -> PythonTarget:
    """The environment the experiment runs in: an activated venv or conda env, else this Python.

    envsnap may be installed apart from the experiment (pipx, another venv); an activated
    environment whose prefix differs from ``sys.prefix`` is then the one to describe.
    """
    running = Path(sys.prefix)
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        value = env.get(variable, "")
        if not value:
            continue
        prefix = Path(value)
        if _same_path(prefix, running):
            break
        if prefix.is_dir():
            return target_for_prefix(prefix)
    return running_target()


def running_target() -> PythonTarget:
    """The interpreter running this code, described from ``sys`` and ``site``."""
    import platform
    import site

    candidates = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    # Order as the import system does: by position on sys.path, then the rest.
    position = {entry: index for index, entry in reversed(list(enumerate(sys.path)))}
    ordered = sorted(
        enumerate(candidates), key=lambda item: (position.get(item[1], len(sys.path)), item[0])
    )
    return PythonTarget(
        implementation=platform.python_implementation(),
        version=platform.python_version(),
        executable=sys.executable or "",
        prefix=Path(sys.prefix),
        base_prefix=Path(sys.base_prefix),
        site_dirs=unique_dirs(Path(entry) for _, entry in ordered),
    )


def target_for_prefix(prefix: Path) -> PythonTarget:
    """An environment described from its files alone: pyvenv.cfg, lib/, conda-meta."""
    cfg = _read_pyvenv_cfg(prefix / "pyvenv.cfg")
    lib_dirs = _python_lib_dirs(prefix)
    version = _version_from_cfg(cfg) or _version_from_files(prefix, lib_dirs)
    base_prefix = prefix
    home = cfg.get("home", "")
    if home:
        home_path = Path(home)
        base_prefix = home_path.parent if home_path.name in ("bin", "Scripts") else home_path
    implementation = cfg.get("implementation", "")
    if not implementation:
        implementation = "PyPy" if any(d.name.startswith("pypy") for d in lib_dirs) else "CPython"
    site_dirs = [_site_dir(d) for d in _matching_lib_dirs(lib_dirs, version)]
    site_dirs.append(prefix / "Lib" / "site-packages")  # Windows layout
    if cfg.get("include-system-site-packages", "").lower() == "true" and base_prefix != prefix:
        base_libs = _python_lib_dirs(base_prefix)
        site_dirs.extend(_site_dir(d) for d in _matching_lib_dirs(base_libs, version))
    return PythonTarget(
        implementation=implementation,
        version=version,
        executable=_executable(prefix),
        prefix=prefix,
        base_prefix=base_prefix,
        site_dirs=unique_dirs(d for d in site_dirs if d.is_dir()),
    )


def env_kind(prefix: Path) -> str:
    """``conda`` for a conda environment, ``venv`` for a virtual environment, else ``system``."""
    if (prefix / "conda-meta").is_dir():
        return "conda"
    if (prefix / "pyvenv.cfg").is_file():
        return "venv"
    return "system"


def _same_path(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def unique_dirs(dirs: Iterable[Path]) -> tuple[Path, ...]:
    seen: set[str] = set()
    out: list[Path] = []
    for d in dirs:
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return tuple(out)


def _read_pyvenv_cfg(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip().lower()] = value.strip()
    return out


def _version_from_cfg(cfg: Mapping[str, str]) -> str:
    # venv writes "version = 3.11.7"; uv and virtualenv write "version_info = 3.11.7[.final.0]".
    for key in ("version", "version_info"):
        match = re.match(_VERSION_PREFIX, cfg.get(key, ""))
        if match:
            return match.group(0)
    return ""


def _python_lib_dirs(prefix: Path) -> list[Path]:
    out: list[Path] = []
    for lib in ("lib", "lib64"):
        try:
            names = sorted(os.listdir(prefix / lib))
        except OSError:
            continue
        out.extend(
            prefix / lib / n for n in names if n.startswith(("python3.", "pypy3.")) and "." in n
        )
    return out


def _matching_lib_dirs(lib_dirs: Sequence[Path], version: str) -> list[Path]:
    """The lib/pythonX.Y dirs of ``version``; all of them when the version is unknown."""
    minor = ".".join(version.split(".")[:2])
    matching = [d for d in lib_dirs if minor and d.name.endswith(minor)]
    return matching or list(lib_dirs)


def _site_dir(lib_dir: Path) -> Path:
    return lib_dir / "site-packages"


def _version_from_files(prefix: Path, lib_dirs: Sequence[Path]) -> str:
    # A conda environment records python's exact version in its conda-meta file name.
    try:
        records = os.listdir(prefix / "conda-meta")
    except OSError:
        records = []
    for record in records:
        if record.startswith("python-") and record.endswith(".json"):
            version = record[len("python-") :].split("-", 1)[0]
            if version[:1].isdigit():
                return version
    for lib_dir in lib_dirs:
        header = prefix / "include" / lib_dir.name / "patchlevel.h"
        try:
            match = re.search(_PATCHLEVEL, header.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if match:
            return match.group(1)
    for lib_dir in lib_dirs:
        return lib_dir.name.removeprefix("python").removeprefix("pypy")
    return ""


def _executable(prefix: Path) -> str:
    for candidate in (
        prefix / "bin" / "python",
        prefix / "bin" / "python3",
        prefix / "Scripts" / "python.exe",
        prefix / "python.exe",
    ):
        if candidate.exists():
            return str(candidate)
    return ""
