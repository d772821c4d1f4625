"""The pure core of locking: a manifest's packages planned and rendered as lock files (pip
requirements with sha256 hashes, VCS pins, a conda explicit lock and a conda-lock file).

The manifest already holds a complete resolution, so nothing is resolved here: each package is
looked up on the index it came from, and the hashes of exactly its version are written down.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from envsnap.capturing.redact import clean_url
from envsnap.distnames import normalize_name, version_key
from envsnap.locking.index import matching_files, shown_url
from envsnap.locking.model import (
    CONDA_EXPLICIT_FILE,
    DEFAULT_INDEX_URL,
    REQUIREMENTS_FILE,
    VCS_FILE,
    HashSource,
    IndexFile,
    IndexQuery,
    IndexUnreachableError,
    LockResult,
    PackageNote,
)
from envsnap.manifest import CondaPackage, Manifest, Package

_DEFAULT_INDEXES = frozenset({"https://pypi.org/simple", "https://pypi.python.org/simple"})


# PEP 508 names; versions limited to PEP 440's alphabet before they are parsed. Neither admits
# whitespace, '#', ';', '@' or a leading '-', so no manifest value can become a pip option.
_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
_VERSION_CHARS = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_PIP_HASH = re.compile(r"^(sha256|sha384|sha512)[=:]([0-9a-fA-F]+)$")
_VCS_COMMIT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
_SUBDIRECTORY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space
_CONDA_TOKEN = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z_.+!-]*$")
_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_VCS_KINDS = frozenset({"git", "hg", "svn", "bzr"})
_VCS_SCHEMES = frozenset({"https", "http", "ssh", "git"})
_CONDA_PLATFORMS = {
    ("linux", "x86_64"): "linux-64",
    ("linux", "aarch64"): "linux-aarch64",
    ("linux", "ppc64le"): "linux-ppc64le",
    ("darwin", "x86_64"): "osx-64",
    ("darwin", "arm64"): "osx-arm64",
    ("windows", "amd64"): "win-64",
}


def matching_hashes(files: Iterable[IndexFile], project: str, version: str) -> list[str]:
    """Sorted, distinct sha256 of the files of exactly ``version`` of ``project``."""
    return sorted(
        {f.sha256 for f in matching_files(files, project, version) if _SHA256.match(f.sha256)}
    )


# --- the pure core -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Pinned:
    name: str
    version: str
    index_url: str
    hashes: tuple[str, ...]
    yanked: bool


@dataclass(kw_only=True)
class _Plan:
    index: list[tuple[Package, str]] = field(default_factory=list)  # package, its index URL
    url_lines: list[tuple[str, str]] = field(default_factory=list)  # name, requirement text
    vcs_lines: list[tuple[str, str]] = field(default_factory=list)
    unlockable: list[PackageNote] = field(default_factory=list)
    covered: list[PackageNote] = field(default_factory=list)
    base_provided: list[str] = field(default_factory=list)


BASE_PROVIDED_REASON = "provided by the base image at this version; not installed again"


def lock_packages(
    manifest: Manifest, source: HashSource, *, provided: Mapping[str, str] | None = None
) -> LockResult:
    """Lock the manifest's exact package set: hashes from ``source`` for index packages, pins for
    VCS and URL packages, conda's own records for conda packages. Asks ``source`` once.

    ``provided`` maps the normalised names of the base image's Python packages to their
    versions; a package the base has at the recorded version is left out of the lock."""
    plan = _plan_python(manifest, provided or {})
    queries = sorted(
        {
            IndexQuery(index_url, normalize_name(package.name), package.version)
            for package, index_url in plan.index
        }
    )
    listings = source.files(queries) if queries else {}
    _check_indexes_serve_something(queries, listings)
    pinned: list[_Pinned] = []
    for package, index_url in plan.index:
        project = normalize_name(package.name)
        files = listings.get(IndexQuery(index_url, project, package.version))
        if files is None:
            plan.unlockable.append(_note(package, f"{index_url} has no project named {project}"))
            continue
        matched = matching_files(files, project, package.version)
        hashes = sorted({f.sha256 for f in matched if _SHA256.match(f.sha256)})
        if not hashes:
            plan.unlockable.append(
                _note(package, f"version {package.version} is not on {index_url}")
            )
            continue
        yanked = all(f.yanked for f in matched)
        pinned.append(
            _Pinned(
                name=project,
                version=package.version,
                index_url=index_url,
                hashes=tuple(hashes),
                yanked=yanked,
            )
        )
    conda_lines, conda_entries, conda_notes = _plan_conda(manifest)
    plan.unlockable.extend(conda_notes)
    header = _header(manifest)
    conda_platform = _conda_platform(manifest)
    return LockResult(
        run_id=manifest.run_id,
        manifest_digest=manifest.digest,
        requirements=_render_requirements(header, manifest, pinned, plan.url_lines),
        vcs_requirements=_render_vcs(header, plan.vcs_lines),
        conda_explicit=_render_conda_explicit(header, conda_platform, conda_lines),
        conda_lock=_render_conda_lock(conda_platform, conda_entries),
        locked_index=len(pinned),
        locked_url=len(plan.url_lines),
        locked_vcs=len(plan.vcs_lines),
        locked_conda=len(conda_lines),
        unlockable=tuple(sorted(plan.unlockable, key=_note_key)),
        covered_elsewhere=tuple(sorted(plan.covered, key=_note_key)),
        base_provided=tuple(sorted(plan.base_provided)),
    )


def _check_indexes_serve_something(
    queries: Sequence[IndexQuery], listings: Mapping[IndexQuery, tuple[IndexFile, ...] | None]
) -> None:
    """Refuse a lock where an index knows none of several projects asked of it: that is a wrong
    index URL, or a proxy answering 404 for everything, not a set of unlockable packages."""
    asked: dict[str, set[str]] = {}
    found: set[str] = set()
    for query in queries:
        asked.setdefault(query.index_url, set()).add(query.project)
        if listings.get(query) is not None:
            found.add(query.index_url)
    for index_url, projects in sorted(asked.items()):
        if len(projects) >= 2 and index_url not in found:
            names = sorted(projects)
            listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise IndexUnreachableError(
                f"{shown_url(index_url)} has none of the {len(names)} projects asked of it "
                f"({listed})",
                hint="check that the index URL the run recorded is right and that no proxy "
                "answers in its place",
            )


def _note_key(note: PackageNote) -> tuple[str, str, str]:
    return (note.manager, normalize_name(note.name), note.version)


def _note(package: Package, reason: str) -> PackageNote:
    return PackageNote(name=package.name, version=package.version, reason=reason)


def _plan_python(manifest: Manifest, provided: Mapping[str, str]) -> _Plan:
    """Sort each package into how it is locked, or why it cannot be."""
    plan = _Plan()
    conda_covers = manifest.conda.present and bool(manifest.conda.packages)
    seen: set[str] = set()
    for package in manifest.python.packages:
        if not _NAME.match(package.name):
            plan.unlockable.append(_note(package, "the name is not a valid package name (PEP 508)"))
            continue
        if not _VERSION_CHARS.match(package.version) or version_key(package.version) is None:
            plan.unlockable.append(_note(package, "the version is not a PEP 440 version"))
            continue
        project = normalize_name(package.name)
        if project in seen:
            plan.unlockable.append(_note(package, "the package is listed more than once"))
            continue
        seen.add(project)
        if provided.get(project) == package.version and package.source != "conda":
            plan.covered.append(_note(package, BASE_PROVIDED_REASON))
            plan.base_provided.append(project)
            continue
        _plan_one(package, project, manifest, plan, conda_covers=conda_covers)
    return plan


def _plan_one(
    package: Package, project: str, manifest: Manifest, plan: _Plan, *, conda_covers: bool
) -> None:
    if package.source == "conda":
        if conda_covers:
            plan.covered.append(_note(package, "installed by conda; pinned by the conda lock"))
        else:
            plan.unlockable.append(
                _note(package, "installed by conda, but no conda packages were recorded")
            )
        return
    if package.source == "editable" and package.reinstallable:
        plan.covered.append(
            _note(package, package.reason or "the project's own source, built from the commit")
        )
        return
    if not package.reinstallable:
        plan.unlockable.append(
            _note(package, package.reason or "the manifest marks it as not reinstallable")
        )
        return
    if package.source == "index":
        index_url = package.index_url or manifest.python.index_url or DEFAULT_INDEX_URL
        problem = _index_url_problem(index_url)
        if problem:
            plan.unlockable.append(_note(package, problem))
        else:
            plan.index.append((package, index_url.rstrip("/")))
    elif package.source == "vcs":
        line, problem = _vcs_requirement(project, package)
        if problem:
            plan.unlockable.append(_note(package, problem))
        else:
            plan.vcs_lines.append((project, line))
    elif package.source == "url":
        line, problem = _url_requirement(project, package)
        if problem:
            plan.unlockable.append(_note(package, problem))
        else:
            plan.url_lines.append((project, line))
    else:
        reasons = {
            "editable": "an editable install from outside the project; no index serves it",
            "local": "installed from a local path; no index serves it",
            "system": "installed by the system package manager; no index serves it",
        }
        reason = reasons.get(package.source, "where it was installed from is unknown")
        plan.unlockable.append(_note(package, package.reason or reason))


def _index_url_problem(url: str) -> str:
    if not _URL_CHARS.match(url) or "#" in url or clean_url(url) != url:
        return "its index URL is malformed"
    scheme = urlsplit(url).scheme
    if scheme not in ("https", "http"):
        return f"its index {url} is not an http(s) index, so a build elsewhere cannot reach it"
    return ""


def _safe_url(url: str, schemes: Iterable[str]) -> bool:
    if not _URL_CHARS.match(url) or "#" in url or clean_url(url) != url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.netloc)


def _vcs_requirement(project: str, package: Package) -> tuple[str, str]:
    vcs = package.vcs.lower()
    if vcs not in _VCS_KINDS:
        return "", f"its version control system {package.vcs!r} is not one pip installs from"
    if not package.commit or not _VCS_COMMIT.match(package.commit):
        return "", "no usable commit was recorded for it"
    url = package.url
    if url.lower().startswith(f"{vcs}+"):
        url = url[len(vcs) + 1 :]
    if not _safe_url(url, _VCS_SCHEMES):
        return "", "its repository URL is not a remote URL pip can clone"
    line = f"{project} @ {vcs}+{url}@{package.commit}"
    if package.subdirectory:
        if not _SUBDIRECTORY.match(package.subdirectory) or ".." in package.subdirectory:
            return "", "its recorded subdirectory is malformed"
        line += f"#subdirectory={package.subdirectory}"
    return line, ""


def _url_requirement(project: str, package: Package) -> tuple[str, str]:
    if not _safe_url(package.url, ("https", "http")):
        return "", "its download URL is not an http(s) URL"
    match = _PIP_HASH.match(package.archive_hash)
    if match is None:
        return "", "no sha256 (or stronger) hash of its archive was recorded"
    algorithm, digest = match[1], match[2].lower()
    expected = {"sha256": 64, "sha384": 96, "sha512": 128}[algorithm]
    if len(digest) != expected:
        return "", "its recorded archive hash is malformed"
    url = package.url
    if package.subdirectory:
        if not _SUBDIRECTORY.match(package.subdirectory) or ".." in package.subdirectory:
            return "", "its recorded subdirectory is malformed"
        url += f"#subdirectory={package.subdirectory}"
    return f"{project} @ {url} \\\n    --hash={algorithm}:{digest}", ""


def _header(manifest: Manifest) -> str:
    # A manifest given by path may carry any run id; only a plain one goes into a comment line.
    run_id = manifest.run_id if _RUN_ID.match(manifest.run_id) else "(unnamed)"
    digest = f" (manifest {manifest.digest})" if _DIGEST.match(manifest.digest) else ""
    return f"# Written by envsnap lock for run {run_id}{digest}."


def _render_requirements(
    header: str, manifest: Manifest, pinned: Sequence[_Pinned], url_lines: Sequence[tuple[str, str]]
) -> str:
    primary = (manifest.python.index_url or DEFAULT_INDEX_URL).rstrip("/")
    if _index_url_problem(primary):
        primary = DEFAULT_INDEX_URL
    extras = sorted({p.index_url for p in pinned} - {primary})
    lines = [
        header,
        "# Every package of the run at its recorded version, with the sha256 of each file its",
        "# index serves for that version. Install with:",
        f"#   pip install --no-deps --require-hashes -r {REQUIREMENTS_FILE}",
    ]
    if primary not in _DEFAULT_INDEXES:
        lines.append(f"--index-url {primary}")
    lines += [f"--extra-index-url {url}" for url in extras]
    entries: list[tuple[str, str]] = list(url_lines)
    for p in pinned:
        text = f"{p.name}=={p.version} \\\n" + " \\\n".join(
            f"    --hash=sha256:{h}" for h in p.hashes
        )
        if p.yanked:
            text = f"# {p.name}=={p.version} is yanked on {p.index_url}\n{text}"
        entries.append((p.name, text))
    lines += [text for _name, text in sorted(entries)]
    return "\n".join(lines) + "\n"


def _render_vcs(header: str, vcs_lines: Sequence[tuple[str, str]]) -> str:
    if not vcs_lines:
        return ""
    lines = [
        header,
        "# Packages installed from version control, pinned to the recorded commit. pip cannot",
        "# check hashes of VCS requirements, so this file is installed without --require-hashes,",
        f"# after {REQUIREMENTS_FILE}:",
        f"#   pip install --no-deps -r {VCS_FILE}",
        *(line for _name, line in sorted(vcs_lines)),
    ]
    return "\n".join(lines) + "\n"


# --- conda -------------------------------------------------------------------------------------


def _conda_platform(manifest: Manifest) -> str:
    subdirs = {p.subdir for p in manifest.conda.packages if p.subdir and p.subdir != "noarch"}
    if len(subdirs) == 1:
        return subdirs.pop()
    os_id = manifest.host.os_id.lower()
    system = os_id if os_id in ("darwin", "windows") else "linux"
    return _CONDA_PLATFORMS.get((system, manifest.host.arch.lower()), "linux-64")


def _plan_conda(
    manifest: Manifest,
) -> tuple[list[str], list[dict[str, Any]], list[PackageNote]]:
    lines: list[str] = []
    entries: list[dict[str, Any]] = []
    notes: list[PackageNote] = []
    platform = _conda_platform(manifest)
    for package in sorted(
        manifest.conda.packages, key=lambda p: (p.name, p.version, p.build, p.url)
    ):
        problem = _conda_problem(package)
        if problem:
            notes.append(
                PackageNote(
                    manager="conda", name=package.name, version=package.version, reason=problem
                )
            )
            continue
        md5 = package.md5.lower()
        sha256 = package.sha256.lower()
        lines.append(f"{package.url}#{md5}" if md5 else f"{package.url}#sha256:{sha256}")
        hashes = {"md5": md5} if md5 else {}
        if sha256:
            hashes["sha256"] = sha256
        entries.append(
            {
                "name": package.name,
                "version": package.version,
                "manager": "conda",
                "platform": platform,
                "dependencies": {},
                "url": package.url,
                "hash": hashes,
                "category": "main",
                "optional": False,
            }
        )
    return lines, entries, notes


def _conda_problem(package: CondaPackage) -> str:
    if not _CONDA_TOKEN.match(package.name) or not _CONDA_TOKEN.match(package.version):
        return "its name or version is malformed"
    if not package.url:
        return "no download URL was recorded for it"
    if not _safe_url(package.url, ("https", "http")):
        return "its download URL is not an http(s) URL"
    if package.md5 and not _MD5.match(package.md5.lower()):
        return "its recorded md5 is malformed"
    if package.sha256 and not _SHA256.match(package.sha256.lower()):
        return "its recorded sha256 is malformed"
    if not package.md5 and not package.sha256:
        return "no md5 or sha256 was recorded for it"
    return ""


def _render_conda_explicit(header: str, platform: str, lines: Sequence[str]) -> str:
    if not lines:
        return ""
    text = [
        header,
        "# The run's conda packages, each by URL and hash. Create the environment with:",
        f"#   conda create --name ENV --file {CONDA_EXPLICIT_FILE}",
        f"# platform: {platform}",
        "@EXPLICIT",
        *lines,
    ]
    return "\n".join(text) + "\n"


def _render_conda_lock(platform: str, entries: Sequence[dict[str, Any]]) -> str:
    if not entries:
        return ""
    import yaml

    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    channels = sorted({_conda_channel(entry["url"]) for entry in entries})
    document = {
        "version": 1,
        "metadata": {
            "content_hash": {platform: hashlib.sha256(canonical.encode()).hexdigest()},
            "channels": [{"url": channel, "used_env_vars": []} for channel in channels],
            "platforms": [platform],
            "sources": ["manifest.toml"],
        },
        "package": list(entries),
    }
    body: str = yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False, allow_unicode=False, width=4096
    )
    return "# Written by envsnap lock; conda-lock v1 format.\n" + body


def _conda_channel(url: str) -> str:
    """The channel URL of a package URL: everything before ``/<subdir>/<file>``."""
    return url.rsplit("/", 2)[0]
