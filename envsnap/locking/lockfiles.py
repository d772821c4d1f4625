"""Lock files for a manifest: pip requirements with sha256 hashes, VCS pins, a conda explicit lock
and a conda-lock file. The only module that talks to package indexes (PEP 691 JSON, PEP 503 HTML).

The manifest already holds a complete resolution, so nothing is resolved here: each package is
looked up on the index it came from, and the hashes of exactly its version are written down.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from envsnap.capturing.redact import clean_url, strip_url_credentials
from envsnap.errors import EnvsnapError
from envsnap.manifest import CondaPackage, Manifest, Package
from envsnap.store import StoredRun

LOCK_SCHEMA = "envsnap.lock/1"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
_DEFAULT_INDEXES = frozenset({"https://pypi.org/simple", "https://pypi.python.org/simple"})

REQUIREMENTS_FILE = "requirements.lock.txt"
VCS_FILE = "requirements.vcs.txt"
CONDA_EXPLICIT_FILE = "conda-explicit.txt"
CONDA_LOCK_FILE = "conda-lock.yml"
SUMMARY_FILE = "lock.toml"

_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, "
    "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
)
_MAX_REDIRECTS = 5
_MAX_BODY_BYTES = 256 * 1024 * 1024
_CACHE_SCHEMA = "envsnap.index-cache/1"

# PEP 508 names; versions limited to PEP 440's alphabet before they are parsed. Neither admits
# whitespace, '#', ';', '@' or a leading '-', so no manifest value can become a pip option.
_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")
_VERSION_CHARS = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]*$")
_NORMALIZE = re.compile(r"[-_.]+")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_PIP_HASH = re.compile(r"^(sha256|sha384|sha512)[=:]([0-9a-fA-F]+)$")
_VCS_COMMIT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
_SUBDIRECTORY = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space
_CONDA_TOKEN = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z_.+!-]*$")
_RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")
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


# --- errors ------------------------------------------------------------------------------------


class LockError(EnvsnapError):
    """A lock could not be made: an index could not be asked, or the lock files not written."""


class IndexUnreachableError(LockError):
    """A package index did not answer usefully (network, TLS, server error, a page that is not
    an index page); nothing was written."""


# --- data --------------------------------------------------------------------------------------


class IndexFile(NamedTuple):
    """One file a package index serves for a project. A named tuple rather than a dataclass:
    a lock reads about 125,000 of them from the cache, and tuples build several times faster."""

    filename: str
    sha256: str
    yanked: bool = False


class IndexQuery(NamedTuple):
    """A project asked of one index; ``version`` lets a cache tell whether it is still current."""

    index_url: str
    project: str
    version: str


class HashSource(Protocol):
    """Where file hashes come from: the real indexes, or a fake in tests."""

    def files(
        self, queries: Sequence[IndexQuery]
    ) -> Mapping[IndexQuery, tuple[IndexFile, ...] | None]:
        """Every file of each queried project on its index; None where the index has no such
        project. Raises LockError when an index cannot be asked."""
        ...


@dataclass(frozen=True, kw_only=True)
class PackageNote:
    """A package left out of the lock files, and why."""

    manager: Literal["pip", "conda"] = "pip"
    name: str
    version: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class LockResult:
    """The lock files' text for one manifest, and what could not be locked."""

    run_id: str
    manifest_digest: str = ""
    requirements: str
    vcs_requirements: str = ""
    conda_explicit: str = ""
    conda_lock: str = ""
    locked_index: int = 0
    locked_url: int = 0
    locked_vcs: int = 0
    locked_conda: int = 0
    unlockable: tuple[PackageNote, ...] = ()
    # Installed by the build another way: the project's own editable source (from the recorded
    # commit), conda (from the conda lock) or the base image. Not a failure: not ``unlockable``.
    covered_elsewhere: tuple[PackageNote, ...] = ()
    # Normalised names of the packages the base image provides at the recorded version.
    base_provided: tuple[str, ...] = ()

    def file_texts(self) -> dict[str, str]:
        """The lock files this result produces, by file name, in a fixed order."""
        texts = {REQUIREMENTS_FILE: self.requirements}
        if self.vcs_requirements:
            texts[VCS_FILE] = self.vcs_requirements
        if self.conda_explicit:
            texts[CONDA_EXPLICIT_FILE] = self.conda_explicit
        if self.conda_lock:
            texts[CONDA_LOCK_FILE] = self.conda_lock
        return texts


