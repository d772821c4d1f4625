"""What a lock is: its file names and schema, its result, the questions it asks of an index, and
its errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from envsnap.errors import EnvsnapError

LOCK_SCHEMA = "envsnap.lock/1"
DEFAULT_INDEX_URL = "https://pypi.org/simple"

REQUIREMENTS_FILE = "requirements.lock.txt"
VCS_FILE = "requirements.vcs.txt"
CONDA_EXPLICIT_FILE = "conda-explicit.txt"
CONDA_LOCK_FILE = "conda-lock.yml"
SUMMARY_FILE = "lock.toml"


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
