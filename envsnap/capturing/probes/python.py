"""The interpreter an experiment runs in and every distribution installed in it, read straight from
the site directories (no pip, no importlib.metadata, no subprocess) so capture stays fast."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from envsnap.capturing.redact import clean_url
from envsnap.distnames import normalize_name
from envsnap.manifest import Model, Package, PackageSource, Python, Tool, model

DEFAULT_INDEX_URLS = frozenset(
    {
        "https://pypi.org/simple",
        "https://pypi.python.org/simple",
    }
)

# Distributions published on the PyTorch index with a local label (+cu121, +cpu, +rocm6.0).
PYTORCH_FAMILY = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "torchtext",
        "torchdata",
        "torchrec",
        "torchao",
        "triton",
        "pytorch-triton",
        "pytorch-triton-rocm",
        "pytorch-triton-xpu",
        "fbgemm-gpu",
        "xformers",
    }
)
PYTORCH_INDEX = "https://download.pytorch.org/whl"

TOOL_NAME = "envsnap"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")
_VERSION = re.compile(r"^[0-9!][A-Za-z0-9.!+_]*$")
# Only an environment described from its files needs these: compiled by ``re`` on first use.
_PATCHLEVEL = r'(?m)^#define\s+PY_VERSION\s+"([^"]+)"'
_VERSION_PREFIX = r"^\d+(?:\.\d+){0,2}"

# Within one site directory a project may leave several kinds of metadata; the modern one wins.
_KIND_RANK = {"dist-info": 0, "egg-info": 1, "egg-link": 2}
_Kind = Literal["dist-info", "egg-info", "egg-link"]


@model
class PythonTarget(Model):
    """The interpreter to describe: what it is, where it lives and where its packages are."""

    implementation: str
    version: str
    executable: str
    prefix: Path
    base_prefix: Path
    site_dirs: tuple[Path, ...]  # in import order: the first holding a distribution wins


@model
class FoundDistribution(Model):
    """Where one distribution's metadata lies (dist-info, egg-info or the project an egg-link
    names), before its files are read."""

    name: str
    version: str
    kind: _Kind
    path: Path


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
        site_dirs=_unique_dirs(Path(entry) for _, entry in ordered),
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
        site_dirs=_unique_dirs(d for d in site_dirs if d.is_dir()),
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


def _unique_dirs(dirs: Iterable[Path]) -> tuple[Path, ...]:
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


# --- finding distributions --------------------------------------------------------------------


def find_distributions(site_dirs: Sequence[Path]) -> dict[str, FoundDistribution]:
    """Every distribution in ``site_dirs`` by normalised name; the first directory wins."""
    found: dict[str, FoundDistribution] = {}
    for site_dir in site_dirs:
        for name, dist in _scan_site_dir(site_dir).items():
            found.setdefault(name, dist)
    return found


def _scan_site_dir(site_dir: Path) -> dict[str, FoundDistribution]:
    out: dict[str, FoundDistribution] = {}
    try:
        entries = sorted(os.scandir(site_dir), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        dist = _classify(site_dir, entry)
        if dist is None:
            continue
        key = normalize_name(dist.name)
        current = out.get(key)
        if current is None or _KIND_RANK[dist.kind] < _KIND_RANK[current.kind]:
            out[key] = dist
    return out


def _classify(site_dir: Path, entry: os.DirEntry[str]) -> FoundDistribution | None:
    filename = entry.name
    if not filename.endswith(("-info", ".egg-link")):
        return None  # most entries are import packages; skip them before any Path is built
    path = site_dir / filename
    if filename.endswith(".dist-info"):
        if not entry.is_dir():
            return None
        name, version = _split_stem(filename[: -len(".dist-info")])
        if not (name and version):
            name, version = _read_name_version(path / "METADATA", name)
        return (
            FoundDistribution(name=name, version=version, kind="dist-info", path=path)
            if name
            else None
        )
    if filename.endswith(".egg-info"):
        name, version = _split_stem(filename[: -len(".egg-info")])
        if not (name and version):
            metadata = path / "PKG-INFO" if entry.is_dir() else path
            name, version = _read_name_version(metadata, name)
        return (
            FoundDistribution(name=name, version=version, kind="egg-info", path=path)
            if name
            else None
        )
    if filename.endswith(".egg-link") and entry.is_file():
        return _from_egg_link(path)
    return None


def _split_stem(stem: str) -> tuple[str, str]:
    """``name-version[-pyX.Y]`` as written in dist-info and egg-info names; "" parts when not."""
    parts = stem.split("-")
    if len(parts) == 1:
        return (parts[0], "") if _NAME.match(parts[0]) else ("", "")
    if len(parts) > 3 or (len(parts) == 3 and not parts[2].startswith("py")):
        return "", ""
    name, version = parts[0], parts[1]
    if not (_NAME.match(name) and _VERSION.match(version)):
        return "", ""
    return name, version


def _read_name_version(metadata: Path, fallback_name: str) -> tuple[str, str]:
    """Only the ``Name:`` and ``Version:`` headers of a METADATA or PKG-INFO file."""
    name, version = "", ""
    try:
        with open(metadata, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, colon, value = line.partition(":")
                if not colon:
                    continue
                key = key.strip().lower()
                if key == "name":
                    name = value.strip()
                elif key == "version":
                    version = value.strip()
                if name and version:
                    break
    except OSError:
        pass
    return name or fallback_name, version


def _from_egg_link(link: Path) -> FoundDistribution | None:
    """A legacy ``setup.py develop`` install: the link names the project directory."""
    try:
        first_line = link.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    project = (link.parent / first_line) if first_line else link.parent
    stem = link.name[: -len(".egg-link")]
    name, version = stem, ""
    try:
        egg_infos = sorted(n for n in os.listdir(project) if n.endswith(".egg-info"))
    except OSError:
        egg_infos = []
    wanted = normalize_name(stem)
    for egg_info in egg_infos:
        candidate = project / egg_info
        metadata = candidate / "PKG-INFO" if candidate.is_dir() else candidate
        meta_name, meta_version = _read_name_version(metadata, egg_info[: -len(".egg-info")])
        if normalize_name(meta_name) == wanted or len(egg_infos) == 1:
            name, version = meta_name, meta_version
            break
    return FoundDistribution(name=name, version=version, kind="egg-link", path=project)


# --- describing one distribution ----------------------------------------------------------------


def _read_small(path: str | Path) -> str | None:
    """A small metadata file's text, None when absent. Raw os.read: for the few hundred bytes of
    INSTALLER or WHEEL, Python's buffered file objects cost several times the read itself, and
    this runs twice per installed distribution on capture's path."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _wheel_tag(wheel_text: str | None) -> str:
    """The WHEEL file's tags, compressed as in a wheel file name (``py2.py3-none-any``)."""
    if not wheel_text:
        return ""
    tags = sorted(
        {
            value.strip()
            for key, _, value in (line.partition(":") for line in wheel_text.splitlines())
            if key.strip().lower() == "tag" and value.strip()
        }
    )
    if len(tags) <= 1:
        return tags[0] if tags else ""
    triples = [t.split("-") for t in tags]
    if all(len(t) == 3 for t in triples):
        pythons, abis, platforms = (sorted({t[i] for t in triples}) for i in range(3))
        product = {f"{p}-{a}-{q}" for p in pythons for a in abis for q in platforms}
        if product == set(tags):
            return "-".join(".".join(part) for part in (pythons, abis, platforms))
    return ".".join(tags)