# --- names, versions and file names ------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def normalize_name(name: str) -> str:
    """A project name normalised per PEP 503."""
    return _NORMALIZE.sub("-", name).lower()


_PEP440 = re.compile(
    r"""^v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|beta|preview|pre|rc|a|b|c)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    $""",
    re.IGNORECASE | re.VERBOSE,
)
_PRE_SPELLINGS = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}

VersionKey = tuple[object, ...]


# Pages list every file of every release (numpy: 4,000+), and file names repeat a few hundred
# version strings: parsing each distinct one once is what keeps a 120-package lock fast.
@functools.lru_cache(maxsize=65536)
def version_key(version: str) -> VersionKey | None:
    """A key equal for versions PEP 440 calls equal (``1.0 == 1.0.0``, ``2.3.0+CU121 ==
    2.3.0+cu121``), local label included; None when ``version`` is not PEP 440."""
    match = _PEP440.match(version)
    if match is None:
        return None
    release = [int(part) for part in match["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre: tuple[str, int] | None = None
    if match["pre_l"]:
        label = match["pre_l"].lower()
        pre = (_PRE_SPELLINGS.get(label, label), int(match["pre_n"] or 0))
    post: int | None = None
    if match["post_n1"] is not None:
        post = int(match["post_n1"])
    elif match["post_l"]:
        post = int(match["post_n2"] or 0)
    dev = int(match["dev_n"] or 0) if match["dev_l"] else None
    local: tuple[object, ...] = ()
    if match["local"]:
        local = tuple(
            int(part) if part.isdigit() else part.lower()
            for part in re.split(r"[-_.]", match["local"])
        )
    return (int(match["epoch"] or 0), tuple(release), pre, post, dev, local)


def file_version(filename: str, project: str) -> str | None:
    """The version in a wheel or sdist file name of ``project`` (normalised), or None when the
    file is another project's or not a kind pip installs from."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        if len(parts) in (5, 6) and normalize_name(parts[0]) == project:
            return parts[1]
        return None
    for suffix in _SDIST_SUFFIXES:
        if filename.lower().endswith(suffix):
            stem = filename[: -len(suffix)]
            break
    else:
        return None
    # sdist names may keep '-' in the project part (python-dateutil-2.9.0.tar.gz).
    for index, char in enumerate(stem):
        if char == "-" and normalize_name(stem[:index]) == project:
            return stem[index + 1 :] or None
    return None


def matching_files(files: Iterable[IndexFile], project: str, version: str) -> list[IndexFile]:
    """The files of exactly ``version`` of ``project`` (normalised), in the order given."""
    wanted = version_key(version)
    verdicts: dict[str, bool] = {}
    matched: list[IndexFile] = []
    for item in files:
        found = file_version(item.filename, project)
        if found is None:
            continue
        verdict = verdicts.get(found)
        if verdict is None:
            verdict = found == version or (wanted is not None and version_key(found) == wanted)
            verdicts[found] = verdict
        if verdict:
            matched.append(item)
    return matched


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


# --- writing -----------------------------------------------------------------------------------


def write_lock_files(run_dir: Path, result: LockResult) -> list[Path]:
    """Write the lock files and ``lock.toml`` into the run directory; lock files a previous lock
    wrote that this result has no use for are removed.

    Every file is written to a temporary name and synced before any is renamed into place, so a
    full disk or a failed write leaves the previous lock files (or none) as they were."""
    import tomli_w

    texts = result.file_texts()
    summary: dict[str, Any] = {
        "schema": LOCK_SCHEMA,
        "run_id": result.run_id,
        "manifest_digest": result.manifest_digest,
        "counts": {
            "index": result.locked_index,
            "url": result.locked_url,
            "vcs": result.locked_vcs,
            "conda": result.locked_conda,
            "unlockable": len(result.unlockable),
            "covered_elsewhere": len(result.covered_elsewhere),
        },
        "files": {
            name: "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
            for name, text in texts.items()
        },
        "unlockable": [_note_data(note) for note in result.unlockable],
        "covered_elsewhere": [_note_data(note) for note in result.covered_elsewhere],
    }
    texts[SUMMARY_FILE] = tomli_w.dumps(summary, multiline_strings=False)
    staged: list[tuple[Path, Path]] = []  # temporary file, its final path
    try:
        for name, text in texts.items():
            staged.append((_stage(run_dir / name, text.encode("utf-8")), run_dir / name))
        for tmp, path in staged:  # lock.toml, which names the others' hashes, goes last
            tmp.replace(path)
        for name in (VCS_FILE, CONDA_EXPLICIT_FILE, CONDA_LOCK_FILE):
            if name not in texts:
                (run_dir / name).unlink(missing_ok=True)
        _fsync_dir(run_dir)
    except OSError as exc:
        raise LockError(
            f"the lock files cannot be written to {run_dir} ({exc.strerror or exc})",
            hint="check that the run directory is writable and the disk is not full",
        ) from None
    finally:
        for tmp, _path in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # only those never renamed are still there
    return [path for _tmp, path in staged]


def _note_data(note: PackageNote) -> dict[str, str]:
    return {
        "manager": note.manager,
        "name": note.name,
        "version": note.version,
        "reason": note.reason,
    }


def _stage(path: Path, data: bytes) -> Path:
    """``data`` written and synced to a temporary file beside ``path``; nothing left on failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lock_run(
    run: StoredRun, *, source: HashSource | None = None, cache_dir: Path | None = None
) -> tuple[LockResult, list[Path]]:
    """Lock a stored run and write its lock files beside its manifest, once: a run locked
    before keeps its lock files (read back and checked, no index asked), so what they say never
    depends on which command ran last."""
    existing = read_lock_files(run)
    if existing is not None:
        return existing
    result = lock_packages(run.manifest, source or SimpleIndexClient(cache_dir=cache_dir))
    return result, write_lock_files(run.directory, result)


def read_lock_files(run: StoredRun) -> tuple[LockResult, list[Path]] | None:
    """The lock a run was given before (None when it has none), verified against the hashes
    ``lock.toml`` records; a lock file changed after writing is an error, never used."""
    import tomllib

    summary_path = run.directory / SUMMARY_FILE
    try:
        summary = tomllib.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _changed_lock(summary_path, f"it cannot be read ({exc})") from None
    if summary.get("schema") != LOCK_SCHEMA or summary.get("run_id") != run.run_id:
        raise _changed_lock(summary_path, "it belongs to another run or schema")
    files = summary.get("files")
    if not isinstance(files, dict) or REQUIREMENTS_FILE not in files:
        raise _changed_lock(summary_path, "it lists no requirements file")
    texts: dict[str, str] = {}
    for name, digest in sorted(files.items()):
        path = run.directory / str(name)
        try:
            data = path.read_bytes()
        except OSError:
            raise _changed_lock(path, "it is missing") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise _changed_lock(path, "its content does not match lock.toml")
        texts[str(name)] = data.decode("utf-8", errors="replace")
    counts = summary.get("counts", {})

    def notes(key: str) -> tuple[PackageNote, ...]:
        return tuple(
            PackageNote(
                manager="conda" if n.get("manager") == "conda" else "pip",
                name=str(n.get("name", "")),
                version=str(n.get("version", "")),
                reason=str(n.get("reason", "")),
            )
            for n in summary.get(key, [])
            if isinstance(n, dict)
        )

    result = LockResult(
        run_id=run.run_id,
        manifest_digest=str(summary.get("manifest_digest", "")),
        requirements=texts[REQUIREMENTS_FILE],
        vcs_requirements=texts.get(VCS_FILE, ""),
        conda_explicit=texts.get(CONDA_EXPLICIT_FILE, ""),
        conda_lock=texts.get(CONDA_LOCK_FILE, ""),
        locked_index=int(counts.get("index", 0)),
        locked_url=int(counts.get("url", 0)),
        locked_vcs=int(counts.get("vcs", 0)),
        locked_conda=int(counts.get("conda", 0)),
        unlockable=notes("unlockable"),
        covered_elsewhere=notes("covered_elsewhere"),
    )
    paths = [run.directory / name for name in result.file_texts()] + [summary_path]
    return result, paths


def _changed_lock(path: Path, why: str) -> LockError:
    return LockError(
        f"the lock file {path} was changed after it was written ({why})",
        hint="restore the run directory from a backup, or capture the run again",
    )


# --- the index client --------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """An index URL as an error message may show it: no user-info, no query string (either may
    carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return strip_url_credentials(url).split("?", 1)[0].split("#", 1)[0]
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Resolution:
    """One host's addresses, looked up by the first worker that needs them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.addresses: list[tuple[Any, ...]] = []
        self.error: tuple[int, str] | None = None


class SimpleIndexClient:
    """Reads project pages of PEP 691 (JSON) or PEP 503 (HTML) indexes over keep-alive
    connections, several projects at once, with an optional on-disk cache per index and project.

    A cached page is used only while it still lists the version asked for, so a warm lock asks
    no index, and a version published after the page was cached is still found. Each host name
    is resolved once per batch, however many workers connect to it.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        timeout: float = 30.0,
        max_workers: int = 16,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Mapping[str, str] | None = None,
        getaddrinfo: Callable[..., Sequence[tuple[Any, ...]]] = socket.getaddrinfo,
    ) -> None:
        self.cache_dir = cache_dir
        self.timeout = timeout
        self.max_workers = max_workers
        # One context for every connection: building one loads the CA bundle, which is what
        # makes urllib (a context per request) slow here.
        self._ssl = ssl_context or ssl.create_default_context()
        if proxies is None:
            import urllib.request

            proxies = urllib.request.getproxies()
        self._proxies = dict(proxies)
        self._getaddrinfo = getaddrinfo
        self._resolved: dict[tuple[str, int], _Resolution] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []
        self.fetches = 0  # requests made to an index, for tests and benchmarks
        self.lookups = 0  # host names resolved, for tests

    def files(
        self, queries: Sequence[IndexQuery]
    ) -> dict[IndexQuery, tuple[IndexFile, ...] | None]:
        by_page: dict[tuple[str, str], list[IndexQuery]] = {}
        for query in queries:
            by_page.setdefault((query.index_url.rstrip("/"), query.project), []).append(query)
        pages: dict[tuple[str, str], tuple[IndexFile, ...] | None] = {}
        missing: list[tuple[str, str]] = []
        for key, wanted in by_page.items():
            cached = self._read_cache(*key)
            if cached is not None and all(_lists_version(cached[1], q.version) for q in wanted):
                pages[key] = cached[0]
            else:
                missing.append(key)
        if missing:
            pages.update(self._fetch_all(missing))
        return {q: pages[(q.index_url.rstrip("/"), q.project)] for q in queries}

    def _fetch_all(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[IndexFile, ...] | None]:
        """Fetch every page; the first failure, in the order asked, is raised once the requests
        already running have ended, and the queued ones are dropped, never read."""
        workers = max(1, min(self.max_workers, len(keys)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="envsnap-index")
        try:
            futures = [(key, pool.submit(self._fetch_and_cache, *key)) for key in keys]
            results: dict[tuple[str, str], tuple[IndexFile, ...] | None] = {}
            for key, future in futures:
                results[key] = future.result()
            return results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._close_connections()
            with self._lock:
                self._resolved.clear()

    def _fetch_and_cache(self, index_url: str, project: str) -> tuple[IndexFile, ...] | None:
        try:
            files = self.fetch(index_url, project)
        except LockError:
            raise
        except Exception as exc:  # whatever a worker meets must reach the user as a sentence
            raise IndexUnreachableError(
                f"asking {shown_url(index_url)} for {project} failed unexpectedly "
                f"({type(exc).__name__})",
                hint="run envsnap lock again with --debug and report the traceback",
            ) from exc
        if files is not None:
            self._write_cache(index_url, project, files)
        return files

    def fetch(self, index_url: str, project: str) -> tuple[IndexFile, ...] | None:
        """One project page from one index; None when the index has no such project."""
        with self._lock:
            self.fetches += 1
        shown = shown_url(index_url)
        url = f"{index_url.rstrip('/')}/{project}/"
        seen = {url}
        for _hop in range(_MAX_REDIRECTS + 1):
            status, headers, body = self._get(url, index_url, project)
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                try:
                    url = urljoin(url, headers["location"])
                except ValueError:
                    raise IndexUnreachableError(
                        f"{shown} redirected the request for {project} to a malformed URL",
                        hint="check that the index URL is right",
                    ) from None
                if url in seen:
                    raise IndexUnreachableError(
                        f"{shown} redirected the request for {project} in a loop",
                        hint="check that the index URL is right, or ask its administrator",
                    )
                seen.add(url)
                continue
            if status in (404, 410):
                return None
            if status in (401, 403):
                raise LockError(
                    f"{shown} refused to list {project} (HTTP {status})",
                    hint="envsnap locks only from indexes readable without credentials",
                )
            if status == 407:
                raise IndexUnreachableError(
                    f"the proxy between here and {shown} asked for credentials when asked for "
                    f"{project} (HTTP 407)",
                    hint="put the proxy's credentials in HTTP_PROXY/HTTPS_PROXY, or lock where "
                    "the index is reachable directly",
                )
            if status != 200:
                raise IndexUnreachableError(
                    f"{shown} answered HTTP {status} when asked for {project}",
                    hint="try again later, or check that the index URL is right",
                )
            return _parse_page(body, headers.get("content-type", ""), url, index_url, project)
        raise IndexUnreachableError(
            f"{shown} redirected the request for {project} more than {_MAX_REDIRECTS} times",
            hint="check that the index URL is right",
        )

    def _get(self, url: str, index_url: str, project: str) -> tuple[int, dict[str, str], bytes]:
        shown = shown_url(index_url)
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port, parts = None, None, urlsplit("")
        if parts.scheme not in ("https", "http") or not host:
            raise LockError(
                f"{shown} led to {shown_url(url)!r} when asked for {project}, which is not an "
                "http(s) URL",
                hint="lock from an http(s) index",
            )
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = {"Accept": _ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "envsnap-lock"}
        last: BaseException | None = None
        for attempt in range(2):  # a kept-alive connection the server closed gets one retry
            conn = self._connection(parts.scheme, host, port)
            try:
                target = path if not getattr(conn, "_envsnap_http_proxy", False) else url
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read(_MAX_BODY_BYTES + 1)
                status = response.status
                got = {k.lower(): v for k, v in response.getheaders()}
            except ssl.SSLCertVerificationError as exc:
                self._drop_connection(parts.scheme, host, port)
                raise IndexUnreachableError(
                    f"the TLS certificate of {shown} could not be verified while asking "
                    f"for {project} ({exc.verify_message or exc.reason})",
                    hint="if a proxy intercepts TLS, point SSL_CERT_FILE at its CA bundle",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection(parts.scheme, host, port)
                last = exc
                if attempt == 0 and not isinstance(exc, socket.gaierror | TimeoutError):
                    continue
                break
            except ValueError:  # a redirect to a path http.client will not send (not ASCII)
                self._drop_connection(parts.scheme, host, port)
                raise IndexUnreachableError(
                    f"{shown} led to a URL that cannot be requested when asked for {project}",
                    hint="check that the index URL is right",
                ) from None
            if status >= 500 and attempt == 0:
                continue
            if len(body) > _MAX_BODY_BYTES:
                raise LockError(
                    f"{shown} sent more than {_MAX_BODY_BYTES} bytes for {project}",
                    hint="check that the index URL is right",
                )
            if got.get("content-encoding", "").lower() == "gzip":
                body = _gunzip(body, shown, project)
            return status, got, body
        raise IndexUnreachableError(
            f"{shown} could not be reached while asking for {project} "
            f"({_describe(last, self.timeout)})",
            hint="check the network and the index URL, then run envsnap lock again",
        )

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str, int | None], http.client.HTTPConnection] | None
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (scheme, host, port)
        conn = pool.get(key)
        if conn is None:
            conn = self._new_connection(scheme, host, port)
            # http.client's own hook for opening the socket: through the shared host lookups.
            conn._create_connection = self._open_socket  # type: ignore[attr-defined]
            pool[key] = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _new_connection(
        self, scheme: str, host: str, port: int | None
    ) -> http.client.HTTPConnection:
        import urllib.request

        proxy = self._proxies.get(scheme, "")
        if proxy and not urllib.request.proxy_bypass(host):
            proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            proxy_host = proxy_parts.hostname or ""
            proxy_port = proxy_parts.port or 8080
            if scheme == "https":
                tunnelled = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=self.timeout, context=self._ssl
                )
                tunnelled.set_tunnel(host, port or 443)
                return tunnelled
            plain = http.client.HTTPConnection(proxy_host, proxy_port, timeout=self.timeout)
            plain._envsnap_http_proxy = True  # type: ignore[attr-defined]
            return plain
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _open_socket(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """``socket.create_connection``, but with the host's addresses looked up once for all
        workers: sixteen threads resolving one name at the same moment stalled a slow resolver
        for seconds."""
        last: OSError | None = None
        for family, kind, proto, _name, sockaddr in self._addresses(*address):
            sock = socket.socket(family, kind, proto)
            try:
                if isinstance(timeout, int | float):
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise last or OSError(f"{address[0]} has no address to connect to")

    def _addresses(self, host: str, port: int) -> list[tuple[Any, ...]]:
        with self._lock:
            entry = self._resolved.get((host, port))
            if entry is None:
                entry = self._resolved[(host, port)] = _Resolution()
        with entry.lock:  # the other workers wait here for the first one's answer
            if not entry.done:
                with self._lock:
                    self.lookups += 1
                try:
                    entry.addresses = list(self._getaddrinfo(host, port, type=socket.SOCK_STREAM))
                except socket.gaierror as exc:
                    entry.error = (exc.errno or socket.EAI_NONAME, exc.strerror or "")
                except (OSError, UnicodeError, ValueError):
                    entry.error = (socket.EAI_NONAME, "the host name is not valid")
                entry.done = True
        if entry.error is not None:
            raise socket.gaierror(*entry.error)  # a fresh one per thread: tracebacks differ
        return entry.addresses

    def _drop_connection(self, scheme: str, host: str, port: int | None) -> None:
        pool = getattr(self._local, "pool", {})
        conn = pool.pop((scheme, host, port), None)
        if conn is not None:
            conn.close()

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # --- cache ----------------------------------------------------------------------------

    def _cache_path(self, index_url: str, project: str) -> Path | None:
        if self.cache_dir is None:
            return None
        index_key = hashlib.sha256(index_url.rstrip("/").encode()).hexdigest()[:16]
        return self.cache_dir / index_key / f"{project}.json"

    def _read_cache(
        self, index_url: str, project: str
    ) -> tuple[tuple[IndexFile, ...], list[str]] | None:
        """The cached page and the distinct versions its file names carry."""
        path = self._cache_path(index_url, project)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema") != _CACHE_SCHEMA or data.get("index_url") != index_url:
                return None
            files = tuple(IndexFile._make(row) for row in data["files"])
            versions = data["versions"]
            if not all(type(f.filename) is str and type(f.sha256) is str for f in files):
                return None
            if not all(type(v) is str for v in versions):
                return None
            return files, versions
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None  # absent or damaged: ask the index

    def _write_cache(self, index_url: str, project: str, files: Sequence[IndexFile]) -> None:
        path = self._cache_path(index_url, project)
        if path is None:
            return
        data = {
            "schema": _CACHE_SCHEMA,
            "index_url": index_url,
            "project": project,
            # Distinct versions, so a warm lock checks freshness without parsing every name.
            "versions": sorted(
                {v for f in files if (v := file_version(f.filename, project)) is not None}
            ),
            "files": [[f.filename, f.sha256, f.yanked] for f in files],
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a cache that cannot be written only costs time


def _lists_version(versions: Iterable[str], version: str) -> bool:
    wanted = version_key(version)
    return any(v == version or (wanted is not None and version_key(v) == wanted) for v in versions)


def _describe(exc: BaseException | None, timeout: float) -> str:
    """What went wrong with a request, in a few words."""
    if isinstance(exc, socket.gaierror):
        return "the host name did not resolve"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.IncompleteRead):
        return "the answer was cut short"
    if isinstance(exc, http.client.HTTPException):
        return "the answer was not valid HTTP"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):
        # http.client's message carries the proxy's status line: keep only printable ASCII.
        said = re.sub(r"[^\x20-\x7e]", "", str(exc).partition(":")[2]).strip()[:80]
        return f"the proxy refused to connect to the index: {said}"
    return type(exc).__name__ if exc is not None else "unknown error"


