"""Every distribution installed in an interpreter's site directories, read straight from its
metadata (dist-info, egg-info, egg-link; no pip, no importlib.metadata), and where each came from
(PEP 610 ``direct_url.json``): enough to install it again."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from envsnap.capturing.redact import clean_url
from envsnap.distnames import normalize_name
from envsnap.manifest import Model, Package, PackageSource, model

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._]*$")
_VERSION = re.compile(r"^[0-9!][A-Za-z0-9.!+_]*$")

# Within one site directory a project may leave several kinds of metadata; the modern one wins.
_KIND_RANK = {"dist-info": 0, "egg-info": 1, "egg-link": 2}
_Kind = Literal["dist-info", "egg-info", "egg-link"]


@model
class FoundDistribution(Model):
    """Where one distribution's metadata lies (dist-info, egg-info or the project an egg-link
    names), before its files are read."""

    name: str
    version: str
    kind: _Kind
    path: Path


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


def read_small(path: str | Path) -> str | None:
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


def describe_distribution(
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
        installer = (read_small(os.path.join(base, "INSTALLER")) or "").strip()
        wheel_tag = _wheel_tag(read_small(os.path.join(base, "WHEEL")))
        direct_url = read_small(os.path.join(base, "direct_url.json"))
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


def conda_names(prefix: Path) -> frozenset[str]:
    """Names of the conda packages in ``prefix`` as conda-meta file names give them."""
    try:
        records = os.listdir(prefix / "conda-meta")
    except OSError:
        return frozenset()
    return frozenset(
        normalize_name(r[: -len(".json")].rsplit("-", 2)[0]) for r in records if r.endswith(".json")
    )
