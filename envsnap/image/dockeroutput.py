"""What the docker CLI prints, read: client versions, image inspect JSON, push digests,
BuildKit logs and their failures, and the engine's errors and data. Pure; no process runs here."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envsnap.errors import EnvsnapError
from envsnap.imageref import familiar_name

# docker's own exit code for "the CLI or daemon failed", and ours for "stopped at the timeout",
# the same convention as timeout(1).
DOCKER_RUN_FAILED = 125
EXIT_TIMEOUT = 124

# How much of what a failed command printed is kept for the error.
TAIL_LINES = 60
_TAIL_CHARS = 400
_MAX_TITLE = 160
# CLI 23 and later route DOCKER_BUILDKIT=1 builds to the buildx plugin; older CLIs have BuildKit
# built in.
BUILDX_REQUIRED_FROM = 23
_SECRET_READ_LIMIT = 4 * 1024 * 1024
_SECRET_MIN_NEEDLE = 4

_DAEMON_DOWN = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
)
_DAEMON_DENIED = "permission denied while trying to connect to the docker daemon"
NO_SUCH_IMAGE = ("no such image", "no such object")
NO_SUCH_CONTAINER = "no such container"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_VERSION = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_STEP_HEADER = re.compile(r"^#(\d+) (\[[^\]]+\] .*)$")
_STEP_ERROR = re.compile(r"^#(\d+) ERROR:\s*(.*)$")
_STEP_SUMMARY = re.compile(r"^ > (\[[^\]]+\] .*):$")
_FINAL_ERROR = re.compile(
    r"^(?:ERROR: )?(failed to solve.*|failed to compute cache key.*|executor failed running.*)$"
)


# ----------------------------------------------------------------------------------- errors


class EngineError(EnvsnapError):
    """The container engine failed; ``detail`` holds the tail of what docker printed."""


class EngineUnavailableError(EngineError):
    """No usable docker CLI, or the daemon does not answer."""


class ImageNotFoundError(EngineError):
    """An image is neither present locally nor pullable."""


class ImageNotPinnableError(EngineError):
    """An image exists only locally, so no registry digest can pin it."""


class BuildError(EngineError):
    """``docker build`` failed; ``step`` names the failing Dockerfile step when it is known."""

    show_detail = True  # the tail of the build log says what the step printed

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        detail: str = "",
        step: str = "",
        disk_full: bool = False,
    ) -> None:
        super().__init__(message, hint=hint, detail=detail)
        self.step = step
        self.disk_full = disk_full


# ------------------------------------------------------------------------------------- data


@dataclass(frozen=True, kw_only=True)
class EngineInfo:
    """The daemon's version and the CLI that talks to it."""

    server_version: str
    api_version: str
    cli: str
    client_version: str


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What ``docker image inspect`` says about one local image."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    size: int = 0


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A bind mount for ``run``: a host path at ``target`` in the container."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class BuildFailure:
    """What a BuildKit plain-progress log says went wrong."""

    step: str = ""
    reason: str = ""
    disk_full: bool = False


# ------------------------------------------------------------------------ parsing helpers


def client_version_tuple(version: str) -> tuple[int, int, int] | None:
    """``"20.10.24+dfsg1"`` -> ``(20, 10, 24)``; None when it does not start with a number."""
    match = _VERSION.match(version.strip())
    if match is None:
        return None
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


def has_builtin_buildkit(client_version: str) -> bool:
    """Whether this CLI version runs ``DOCKER_BUILDKIT=1 docker build`` without buildx."""
    parsed = client_version_tuple(client_version)
    return parsed is not None and parsed[0] < BUILDX_REQUIRED_FROM


def pick_repo_digest(repo_digests: Iterable[str], repository: str) -> str | None:
    """The ``repository@sha256:...`` entry for ``repository``; else any entry (they all name the
    same image content, sorted for a stable choice); None when the image has no registry digest."""
    wanted = familiar_name(repository)
    entries = sorted(d for d in repo_digests if "@" in d and _DIGEST.search(d))
    for entry in entries:
        repo, _, _ = entry.partition("@")
        if familiar_name(repo) == wanted:
            return entry
    return entries[0] if entries else None


def parse_push_digest(output: str) -> str | None:
    """The manifest digest from ``docker push`` output (``<tag>: digest: sha256:... size: N``)."""
    found = _PUSH_DIGEST.findall(output)
    return found[-1] if found else None


def parse_image_info(text: str) -> ImageInfo:
    """An ``ImageInfo`` from ``docker image inspect --format '{{json .}}'`` output."""
    data = json.loads(text)
    if isinstance(data, list):  # plain `docker image inspect` prints a list
        data = data[0]
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    return ImageInfo(
        id=str(data.get("Id", "")),
        repo_tags=tuple(sorted(data.get("RepoTags") or ())),
        repo_digests=tuple(sorted(data.get("RepoDigests") or ())),
        labels={str(k): str(v) for k, v in sorted(labels.items())},
        created=str(data.get("Created", "")),
        size=int(data.get("Size") or 0),
    )