def _gunzip(body: bytes, shown: str, project: str) -> bytes:
    """A gzip body decompressed, refusing one that expands past the page size limit."""
    out = bytearray()
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += inflater.decompress(data, _MAX_BODY_BYTES + 1 - len(out))
            if len(out) > _MAX_BODY_BYTES:
                raise LockError(
                    f"{shown} sent more than {_MAX_BODY_BYTES} bytes for {project}",
                    hint="check that the index URL is right",
                )
            if not inflater.eof:
                raise zlib.error("truncated")
            data = inflater.unused_data
    except zlib.error:
        raise IndexUnreachableError(
            f"{shown} sent a corrupt compressed page for {project}",
            hint="try again; if it persists, check that the index URL is right",
        ) from None
    return bytes(out)


class _NotAnIndexPageError(Exception):
    """Why a page is not a simple-API page, for the one sentence the user reads."""


# What a simple-API page links to: the kinds of file an index serves for a project.
_DIST_SUFFIXES = (".whl", ".egg", ".exe", ".msi", ".rpm", ".dmg", ".deb", *_SDIST_SUFFIXES)


def _parse_page(
    body: bytes, content_type: str, url: str, index_url: str, project: str
) -> tuple[IndexFile, ...]:
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    shown = shown_url(index_url)
    try:
        if kind.endswith("json"):
            return _parse_json_page(body)
        if kind in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
            return _parse_html_page(_page_text(body, params), url)
    except _NotAnIndexPageError as exc:
        raise IndexUnreachableError(
            f"{shown} sent a page for {project} that is not a package index page ({exc})",
            hint="check that the index URL points at a PEP 503 or PEP 691 simple index, and "
            "that no proxy answers in its place",
        ) from None
    shown_kind = re.sub(r"[^\x21-\x7e]", "", kind)[:60] or "no content type"
    raise IndexUnreachableError(
        f"{shown} answered with {shown_kind!r} for {project}, not a package index page",
        hint="check that the index URL points at a PEP 503 or PEP 691 simple index",
    )


