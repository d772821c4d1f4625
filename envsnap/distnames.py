"""Python distribution names, versions and file names, as PEP 503, PEP 440 and the wheel and
sdist conventions define them: pure functions that capture and lock share."""

from __future__ import annotations

import functools
import re

_NORMALIZE = re.compile(r"[-_.]+")
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar")


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
    for suffix in SDIST_SUFFIXES:
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