def _file_url_path(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path)


def _relative_to(path: str, root: Path | None) -> str | None:
    """``path`` relative to ``root`` (posix form) when inside it, else None."""
    if root is None or not path:
        return None
    try:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(root)).as_posix() or "."
    except ValueError:
        return None


def _describe_direct_url(data: Any, repo_root: Path | None) -> dict[str, Any]:
    """The Package fields a PEP 610 direct_url.json decides: source, URL or path, revision."""
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return {
            "source": "unknown",
            "reinstallable": False,
            "reason": "direct_url.json is malformed; where it came from is unknown",
        }
    url: str = data["url"]
    is_file = url.startswith("file:")
    subdirectory = data.get("subdirectory") if isinstance(data.get("subdirectory"), str) else ""
    vcs_info = data.get("vcs_info")
    if isinstance(vcs_info, dict):
        fields: dict[str, Any] = {
            "source": "vcs",
            "vcs": str(vcs_info.get("vcs", "")),
            "url": clean_url(url),
            "commit": str(vcs_info.get("commit_id", "")),
            "requested_revision": str(vcs_info.get("requested_revision", "") or ""),
            "subdirectory": subdirectory,
        }
        if is_file:
            fields["reinstallable"] = False
            fields["reason"] = "installed from a VCS repository on the local file system"
        return fields
    archive_info = data.get("archive_info")
    if isinstance(archive_info, dict):
        if is_file:
            return {
                "source": "local",
                "path": _file_url_path(url),
                "subdirectory": subdirectory,
                "reinstallable": False,
                "reason": "installed from a local archive that is not recorded",
            }
        return {
            "source": "url",
            "url": clean_url(url),
            "archive_hash": _archive_hash(archive_info),
            "subdirectory": subdirectory,
        }
    dir_info = data.get("dir_info")
    path = _file_url_path(url) if is_file else clean_url(url)
    relative = _relative_to(path, repo_root) if is_file else None
    if isinstance(dir_info, dict) and dir_info.get("editable") is True:
        if relative is not None:
            return {
                "source": "editable",
                "path": relative,
                "reinstallable": True,
                "reason": "editable install of the project's own source, rebuilt from the commit",
            }
        return {
            "source": "editable",
            "path": path,
            "reinstallable": False,
            "reason": "editable install from a directory outside the project; "
            "its source is not recorded",
        }
    return {
        "source": "local",
        "path": relative if relative is not None else path,
        "subdirectory": subdirectory,
        "reinstallable": False,
        "reason": "installed from a local directory whose source is not recorded",
    }


