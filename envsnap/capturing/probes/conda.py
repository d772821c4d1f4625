"""The conda environment an interpreter lives in, read from its ``conda-meta`` records without
running conda or reaching a channel."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from envsnap.capturing.redact import clean_url
from envsnap.manifest import Conda, CondaPackage

# Hosts whose channels conda itself names by their path ("conda-forge", "pkgs/main").
_NAMED_CHANNEL_HOSTS = frozenset({"conda.anaconda.org", "repo.anaconda.com", "repo.continuum.io"})
_SUBDIR = r"^(noarch|(linux|osx|win|zos|emscripten|wasi|freebsd)-[a-z0-9_]+)$"
# anaconda.org tokens travel in the path: https://conda.anaconda.org/t/<token>/channel/...
_TOKEN_SEGMENT = r"/t/[^/]+(?=/)"  # noqa: S105 (a pattern, not a secret)


def capture_conda(prefix: Path) -> Conda:
    """The [conda] section: every package record in ``<prefix>/conda-meta``, sorted by name."""
    meta = prefix / "conda-meta"
    try:
        names = sorted(os.listdir(meta))
    except OSError:
        return Conda()
    packages = [
        _read_record(meta / name, name)
        for name in names
        if name.endswith(".json") and name != "history"
    ]
    packages.sort(key=lambda p: (p.name, p.version, p.build))
    return Conda(
        present=True,
        prefix=str(prefix),
        name=environment_name(prefix),
        packages=tuple(packages),
    )


def environment_name(prefix: Path) -> str:
    """``base`` for conda's own installation, else the environment directory's name."""
    if (prefix / "condabin").is_dir():
        return "base"
    return prefix.name


def clean_conda_url(url: str) -> str:
    """A channel or package URL without user-info and without an anaconda.org ``/t/<token>``."""
    return re.sub(_TOKEN_SEGMENT, "", clean_url(url), count=1)


def channel_name(channel: str, url: str, subdir: str) -> str:
    """The channel as conda names it ("conda-forge", "pkgs/main"), else its URL, cleaned."""
    if not channel or channel.startswith("<unknown>"):
        # The package URL is <channel>/<subdir>/<file>.
        channel = url.rsplit("/", 2)[0] if url.count("/") >= 4 else ""
    if "://" not in channel:
        return channel
    cleaned = clean_conda_url(channel).rstrip("/")
    head, _, last = cleaned.rpartition("/")
    if last == subdir or re.match(_SUBDIR, last):
        cleaned = head
    from urllib.parse import urlsplit, urlunsplit  # only inside a conda environment

    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return cleaned
    if parts.hostname in _NAMED_CHANNEL_HOSTS and parts.path.strip("/"):
        return parts.path.strip("/")
    return urlunsplit(parts)


def _read_record(path: Path, filename: str) -> CondaPackage:
    """One record; a file that is not valid JSON still yields what its name says."""
    stem = filename[: -len(".json")]
    parts = stem.rsplit("-", 2)
    fallback = {"name": parts[0], "version": "", "build": ""}
    if len(parts) == 3:
        fallback.update(version=parts[1], build=parts[2])
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        return CondaPackage(**fallback)

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    subdir = text("subdir")
    url = text("url")
    return CondaPackage(
        name=text("name") or fallback["name"],
        version=text("version") or fallback["version"],
        build=text("build") or fallback["build"],
        channel=channel_name(text("channel") or text("schannel"), url, subdir),
        subdir=subdir,
        url=clean_conda_url(url) if url else "",
        md5=text("md5"),
        sha256=text("sha256"),
    )
