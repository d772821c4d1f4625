"""Container image references, parsed in one place by the distribution grammar.

``[registry-host[:port]/]path[:tag][@algorithm:hex]``: the first component is a registry host
only when it holds a ``.`` or a ``:`` or is ``localhost`` (as docker decides), so a port is never
taken for a tag. Nothing parsed here can end a Dockerfile line or start an option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from envsnap.errors import UsageError

_HOST = re.compile(
    r"^(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_MAX_NAME = 255


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    """One parsed reference; ``domain`` is empty when none was written (Docker Hub)."""

    domain: str = ""
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        """The name without tag or digest, as written: ``127.0.0.1:5000/team/python``."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def familiar(self) -> str:
        """The short form docker prints: ``docker.io/library/python`` -> ``python``."""
        if self.domain and self.domain not in _DOCKER_HUB:
            return self.repository
        return self.path.removeprefix("library/")

    @property
    def pinned(self) -> bool:
        """Whether the reference names its image by digest."""
        return bool(self.digest)

    def with_digest(self, digest: str) -> ImageReference:
        """``repository@digest`` (the tag dropped: the digest alone names the image)."""
        return ImageReference(domain=self.domain, path=self.path, digest=digest)

    def with_tag(self, tag: str) -> ImageReference:
        """``repository:tag`` (any digest dropped)."""
        return ImageReference(domain=self.domain, path=self.path, tag=tag)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, origin: str = "the image reference") -> ImageReference:
    """Parse ``text`` or raise a UsageError naming ``origin`` (where the value came from)."""
    reference = _parse(text)
    if reference is None:
        raise UsageError(
            f"{origin} {text!r} is not a valid image reference",
            hint="use [registry[:port]/]repository[:tag][@sha256:digest], for example "
            "python:3.11.7-slim-bookworm or 127.0.0.1:5000/team/base@sha256:...",
        )
    return reference


def is_reference(text: str) -> bool:
    """Whether ``text`` parses as an image reference."""
    return _parse(text) is not None


def _parse(text: str) -> ImageReference | None:
    if not text or len(text) > 1024 or text != text.strip():
        return None
    name, at, digest = text.partition("@")
    if at and not _DIGEST.match(digest):
        return None
    components = name.split("/")
    domain = ""
    if len(components) > 1 and (
        "." in components[0] or ":" in components[0] or components[0] == "localhost"
    ):
        domain = components.pop(0)
        if not _HOST.match(domain):
            return None
    tag = ""
    last, colon, maybe_tag = components[-1].partition(":")
    if colon:
        if not _TAG.match(maybe_tag):
            return None
        components[-1], tag = last, maybe_tag
    if not all(_PATH_COMPONENT.match(c) for c in components):
        return None
    path = "/".join(components)
    if len(path) + len(domain) + 1 > _MAX_NAME:
        return None
    return ImageReference(domain=domain, path=path, tag=tag, digest=digest)


def familiar_name(repository: str) -> str:
    """The short docker form of a repository name (``docker.io/library/x`` -> ``x``); a name
    that does not parse is returned as it is, so comparisons of odd engine output stay exact."""
    reference = _parse(repository)
    return reference.familiar if reference is not None else repository