def _archive_hash(archive_info: Mapping[str, Any]) -> str:
    hashes = archive_info.get("hashes")
    if isinstance(hashes, dict) and hashes:
        algorithm = "sha256" if "sha256" in hashes else sorted(hashes)[0]
        return f"{algorithm}={hashes[algorithm]}"
    legacy = archive_info.get("hash")
    return legacy if isinstance(legacy, str) else ""


def _describe(
    dist: FoundDistribution, repo_root: Path | None, conda_names: frozenset[str]
) -> Package:
    import json

    name = normalize_name(dist.name)
    if dist.kind == "egg-link":
        relative = _relative_to(str(dist.path), repo_root)
        if relative is not None:
            return Package(
                name=name,
                version=dist.version,
                source="editable",
                path=relative,
                reason="editable install of the project's own source, rebuilt from the commit",
            )
        return Package(
            name=name,
            version=dist.version,
            source="editable",
            path=str(dist.path),
            reinstallable=False,
            reason="editable install from a directory outside the project; "
            "its source is not recorded",
        )
    installer = ""
    wheel_tag = ""
    fields: dict[str, Any] = {}
    if dist.kind == "dist-info":
        base = str(dist.path)
        # A failed open is cheaper than listing the directory first.
        installer = (_read_small(os.path.join(base, "INSTALLER")) or "").strip()
        wheel_tag = _wheel_tag(_read_small(os.path.join(base, "WHEEL")))
        direct_url = _read_small(os.path.join(base, "direct_url.json"))
        if direct_url is not None:
            try:
                data = json.loads(direct_url)
            except ValueError:
                data = None
            fields = _describe_direct_url(data, repo_root)
    source: PackageSource = fields.pop("source", "index")
    # conda-build leaves direct_url.json pointing at its build directory; conda is the source.
    if installer == "conda" or (not installer and name in conda_names):
        source = "conda"
        fields = {}
    return Package(
        name=name,
        version=dist.version,
        source=source,
        installer=installer,
        wheel_tag=wheel_tag,
        **fields,
    )


def _conda_names(prefix: Path) -> frozenset[str]:
    """Names of the conda packages in ``prefix`` as conda-meta file names give them."""
    try:
        records = os.listdir(prefix / "conda-meta")
    except OSError:
        return frozenset()
    return frozenset(
        normalize_name(r[: -len(".json")].rsplit("-", 2)[0]) for r in records if r.endswith(".json")
    )


# --- index configuration --------------------------------------------------------------------


@model
class IndexConfig(Model):
    """The package indexes pip or uv would install from, credentials already stripped."""

    index_url: str = ""  # "" when it is the default PyPI
    extra_index_urls: tuple[str, ...] = ()


def default_pip_config_files(env: Mapping[str, str], prefix: Path) -> list[Path]:
    """pip's configuration files, lowest precedence first, as pip itself orders them."""
    from envsnap.pipconf import pip_config_files

    return pip_config_files(env, prefix)