class BuildLog:
    """Reads BuildKit ``--progress=plain`` output line by line: keeps the last lines, the title of
    every step, and the first step that failed."""

    def __init__(self, tail_lines: int = TAIL_LINES) -> None:
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self._titles: dict[str, str] = {}
        self._failed_step = ""
        self._step_reason = ""
        self._summary_step = ""
        self._final_reason = ""
        self._disk_full = False

    def feed(self, line: str) -> None:
        """Take one output line (without its newline)."""
        self.tail.append(line)
        if "no space left on device" in line.lower():
            self._disk_full = True
        if match := _STEP_ERROR.match(line):
            if not self._failed_step:
                self._failed_step = self._titles.get(match.group(1), "")
                self._step_reason = match.group(2).strip()
        elif match := _STEP_HEADER.match(line):
            self._titles.setdefault(match.group(1), match.group(2).strip())
        elif match := _STEP_SUMMARY.match(line):
            self._summary_step = self._summary_step or match.group(1).strip()
        elif match := _FINAL_ERROR.match(line.strip()):
            self._final_reason = match.group(1).strip()

    def failure(self) -> BuildFailure:
        """What went wrong, as far as the log says."""
        step = self._failed_step or self._summary_step
        reason = self._step_reason or self._final_reason
        if not reason:
            meaningful = [ln.strip() for ln in self.tail if ln.strip() and ln.strip() != "------"]
            reason = meaningful[-1] if meaningful else ""
        return BuildFailure(step=step, reason=reason, disk_full=self._disk_full)


def progress_printer(show: Callable[[str], None]) -> Callable[[str], None]:
    """A build-log sink that shows each step's title once, as BuildKit starts it: the
    progress a terminal gets without -v."""
    seen: set[str] = set()

    def take(line: str) -> None:
        match = _STEP_HEADER.match(line)
        if match and match.group(1) not in seen:
            seen.add(match.group(1))
            show(f"  {_shorten(match.group(2).strip(), _MAX_TITLE)}")

    return take


def parse_build_failure(log: str) -> BuildFailure:
    """The failing step and reason in a whole captured BuildKit log."""
    reader = BuildLog()
    for line in log.splitlines():
        reader.feed(line)
    return reader.failure()


def build_error(tag: str, dockerfile: Path, log: BuildLog) -> EngineError:
    """The error for a failed build of ``tag``, from what its log says."""
    tail = "\n".join(log.tail)
    daemon = daemon_error(tail)
    if daemon is not None:
        return daemon
    failure = log.failure()
    if failure.disk_full:
        return BuildError(
            f"docker build of {tag} failed because the disk is full (no space left on device)",
            hint="free space (docker system prune, docker builder prune) and build again",
            detail=tail,
            step=failure.step,
            disk_full=True,
        )
    reason = _shorten(failure.reason, _TAIL_CHARS) or "no reason printed"
    if failure.step:
        return BuildError(
            f"docker build of {tag} failed at step {_shorten(failure.step, _MAX_TITLE)}: {reason}",
            hint="the last lines of the build output are above; -v shows all of it",
            detail=tail,
            step=failure.step,
        )
    return BuildError(
        f"docker build of {tag} failed: {reason}",
        hint=f"check {dockerfile.name} and the build context; the last lines of the build "
        "output are above, -v shows all of it",
        detail=tail,
    )


class SecretMask:
    """Replaces the contents of build-secret files in output, line by line, with ``[secret:id]``
    (a RUN step that prints a secret must not carry it into an echo or an error)."""

    def __init__(self, needles: Mapping[str, str]) -> None:
        # Longest first, so a secret line that contains another is replaced whole.
        self._needles = sorted(needles.items(), key=lambda item: (-len(item[0]), item[0]))

    @classmethod
    def from_files(cls, secrets: Mapping[str, Path]) -> SecretMask:
        """Needles from every line (at least 4 characters) of each secret file."""
        needles: dict[str, str] = {}
        for secret_id, path in secrets.items():
            try:
                with path.open("rb") as handle:
                    text = handle.read(_SECRET_READ_LIMIT).decode("utf-8", errors="replace")
            except OSError:
                continue
            for raw in text.splitlines():
                needle = raw.strip()
                if len(needle) >= _SECRET_MIN_NEEDLE:
                    needles.setdefault(needle, f"[secret:{secret_id}]")
        return cls(needles)

    def __call__(self, line: str) -> str:
        for needle, replacement in self._needles:
            if needle in line:
                line = line.replace(needle, replacement)
        return line


def mount_spec(mount: Mount) -> str:
    # --mount is parsed as one CSV record, so a path holding a comma or quote must be quoted.
    fields = ["type=bind", f"source={mount.source}", f"target={mount.target}"]
    if mount.read_only:
        fields.append("readonly")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def daemon_error(output: str) -> EngineUnavailableError | None:
    lowered = output.lower()
    if _DAEMON_DENIED in lowered:
        return EngineUnavailableError(
            f"the docker daemon refused this user ({tail_text(output)})",
            hint="add the user to the docker group or run with sudo",
            detail=tail_lines(output),
        )
    if any(marker in lowered for marker in _DAEMON_DOWN):
        return EngineUnavailableError(
            f"the docker daemon is not running ({tail_text(output)})",
            hint="start it (sudo dockerd) or set DOCKER_HOST",
            detail=tail_lines(output),
        )
    return None


def tail_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]


def tail_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
