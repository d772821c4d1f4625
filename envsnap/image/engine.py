"""The only module that talks to the container engine: build, push, pull, tag, inspect, remove, run.

It drives the docker CLI, not the Python docker SDK (no ``import docker``): the SDK cannot pass
BuildKit secrets (``--secret``, ``RUN --mount=type=secret``), which keep credentials and CA bundles
out of image layers. The CLI is resolved once (``Engine.detect``), every command line can be echoed
before it runs, and every failure becomes one ``EngineError`` with the tail of docker's output.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsnap.errors import EnvsnapError, InterruptError
from envsnap.image.reference import familiar_name, parse_reference

Echo = Callable[[str], None]
LineSink = Callable[[str], None]

# docker's own exit code for "the CLI or daemon failed", and ours for "stopped at the timeout",
# the same convention as timeout(1).
DOCKER_RUN_FAILED = 125
EXIT_TIMEOUT = 124

_QUICK_TIMEOUT_S = 120.0
# How long the CLI gets to cancel a build (BuildKit cancels the solve on SIGINT) before SIGKILL.
_STOP_GRACE_S = 10.0
_TAIL_LINES = 60
_TAIL_CHARS = 400
_MAX_TITLE = 160
# CLI 23 and later route DOCKER_BUILDKIT=1 builds to the buildx plugin; older CLIs have BuildKit
# built in.
_BUILDX_REQUIRED_FROM = 23
_SECRET_READ_LIMIT = 4 * 1024 * 1024
_SECRET_MIN_NEEDLE = 4

_DAEMON_DOWN = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
)
_DAEMON_DENIED = "permission denied while trying to connect to the docker daemon"
_NO_SUCH_IMAGE = ("no such image", "no such object")
_NO_SUCH_CONTAINER = "no such container"

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
    return parsed is not None and parsed[0] < _BUILDX_REQUIRED_FROM


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

    def __init__(self, tail_lines: int = _TAIL_LINES) -> None:
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
    daemon = _daemon_error(tail)
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


# ----------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class _Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}".strip()


@dataclass(frozen=True, kw_only=True)
class Engine:
    """A resolved docker CLI and the environment its commands run with."""

    cli: str
    client_version: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    echo: Echo | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------- detection

    @classmethod
    def detect(cls, env: Mapping[str, str], *, echo: Echo | None = None) -> Engine:
        """The docker CLI to use: ``ENVSNAP_DOCKER`` when set, else the first of ``docker`` on
        PATH and ``/usr/bin/docker`` that can run BuildKit builds. Does not contact the daemon."""
        env = dict(env)
        search_path = env.get("PATH", os.defpath)
        chosen = env.get("ENVSNAP_DOCKER", "").strip()
        if chosen:
            path = shutil.which(chosen, path=search_path)
            if path is None:
                raise EngineUnavailableError(
                    f"ENVSNAP_DOCKER is set to {chosen!r}, which is not an executable docker CLI",
                    hint="point it at one (for example /usr/bin/docker) or unset it",
                )
            return cls(cli=path, client_version=_probe_version(path, env, echo), env=env, echo=echo)

        candidates: list[str] = []
        for name in ("docker", "/usr/bin/docker"):
            path = shutil.which(name, path=search_path)
            if path and all(os.path.realpath(path) != os.path.realpath(c) for c in candidates):
                candidates.append(path)
        if not candidates:
            raise EngineUnavailableError(
                "no docker CLI found",
                hint="install docker (Debian: apt-get install docker.io) or set ENVSNAP_DOCKER",
            )
        tried: list[str] = []
        for path in candidates:
            version = _probe_version(path, env, echo)
            if has_builtin_buildkit(version) or _probe_buildx(path, env, echo):
                return cls(cli=path, client_version=version, env=env, echo=echo)
            tried.append(f"{path} {version or '(version unknown)'}")
        raise EngineUnavailableError(
            f"no docker CLI that can run BuildKit builds was found (tried {', '.join(tried)}; "
            f"version {_BUILDX_REQUIRED_FROM} and later need the buildx plugin)",
            hint="install the docker buildx plugin or Debian's docker.io (its CLI has BuildKit "
            "built in), or set ENVSNAP_DOCKER",
        )

    def info(self) -> EngineInfo:
        """The daemon's version; ``EngineUnavailableError`` when it does not answer."""
        result = self._call(("version", "--format", "{{json .}}"))
        data: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            loaded = json.loads(result.stdout or "{}")
            data = loaded if isinstance(loaded, dict) else {}
        server = data.get("Server") or {}
        if result.code != 0 or not server.get("Version"):
            raise _daemon_error(result.stderr) or EngineUnavailableError(
                f"the docker daemon is not running ({_tail(result.output) or 'no answer'})",
                hint="start it (sudo dockerd) or set DOCKER_HOST",
                detail=_tail_lines(result.output),
            )
        client = data.get("Client") or {}
        return EngineInfo(
            server_version=str(server.get("Version", "")),
            api_version=str(server.get("APIVersion") or server.get("ApiVersion") or ""),
            cli=self.cli,
            client_version=str(client.get("Version") or self.client_version),
        )

    # ---------------------------------------------------------------------- images

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """What the engine knows about a local image; None when it is not present."""
        result = self._call(("image", "inspect", "--format", "{{json .}}", ref))
        if result.code != 0:
            if any(marker in result.stderr.lower() for marker in _NO_SUCH_IMAGE):
                return None
            raise self._failed(f"docker image inspect {ref}", result)
        try:
            return parse_image_info(result.stdout)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise EngineError(
                f"docker image inspect {ref} printed something that is not image JSON ({exc})",
                hint="check the docker CLI (ENVSNAP_DOCKER) matches the daemon",
                detail=_tail_lines(result.stdout),
            ) from None

    def image_exists(self, ref: str) -> bool:
        """Whether the image is present locally."""
        return self.inspect_image(ref) is not None

    def pull(self, ref: str) -> None:
        """Pull ``ref``; ``ImageNotFoundError`` when no registry has it."""
        try:
            result = self._call(("pull", "--quiet", ref), timeout=None)
        except KeyboardInterrupt:
            raise InterruptError(f"interrupted while pulling {ref}") from None
        if result.code == 0:
            return
        daemon = _daemon_error(result.stderr)
        if daemon is not None:
            raise daemon
        lowered = result.stderr.lower()
        hint = "check the name, build it, or push it to a registry this host can reach"
        if "unauthorized" in lowered or "authentication required" in lowered:
            hint = "log in to its registry (docker login) or check the name"
        raise ImageNotFoundError(
            f"image {ref} is not present locally and could not be pulled ({_tail(result.stderr)})",
            hint=hint,
            detail=_tail_lines(result.output),
        )

    def resolve_digest(self, ref: str, *, pull: bool = True) -> str:
        """``repository@sha256:...`` pinning ``ref``. A digest reference is returned (without
        its tag) when present or pullable; for a tag, the local image's registry digest, pulling
        first when the image is absent and ``pull`` is true."""
        parsed = parse_reference(ref, "the image")
        repository, digest = parsed.repository, parsed.digest
        if digest:
            pinned = str(parsed.with_digest(digest))
            if not self.image_exists(pinned):
                self._pull_or_fail(pinned, pull)
            return pinned
        info = self.inspect_image(ref)
        if info is None:
            self._pull_or_fail(ref, pull)
            info = self.inspect_image(ref)
            if info is None:
                raise ImageNotFoundError(
                    f"image {ref} was pulled but the engine does not list it",
                    hint="pull it by hand (docker pull) and try again",
                )
        found = pick_repo_digest(info.repo_digests, repository)
        if found is None:
            raise ImageNotPinnableError(
                f"image {ref} has no registry digest (it exists only locally)",
                hint="push it to a registry (e.g. docker push) or pass a base pinned by digest",
            )
        return found

    def tag(self, src: str, dst: str) -> None:
        """Give image ``src`` the extra name ``dst``."""
        result = self._call(("tag", src, dst))
        if result.code != 0:
            if any(marker in result.stderr.lower() for marker in _NO_SUCH_IMAGE):
                raise ImageNotFoundError(
                    f"cannot tag {src} as {dst}: no such image",
                    hint="build or pull it first",
                    detail=_tail_lines(result.output),
                )
            raise self._failed(f"docker tag {src} {dst}", result)

    def push(self, ref: str) -> str:
        """Push ``ref``; the registry digest ``repository@sha256:...`` it was stored under."""
        try:
            result = self._call(("push", ref), timeout=None)
        except KeyboardInterrupt:
            raise InterruptError(f"interrupted while pushing {ref}") from None
        if result.code != 0:
            daemon = _daemon_error(result.stderr)
            if daemon is not None:
                raise daemon
            raise EngineError(
                f"docker push {ref} failed ({_tail(result.stderr)})",
                hint="check that the registry is reachable and that you are logged in "
                "(docker login)",
                detail=_tail_lines(result.output),
            )
        repository = parse_reference(ref, "the pushed image").repository
        digest = parse_push_digest(result.stdout)
        if digest:
            return f"{repository}@{digest}"
        info = self.inspect_image(ref)
        found = pick_repo_digest(info.repo_digests, repository) if info else None
        if found is None or familiar_name(found.partition("@")[0]) != familiar_name(repository):
            raise EngineError(
                f"docker push {ref} succeeded but printed no digest and the image lists none "
                "for that repository",
                hint="inspect the image (docker image inspect) and report this",
                detail=_tail_lines(result.output),
            )
        return found

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove the name ``ref`` (and the image when it was the last); absent is fine."""
        args = ("image", "rm", *(("--force",) if force else ()), ref)
        result = self._call(args)
        if result.code != 0 and not any(m in result.stderr.lower() for m in _NO_SUCH_IMAGE):
            raise self._failed(f"docker image rm {ref}", result)

    # ----------------------------------------------------------------------- build

    def build(
        self,
        *,
        context: Path,
        dockerfile: Path,
        tag: str,
        secrets: Mapping[str, Path] | None = None,
        build_args: Mapping[str, str] | None = None,
        add_hosts: Sequence[str] = (),
        network: str | None = None,
        no_cache: bool = False,
        on_line: LineSink | None = None,
    ) -> str:
        """Build with BuildKit and return the image id (``sha256:...``). Output lines go to
        ``on_line`` as they come, with secret-file contents masked. ``no_cache`` builds every
        step afresh (the base image is still used by its digest)."""
        secrets = dict(secrets or {})
        for secret_id, path in sorted(secrets.items()):
            if not path.is_file():
                raise BuildError(
                    f"the build secret {secret_id!r} names {path}, which is not a file",
                    hint="create it or leave that secret out",
                )
        mask = SecretMask.from_files(secrets)
        log = BuildLog()

        def take(line: str) -> None:
            line = mask(line)
            log.feed(line)
            if on_line is not None:
                on_line(line)

        with tempfile.TemporaryDirectory(prefix="envsnap-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            args: list[str] = ["build", "--progress=plain", "--iidfile", str(iidfile)]
            if no_cache:
                args.append("--no-cache")
            for secret_id, path in sorted(secrets.items()):
                args += ["--secret", f"id={secret_id},src={path}"]
            for key, value in sorted((build_args or {}).items()):
                args += ["--build-arg", f"{key}={value}"]
            for host in add_hosts:
                args += ["--add-host", host]
            if network:
                args += ["--network", network]
            args += ["-f", str(dockerfile), "-t", tag, str(context)]

            buildkit = {"DOCKER_BUILDKIT": "1"}
            process = self._spawn(args, extra_env=buildkit, shown_env=buildkit)
            try:
                _pump(process, take, deadline=None)
                code = process.wait()
            except KeyboardInterrupt:
                _stop(process)
                raise InterruptError("interrupted during the build; nothing was recorded") from None
            finally:
                _close(process)
            if code != 0:
                raise build_error(tag, dockerfile, log)
            try:
                image_id = iidfile.read_text(encoding="utf-8").strip()
            except OSError:
                image_id = ""
        if not image_id:
            info = self.inspect_image(tag)
            if info is None:
                raise BuildError(
                    f"docker build of {tag} finished but left no image id and no image",
                    hint="build again with -v to see the whole output",
                    detail="\n".join(log.tail),
                )
            image_id = info.id
        return image_id

    # ------------------------------------------------------------------------- run

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        name: str,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str | None = None,
        network: bool = False,
        gpus: str | None = None,
        timeout: float | None = None,
        on_output: LineSink | None = None,
    ) -> int:
        """Run ``argv`` in a fresh container in the foreground and return its exit code;
        ``EXIT_TIMEOUT`` (124) when it ran past ``timeout`` seconds and was stopped and removed.
        Environment values travel in the CLI's environment, never on its command line."""
        env = dict(env or {})
        args: list[str] = [
            "run",
            "--rm",
            "--name",
            name,
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
            "ALL",
        ]
        if not network:
            args += ["--network", "none"]
        if gpus:
            args += ["--gpus", gpus]
        if user:
            args += ["--user", user]
        if workdir:
            args += ["--workdir", workdir]
        for key in sorted(env):
            args += ["--env", key]
        for mount in mounts:
            args += ["--mount", _mount_spec(mount)]
        args += [image, *argv]

        tail: deque[str] = deque(maxlen=_TAIL_LINES)

        def take(line: str) -> None:
            tail.append(line)
            if on_output is not None:
                on_output(line)

        deadline = None if timeout is None else time.monotonic() + timeout
        # Values travel in the CLI's environment (``--env NAME``), so no echo or ps shows them.
        process = self._spawn(args, extra_env=env)
        code = EXIT_TIMEOUT
        try:
            finished = _pump(process, take, deadline=deadline)
            if finished:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    code = process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    finished = False
            if not finished:
                self._remove_container(name, process)
                return EXIT_TIMEOUT
        except KeyboardInterrupt:
            self._remove_container(name, process)
            raise InterruptError(
                f"interrupted while the container {name} ran; it was stopped and removed"
            ) from None
        finally:
            _close(process)
        text = "\n".join(tail)
        if code == DOCKER_RUN_FAILED and re.search(r"^docker: ", text, re.MULTILINE):
            if "unable to find image" in text.lower():
                raise ImageNotFoundError(
                    f"image {image} is not present locally and could not be pulled ({_tail(text)})",
                    hint="build it (envsnap build) or pull it first",
                    detail=text,
                )
            raise _daemon_error(text) or EngineError(
                f"docker run of {image} failed before the command started "
                f"({_tail(text) or 'no output'})",
                hint="check the image name and the run options",
                detail=text,
            )
        return code

    def _remove_container(self, name: str, process: subprocess.Popen[bytes]) -> None:
        # Removing the container ends the attached CLI; a CLI that does not end is killed, and
        # the container removed again in case the CLI was still creating it.
        self._force_remove(name)
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()
            self._force_remove(name)

    def _force_remove(self, name: str) -> None:
        result = self._call(("rm", "--force", name))
        if result.code != 0 and _NO_SUCH_CONTAINER not in result.stderr.lower():
            raise self._failed(f"docker rm --force {name}", result)

    # ------------------------------------------------------------------- plumbing

    def _environment(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self.env, **(extra_env or {})}

    def _call(self, args: Sequence[str], *, timeout: float | None = _QUICK_TIMEOUT_S) -> _Result:
        argv = [self.cli, *args]
        _echo(self.echo, argv)
        try:
            return _execute(argv, self._environment(), timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"docker {args[0]} did not finish within {timeout:.0f} s",
                hint="check that the docker daemon is healthy (docker info)",
            ) from None
        except OSError as exc:
            raise EngineUnavailableError(
                f"the docker CLI {self.cli} could not be run ({exc.strerror or exc})",
                hint="install docker (Debian: apt-get install docker.io) or set ENVSNAP_DOCKER",
            ) from None

    def _spawn(
        self,
        args: Sequence[str],
        *,
        extra_env: Mapping[str, str],
        shown_env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        argv = [self.cli, *args]
        _echo(self.echo, argv, shown_env)
        try:
            # Its own session: a terminal Ctrl-C reaches only us, and we stop the CLI the one
            # way that cancels cleanly (SIGINT: BuildKit cancels the solve).
            return subprocess.Popen(
                argv,
                env=self._environment(extra_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineUnavailableError(
                f"the docker CLI {self.cli} could not be run ({exc.strerror or exc})",
                hint="install docker (Debian: apt-get install docker.io) or set ENVSNAP_DOCKER",
            ) from None

    def _pull_or_fail(self, ref: str, pull: bool) -> None:
        if not pull:
            raise ImageNotFoundError(
                f"image {ref} is not present locally",
                hint="pull or build it first, or allow pulling",
            )
        self.pull(ref)

    def _failed(self, what: str, result: _Result) -> EngineError:
        return _daemon_error(result.stderr) or EngineError(
            f"{what} failed ({_tail(result.stderr) or f'exit code {result.code}'})",
            hint="check the docker daemon (docker info) and try again",
            detail=_tail_lines(result.output),
        )


# ------------------------------------------------------------------------- module helpers


def _execute(argv: Sequence[str], env: Mapping[str, str], timeout: float | None) -> _Result:
    done = subprocess.run(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return _Result(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )


def _probe_version(cli: str, env: Mapping[str, str], echo: Echo | None) -> str:
    # The client version prints even when the daemon is down (exit code 1), so only stdout counts.
    argv = [cli, "version", "--format", "{{.Client.Version}}"]
    _echo(echo, argv)
    try:
        return _execute(argv, env, _QUICK_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _probe_buildx(cli: str, env: Mapping[str, str], echo: Echo | None) -> bool:
    argv = [cli, "buildx", "version"]
    _echo(echo, argv)
    try:
        return _execute(argv, env, _QUICK_TIMEOUT_S).code == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _echo(echo: Echo | None, argv: Sequence[str], prefix: Mapping[str, str] | None = None) -> None:
    if echo is None:
        return
    assignments = [f"{key}={shlex.quote(value)}" for key, value in (prefix or {}).items()]
    echo(" ".join([*assignments, shlex.join(argv)]))


def _pump(process: subprocess.Popen[bytes], on_line: LineSink, *, deadline: float | None) -> bool:
    """Feed the process's output to ``on_line`` line by line until it closes (True) or the
    deadline passes (False)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return False
            if not selector.select(timeout=wait):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                on_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
    if pending:
        on_line(pending.rstrip(b"\r").decode("utf-8", errors="replace"))
    return True


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a CLI started in its own session: SIGINT (the CLI cancels its request and BuildKit
    cancels the build), then SIGKILL when it does not end within the grace period."""
    if process.poll() is not None:
        return
    _kill_group(process, signal.SIGINT)
    try:
        process.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(process, signal.SIGKILL)
        process.wait()


def _close(process: subprocess.Popen[bytes]) -> None:
    if process.stdout is not None:
        process.stdout.close()
    if process.poll() is None:
        _kill_group(process, signal.SIGKILL)
        process.wait()


def _mount_spec(mount: Mount) -> str:
    # --mount is parsed as one CSV record, so a path holding a comma or quote must be quoted.
    fields = ["type=bind", f"source={mount.source}", f"target={mount.target}"]
    if mount.read_only:
        fields.append("readonly")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _daemon_error(output: str) -> EngineUnavailableError | None:
    lowered = output.lower()
    if _DAEMON_DENIED in lowered:
        return EngineUnavailableError(
            f"the docker daemon refused this user ({_tail(output)})",
            hint="add the user to the docker group or run with sudo",
            detail=_tail_lines(output),
        )
    if any(marker in lowered for marker in _DAEMON_DOWN):
        return EngineUnavailableError(
            f"the docker daemon is not running ({_tail(output)})",
            hint="start it (sudo dockerd) or set DOCKER_HOST",
            detail=_tail_lines(output),
        )
    return None


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TAIL_CHARS else "…" + text[-_TAIL_CHARS:]


def _tail_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