def _parse_json_page(body: bytes) -> tuple[IndexFile, ...]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _NotAnIndexPageError("it is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise _NotAnIndexPageError("its JSON has no list of files")
    meta = data.get("meta", {})
    version = meta.get("api-version", "1.0") if isinstance(meta, dict) else None
    if not isinstance(version, str) or version.split(".", 1)[0] != "1":
        raise _NotAnIndexPageError("it declares a simple API version other than 1.x")
    files: list[IndexFile] = []
    for item in data["files"]:
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            raise _NotAnIndexPageError("a file in its JSON has no file name")
        hashes = item.get("hashes") or {}
        if not isinstance(hashes, dict):
            raise _NotAnIndexPageError("a file in its JSON has malformed hashes")
        sha256 = hashes.get("sha256", "")
        files.append(
            IndexFile(
                filename=item["filename"],
                sha256=sha256.lower() if isinstance(sha256, str) else "",
                yanked=bool(item.get("yanked", False)),
            )
        )
    return tuple(files)


def _page_text(body: bytes, content_type_params: str) -> str:
    """The page as text: an HTML5 page is UTF-8 unless its content type names a charset."""
    charset = "utf-8"
    for param in content_type_params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    if b"\0" in body:
        raise _NotAnIndexPageError("it is binary data, not HTML")
    try:
        return body.decode(charset)
    except LookupError:
        return body.decode("utf-8", errors="replace")
    except UnicodeDecodeError:
        raise _NotAnIndexPageError(f"it is not text in its encoding ({charset[:20]})") from None


class _AnchorParser(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self.files: list[IndexFile] = []
        self.tags = 0
        self.anchors = 0
        self.forms = 0  # <form> or a password field: a sign-in page, never an index
        self._href: str | None = None
        self._yanked = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base_url = _join_url(self.base_url, href)
        elif tag == "a":
            self.anchors += 1
            values = dict(attrs)
            self._href = values.get("href") or ""
            self._yanked = "data-yanked" in values
            self._text = []
        elif tag == "form" or (
            tag == "input" and (dict(attrs).get("type") or "").lower() == "password"
        ):
            self.forms += 1

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or self._href is None:
            return
        href, self._href = self._href, None
        link, _, fragment = _join_url(self.base_url, href).partition("#")
        name = "".join(self._text).strip() or unquote(link.rsplit("/", 1)[-1])
        algorithm, _, digest = fragment.partition("=")
        self.files.append(
            IndexFile(
                filename=name,
                sha256=digest.lower() if algorithm == "sha256" else "",
                yanked=self._yanked,
            )
        )


def _join_url(base: str, href: str) -> str:
    try:
        return urljoin(base, href)
    except ValueError:  # a malformed link (an unclosed IPv6 bracket): keep it as written
        return href


def _parse_html_page(text: str, url: str) -> tuple[IndexFile, ...]:
    parser = _AnchorParser(url)
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError, RecursionError):  # html.parser's own give-ups
        raise _NotAnIndexPageError("the HTML parser cannot read it") from None
    files = tuple(parser.files)
    if any(f.filename.lower().endswith(_DIST_SUFFIXES) for f in files):
        return files
    if parser.forms:
        raise _NotAnIndexPageError("it is a sign-in page; a proxy or the index wants credentials")
    if parser.anchors:
        raise _NotAnIndexPageError("none of its links is a package file")
    if not parser.tags:
        raise _NotAnIndexPageError("it is not HTML")
    return files  # an HTML page without links: a project with no files