def read_index_config(env: Mapping[str, str], config_files: Sequence[Path]) -> IndexConfig:
    """Index URLs from pip config files (later files win) and then PIP_/UV_ variables."""
    index_url = ""
    extras: list[str] = []
    for path in config_files:
        values = _read_pip_config(path)
        if "index-url" in values:
            index_url = values["index-url"]
        if "extra-index-url" in values:
            extras = values["extra-index-url"].split()
    if env.get("PIP_INDEX_URL", "").strip():
        index_url = env["PIP_INDEX_URL"].strip()
    elif env.get("UV_INDEX_URL", "").strip():
        index_url = env["UV_INDEX_URL"].strip()
    if "PIP_EXTRA_INDEX_URL" in env:
        extras = env["PIP_EXTRA_INDEX_URL"].split()
    extras += env.get("UV_EXTRA_INDEX_URL", "").split()
    index_url = clean_url(index_url)
    if index_url.rstrip("/") in DEFAULT_INDEX_URLS:
        index_url = ""
    cleaned: list[str] = []
    for extra in extras:
        url = clean_url(extra)
        if url not in cleaned:
            cleaned.append(url)
    return IndexConfig(index_url=index_url, extra_index_urls=tuple(cleaned))


def _read_pip_config(path: Path) -> dict[str, str]:
    """``index-url``/``extra-index-url`` from one pip config; ``[install]`` beats ``[global]``."""
    text = _read_small(path)
    # Neither key can be in a file without "index" in it (keys are compared lowercased): skip
    # importing configparser for the common pip.conf that sets only a certificate or timeout.
    if text is None or "index" not in text.lower():
        return {}
    import configparser

    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        return {}
    out: dict[str, str] = {}
    for section in ("global", "install"):
        if not parser.has_section(section):
            continue
        for key, value in parser.items(section):
            normalised = key.lower().replace("_", "-")
            if normalised in ("index-url", "extra-index-url"):
                out[normalised] = value.strip()
    return out


def _with_local_label_index(package: Package, config: IndexConfig) -> Package:
    """Name the index that serves a ``+label`` build, or say that none was recorded."""
    import dataclasses

    if package.source != "index" or "+" not in package.version:
        return package
    label = package.version.split("+", 1)[1]
    candidates = [*config.extra_index_urls, *([config.index_url] if config.index_url else [])]
    matching = [url for url in candidates if label in url]
    if matching or config.extra_index_urls:
        chosen = matching[0] if matching else config.extra_index_urls[0]
        return dataclasses.replace(package, index_url=chosen)
    if package.name in PYTORCH_FAMILY:
        return dataclasses.replace(package, index_url=f"{PYTORCH_INDEX}/{label}")
    if config.index_url:
        return dataclasses.replace(package, index_url=config.index_url)
    return dataclasses.replace(
        package,
        reinstallable=False,
        reason=f"version {package.version} has a local label and no index serving it was recorded",
    )


# --- the section ---------------------------------------------------------------------------


def capture_python(
    target: PythonTarget,
    *,
    env: Mapping[str, str],
    pip_config_files: Sequence[Path] | None = None,
    repo_root: Path | None = None,
    installed: Mapping[str, FoundDistribution] | None = None,
) -> Python:
    """The [python] section: interpreter, environment kind, indexes and every distribution.

    ``installed`` is ``find_distributions(target.site_dirs)`` when the caller already has it.
    """
    kind = env_kind(target.prefix)
    conda_names = _conda_names(target.prefix) if kind == "conda" else frozenset()
    files = (
        pip_config_files
        if pip_config_files is not None
        else default_pip_config_files(env, target.prefix)
    )
    config = read_index_config(env, files)
    packages = [
        _with_local_label_index(_describe(dist, repo_root, conda_names), config)
        for key, dist in (
            installed if installed is not None else find_distributions(target.site_dirs)
        ).items()
        if key != TOOL_NAME
    ]
    packages.sort(key=lambda p: (p.name, p.version))
    return Python(
        implementation=target.implementation,
        version=target.version,
        executable=target.executable,
        prefix=str(target.prefix),
        env_kind=kind,
        index_url=config.index_url,
        extra_index_urls=config.extra_index_urls,
        packages=tuple(packages),
    )


def capture_tool(
    target: PythonTarget, *, installed: Mapping[str, FoundDistribution] | None = None
) -> Tool:
    """The envsnap writing the manifest: the running interpreter's install, else the target's.

    ``installed`` is ``find_distributions(target.site_dirs)`` when the caller already has it:
    when envsnap runs from the target itself, as it usually does, nothing is scanned twice.
    """
    site_dirs = _unique_dirs((*running_target().site_dirs, *target.site_dirs))
    if installed is not None and site_dirs == target.site_dirs:
        dist = installed.get(TOOL_NAME)
    else:
        dist = find_distributions(site_dirs).get(TOOL_NAME)
    if dist is None:
        from envsnap.version import __version__

        return Tool(version=__version__, source="local")
    package = _describe(dist, None, frozenset())
    source = package.source if package.source in ("editable", "local") else "index"
    return Tool(version=package.version, source=source)
