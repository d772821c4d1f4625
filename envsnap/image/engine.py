"""The only module that talks to the container engine: build, push, pull, tag, inspect, remove, run.

It drives the docker CLI, not the Python docker SDK (no ``import docker``): the SDK cannot pass
BuildKit secrets (``--secret``, ``RUN --mount=type=secret``), which keep credentials and CA bundles
out of image layers. The CLI is resolved once (``Engine.detect``), every command line can be echoed
before it runs, and every failure becomes one ``EngineError`` with the tail of docker's output.
When the engine is the one on this machine's Unix socket, the quick questions and a rerun
container's lifecycle go over its HTTP API instead (engineapi.py), the same requests the CLI
makes without a process each; a socket that fails sends the call back to the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envsnap.errors import InterruptError
from envsnap.image.dockeroutput import (
    BUILDX_REQUIRED_FROM,
    DOCKER_RUN_FAILED,
    EXIT_TIMEOUT,
    NO_SUCH_CONTAINER,
    NO_SUCH_IMAGE,
    TAIL_LINES,
    BuildError,
    BuildLog,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
    ImageInfo,
    ImageNotFoundError,
    ImageNotPinnableError,
    Mount,
    SecretMask,
    build_error,
    daemon_error,
    has_builtin_buildkit,
    mount_spec,
    parse_image_info,
    parse_push_digest,
    pick_repo_digest,
    tail_lines,
    tail_text,
)
from envsnap.image.engineapi import ApiError, EngineApi, Response, local_socket
from envsnap.image.process import (
    STOP_GRACE_S,
    CallResult,
    ProcessRunner,
    StreamingProcess,
    SubprocessRunner,
)
from envsnap.imageref import familiar_name, parse_reference

Echo = Callable[[str], None]
LineSink = Callable[[str], None]
_QUICK_TIMEOUT_S = 120.0


@dataclass(frozen=True, kw_only=True)
class Engine:
    """A resolved docker CLI and the environment its commands run with."""

    cli: str
    client_version: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    echo: Echo | None = field(default=None, repr=False, compare=False)
    # How the CLI's processes run: injectable, the way pypa/build takes a runner, so a unit test
    # sees every command line without a daemon.
    runner: ProcessRunner = field(default_factory=SubprocessRunner, repr=False, compare=False)
    # The engine's API on this machine's Unix socket, when the CLI would reach that engine
    # (engineapi.local_socket); None: every call goes through the CLI.
    api: EngineApi | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------- detection

    @classmethod
    def detect(
        cls,
        env: Mapping[str, str],
        *,
        echo: Echo | None = None,
        runner: ProcessRunner | None = None,
    ) -> Engine:
        """The docker CLI to use: ``ENVSNAP_DOCKER`` when set, else the first of ``docker`` on
        PATH and ``/usr/bin/docker`` that can run BuildKit builds. Does not contact the daemon."""
        env = dict(env)
        api = _local_api(env) if runner is None else None  # a test's runner sees every call
        runner = runner or SubprocessRunner()
        search_path = env.get("PATH", os.defpath)
        chosen = env.get("ENVSNAP_DOCKER", "").strip()
        if chosen:
            path = shutil.which(chosen, path=search_path)
            if path is None:
                raise EngineUnavailableError(
                    f"ENVSNAP_DOCKER is set to {chosen!r}, which is not an executable docker CLI",
                    hint="point it at one (for example /usr/bin/docker) or unset it",
                )
            # The CLI named is used as it is: its version is only told (info() asks for it).
            return cls(
                cli=path,
                client_version="" if api else _probe_version(runner, path, env, echo),
                env=env,
                echo=echo,
                runner=runner,
                api=api,
            )

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
            version = _probe_version(runner, path, env, echo)
            if has_builtin_buildkit(version) or _probe_buildx(runner, path, env, echo):
                return cls(
                    cli=path, client_version=version, env=env, echo=echo, runner=runner, api=api
                )
            tried.append(f"{path} {version or '(version unknown)'}")
        raise EngineUnavailableError(
            f"no docker CLI that can run BuildKit builds was found (tried {', '.join(tried)}; "
            f"version {BUILDX_REQUIRED_FROM} and later need the buildx plugin)",
            hint="install the docker buildx plugin or Debian's docker.io (its CLI has BuildKit "
            "built in), or set ENVSNAP_DOCKER",
        )

    def info(self) -> EngineInfo:
        """The daemon's version; ``EngineUnavailableError`` when it does not answer."""
        server = self._api_json("GET", "/version")
        if isinstance(server, dict) and server.get("Version"):
            return EngineInfo(
                server_version=str(server["Version"]),
                api_version=str(server.get("ApiVersion") or ""),
                cli=self.cli,
                client_version=self.client_version,
            )
        result = self._call(("version", "--format", "{{json .}}"))
        data: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            loaded = json.loads(result.stdout or "{}")
            data = loaded if isinstance(loaded, dict) else {}
        server = data.get("Server") or {}
        if result.code != 0 or not server.get("Version"):
            raise daemon_error(result.stderr) or EngineUnavailableError(
                f"the docker daemon is not running ({tail_text(result.output) or 'no answer'})",
                hint="start it (sudo dockerd) or set DOCKER_HOST",
                detail=tail_lines(result.output),
            )
        client = data.get("Client") or {}
        return EngineInfo(
            server_version=str(server.get("Version", "")),
            api_version=str(server.get("APIVersion") or server.get("ApiVersion") or ""),
            cli=self.cli,
            client_version=str(client.get("Version") or self.client_version),
        )

    def host_name(self) -> str:
        """The name of the host the daemon runs on (``docker info``'s Name); "" when unknown."""
        result = self._call(("info", "--format", "{{.Name}}"))
        return result.stdout.strip() if result.code == 0 else ""

    def describe(self) -> str:
        """Which engine this is, for a record: its host's name and how the CLI reaches it. The
        local engine's host is this machine (no ``docker info``, which costs a fifth of a
        second); another one is asked."""
        where = self.env.get("DOCKER_HOST", "") or self.env.get("DOCKER_CONTEXT", "")
        if not where:
            import socket

            return f"{socket.gethostname()} (the local engine)"
        return f"{self.host_name() or 'unknown host'} ({where})"

    # ---------------------------------------------------------------------- images

    def inspect_image(self, ref: str) -> ImageInfo | None:
        """What the engine knows about a local image; None when it is not present."""
        if self.api is not None:
            answer = self._api("GET", f"/images/{_quote(ref)}/json")
            if answer is not None and answer.status in (200, 404):
                if answer.status == 404:
                    return None
                with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
                    return parse_image_info(answer.body.decode("utf-8"))
        result = self._call(("image", "inspect", "--format", "{{json .}}", ref))
        if result.code != 0:
            if any(marker in result.stderr.lower() for marker in NO_SUCH_IMAGE):
                return None
            raise self._failed(f"docker image inspect {ref}", result)
        try:
            return parse_image_info(result.stdout)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise EngineError(
                f"docker image inspect {ref} printed something that is not image JSON ({exc})",
                hint="check the docker CLI (ENVSNAP_DOCKER) matches the daemon",
                detail=tail_lines(result.stdout),
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
        daemon = daemon_error(result.stderr)
        if daemon is not None:
            raise daemon
        lowered = result.stderr.lower()
        hint = "check the name, build it, or push it to a registry this host can reach"
        if "unauthorized" in lowered or "authentication required" in lowered:
            hint = "log in to its registry (docker login) or check the name"
        raise ImageNotFoundError(
            f"image {ref} is not present locally and could not be pulled "
            f"({tail_text(result.stderr)})",
            hint=hint,
            detail=tail_lines(result.output),
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
            if any(marker in result.stderr.lower() for marker in NO_SUCH_IMAGE):
                raise ImageNotFoundError(
                    f"cannot tag {src} as {dst}: no such image",
                    hint="build or pull it first",
                    detail=tail_lines(result.output),
                )
            raise self._failed(f"docker tag {src} {dst}", result)

    def push(self, ref: str) -> str:
        """Push ``ref``; the registry digest ``repository@sha256:...`` it was stored under."""
        try:
            result = self._call(("push", ref), timeout=None)
        except KeyboardInterrupt:
            raise InterruptError(f"interrupted while pushing {ref}") from None
        if result.code != 0:
            daemon = daemon_error(result.stderr)
            if daemon is not None:
                raise daemon
            raise EngineError(
                f"docker push {ref} failed ({tail_text(result.stderr)})",
                hint="check that the registry is reachable and that you are logged in "
                "(docker login)",
                detail=tail_lines(result.output),
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
                detail=tail_lines(result.output),
            )
        return found

    def remove_image_later(self, ref: str) -> None:
        """Have the engine remove the name ``ref`` (the image with it, when it was the last) by a
        docker process envsnap does not wait for, as git leaves its automatic gc to run on:
        removing an image's layers takes the engine a good half second. Whether it could is
        not known; one that could not is left as ``docker image rm`` would leave it."""
        argv = [self.cli, "image", "rm", ref]
        _echo(self.echo, argv)
        try:
            self.runner.detach(argv, self._environment())
        except OSError as exc:
            raise EngineUnavailableError(
                f"the docker CLI {self.cli} could not be run ({exc.strerror or exc})",
                hint="install docker (Debian: apt-get install docker.io) or set ENVSNAP_DOCKER",
            ) from None

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove the name ``ref`` (and the image when it was the last); absent is fine."""
        args = ("image", "rm", *(("--force",) if force else ()), ref)
        result = self._call(args)
        if result.code != 0 and not any(m in result.stderr.lower() for m in NO_SUCH_IMAGE):
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
                process.pump(take, deadline=None)
                code = process.wait()
            except KeyboardInterrupt:
                process.stop()
                raise InterruptError("interrupted during the build; nothing was recorded") from None
            finally:
                process.close()
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
        args = [
            "run",
            "--rm",
            *container_flags(name, mounts, env, workdir, user, network, gpus),
            image,
            *argv,
        ]

        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def take(line: str) -> None:
            tail.append(line)
            if on_output is not None:
                on_output(line)

        deadline = None if timeout is None else time.monotonic() + timeout
        # Values travel in the CLI's environment (``--env NAME``), so no echo or ps shows them.
        process = self._spawn(args, extra_env=env)
        code = EXIT_TIMEOUT
        try:
            finished = process.pump(take, deadline=deadline)
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
            process.close()
        text = "\n".join(tail)
        if code == DOCKER_RUN_FAILED and re.search(r"^docker: ", text, re.MULTILINE):
            if "unable to find image" in text.lower():
                raise ImageNotFoundError(
                    f"image {image} is not present locally and could not be pulled "
                    f"({tail_text(text)})",
                    hint="build it (envsnap build) or pull it first",
                    detail=text,
                )
            raise daemon_error(text) or EngineError(
                f"docker run of {image} failed before the command started "
                f"({tail_text(text) or 'no output'})",
                hint="check the image name and the run options",
                detail=text,
            )
        return code

    def run_isolated(
        self,
        image: str,
        argv: Sequence[str],
        *,
        name: str,
        files_in: bytes,
        copy_out: str,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str | None = None,
        network: bool = False,
        gpus: str | None = None,
        timeout: float | None = None,
        on_output: LineSink | None = None,
    ) -> IsolatedRun:
        """Run ``argv`` in a fresh container whose inputs go in by ``docker cp`` (``files_in``, a
        tar archive extracted at ``/``; docker makes root its owner and keeps its modes) and whose
        ``copy_out`` directory
        comes back the same way, so no path of this machine is mounted and the engine may be
        another host's (``DOCKER_HOST``, ``docker context``). Only ``mounts`` (paths on the
        engine's own host) are bind-mounted. The container is removed in every case; a timeout
        or Ctrl-C stops it first and still brings ``copy_out`` back."""
        env = dict(env or {})
        if self.api is not None and not gpus and self._api_json("GET", "/_ping") == "OK":
            # GPU requests stay with the CLI, which turns --gpus into the engine's device requests.
            return self._run_isolated_api(
                self.api,
                image,
                argv,
                name=name,
                files_in=files_in,
                copy_out=copy_out,
                mounts=mounts,
                env=env,
                workdir=workdir,
                user=user,
                network=network,
                timeout=timeout,
                on_output=on_output,
            )
        create = [
            "create",
            *container_flags(name, mounts, env, workdir, user, network, gpus),
            image,
            *argv,
        ]
        result = self._call(create, extra_env=env)
        if result.code != 0:
            lowered = result.stderr.lower()
            if "unable to find image" in lowered or "no such image" in lowered:
                raise ImageNotFoundError(
                    f"image {image} is not present on the engine and could not be pulled "
                    f"({tail_text(result.stderr)})",
                    hint="push it (envsnap build --push) to a registry that engine reaches",
                    detail=tail_lines(result.output),
                )
            raise self._failed(f"docker create {image}", result)
        try:
            copied = self._call(("cp", "-", f"{name}:/"), stdin=files_in)
            if copied.code != 0:
                raise self._failed(f"docker cp into {name}", copied)
            code, timed_out, interrupted = self._attach(name, timeout, on_output)
            out = self._call(("cp", f"{name}:{copy_out}", "-"), timeout=None)
            archive = out.raw if out.code == 0 else b""
        finally:
            self._force_remove(name)
        return IsolatedRun(
            exit_code=EXIT_TIMEOUT if timed_out else code,
            timed_out=timed_out,
            interrupted=interrupted,
            archive=archive,
        )

    def _attach(
        self, name: str, timeout: float | None, on_output: LineSink | None
    ) -> tuple[int, bool, bool]:
        """Start a created container attached; its exit code, whether it timed out, and whether
        Ctrl-C stopped it. A stopped container is killed, not removed (its files come out)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        process = self._spawn(("start", "--attach", name), extra_env={})
        try:
            finished = process.pump(on_output or (lambda _line: None), deadline=deadline)
            if finished:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    return process.wait(timeout=remaining), False, False
                except subprocess.TimeoutExpired:
                    pass
            self._kill_container(name, process)
            return EXIT_TIMEOUT, True, False
        except KeyboardInterrupt:
            self._kill_container(name, process)
            return EXIT_INTERRUPTED, False, True
        finally:
            process.close()

    def _kill_container(self, name: str, process: StreamingProcess) -> None:
        self._call(("kill", name))
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()

    def _remove_container(self, name: str, process: StreamingProcess) -> None:
        # Removing the container ends the attached CLI; a CLI that does not end is killed, and
        # the container removed again in case the CLI was still creating it.
        self._force_remove(name)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            self._force_remove(name)

    def kill_container(self, name: str) -> None:
        """Kill a running container (a rerun cancelled from another thread); its files stay
        for ``run_isolated`` to copy out."""
        if self._api("POST", f"/containers/{_quote(name)}/kill") is not None:
            return
        self._call(("kill", name))

    # ------------------------------------------------------------ run, over the API

    def _run_isolated_api(
        self,
        api: EngineApi,
        image: str,
        argv: Sequence[str],
        *,
        name: str,
        files_in: bytes,
        copy_out: str,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        workdir: str,
        user: str | None,
        network: bool,
        timeout: float | None,
        on_output: LineSink | None,
    ) -> IsolatedRun:
        """``run_isolated`` over the engine's API: the requests ``docker create``, ``cp``,
        ``start --attach``, ``cp`` and ``rm`` make, in one process. The same container (the
        flags of ``container_flags``), the same archive in and out, the same removal in every
        case."""
        config = container_config(image, argv, mounts, env, workdir, user, network)
        path = f"/containers/{_quote(name)}"
        self._echo_api("POST", f"/containers/create?name={name}", image, *argv)
        try:
            created = api.request("POST", "/containers/create", query={"name": name},
                                  json_body=config)  # fmt: skip
        except OSError as exc:
            raise EngineUnavailableError(
                f"the docker engine's socket stopped answering ({exc})",
                hint="check the docker daemon (docker info) and try again",
            ) from None
        if created.status >= 400:
            message = created.message
            if created.status == 404 and "image" in message.lower():
                raise ImageNotFoundError(
                    f"image {image} is not present on the engine ({message})",
                    hint="build it (envsnap build), or push it to a registry that engine reaches",
                )
            raise EngineError(
                f"docker create {image} failed ({message})",
                hint="check the docker daemon (docker info) and try again",
            )
        try:
            self._echo_api("PUT", f"{path}/archive?path=/")
            self._api_checked(api, "PUT", f"{path}/archive", query={"path": "/"},
                              body=files_in, content_type="application/x-tar")  # fmt: skip
            code, timed_out, interrupted = self._attach_api(api, name, timeout, on_output)
            archive = b""
            self._echo_api("GET", f"{path}/archive?path={copy_out}")
            with contextlib.suppress(OSError):
                out = api.request("GET", f"{path}/archive", query={"path": copy_out},
                                  timeout=None)  # fmt: skip
                archive = out.body if out.status == 200 else b""
        finally:
            self._echo_api("DELETE", f"{path}?force=1")
            try:
                removed = api.request("DELETE", path, query={"force": "1"})
            except OSError:
                self._force_remove(name)
            else:
                if removed.status >= 400 and removed.status != 404:
                    self._force_remove(name)
        return IsolatedRun(
            exit_code=EXIT_TIMEOUT if timed_out else code,
            timed_out=timed_out,
            interrupted=interrupted,
            archive=archive,
        )

    def _attach_api(
        self, api: EngineApi, name: str, timeout: float | None, on_output: LineSink | None
    ) -> tuple[int, bool, bool]:
        """Start a created container attached (the attach first, so no output is missed); its
        exit code, whether it timed out, and whether Ctrl-C stopped it. A stopped container is
        killed, not removed (its files come out)."""
        path = f"/containers/{_quote(name)}"
        deadline = None if timeout is None else time.monotonic() + timeout
        self._echo_api("POST", f"{path}/attach?stream=1&stdout=1&stderr=1")
        try:
            attached = api.attach(name)
        except (ApiError, OSError) as exc:
            raise EngineError(
                f"attaching to the container {name} failed ({exc})",
                hint="check the docker daemon (docker info) and try again",
            ) from None
        try:
            self._echo_api("POST", f"{path}/start")
            self._api_checked(api, "POST", f"{path}/start")
            if attached.pump(on_output or (lambda _line: None), deadline=deadline):
                left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
                try:
                    waited = api.checked("POST", f"{path}/wait", timeout=left).json()
                    return int(waited.get("StatusCode", 0)), False, False
                except TimeoutError:
                    pass
                except (ApiError, OSError, ValueError, AttributeError) as exc:
                    raise EngineError(
                        f"waiting for the container {name} failed ({exc})",
                        hint="check the docker daemon (docker info) and try again",
                    ) from None
            self._kill_api(api, name)
            return EXIT_TIMEOUT, True, False
        except KeyboardInterrupt:
            self._kill_api(api, name)
            return EXIT_INTERRUPTED, False, True
        except OSError as exc:  # the socket failed while the output streamed
            raise EngineError(
                f"the docker engine's connection to the container {name} failed ({exc})",
                hint="check the docker daemon (docker info) and try again",
            ) from None
        finally:
            attached.close()

    def _kill_api(self, api: EngineApi, name: str) -> None:
        path = f"/containers/{_quote(name)}"
        self._echo_api("POST", f"{path}/kill")
        with contextlib.suppress(OSError):
            api.request("POST", f"{path}/kill")  # 409 (not running) and 404 are fine
            api.request("POST", f"{path}/wait", timeout=STOP_GRACE_S)

    def _api_checked(self, api: EngineApi, method: str, path: str, **kwargs: Any) -> None:
        try:
            api.checked(method, path, **kwargs)
        except ApiError as exc:
            raise EngineError(
                f"docker engine API {method} {path} failed ({exc.message})",
                hint="check the docker daemon (docker info) and try again",
            ) from None
        except OSError as exc:
            raise EngineUnavailableError(
                f"the docker engine's socket stopped answering ({exc})",
                hint="check the docker daemon (docker info) and try again",
            ) from None

    def _api(self, method: str, path: str) -> Response | None:
        """A quick request over the API; None when there is no API or its socket fails (the
        caller then asks the CLI, which says what is wrong)."""
        if self.api is None:
            return None
        self._echo_api(method, path)
        try:
            return self.api.request(method, path)
        except OSError:
            return None

    def _api_json(self, method: str, path: str) -> Any:
        answer = self._api(method, path)
        if answer is None or answer.status != 200:
            return None
        try:
            return answer.json()
        except ValueError:
            return answer.body.decode("utf-8", errors="replace")

    def _echo_api(self, method: str, path: str, *extra: str) -> None:
        if self.echo is not None:
            self.echo(" ".join(["docker engine API:", method, path, *map(shlex.quote, extra)]))

    def _force_remove(self, name: str) -> None:
        result = self._call(("rm", "--force", name))
        if result.code != 0 and NO_SUCH_CONTAINER not in result.stderr.lower():
            raise self._failed(f"docker rm --force {name}", result)

    # ------------------------------------------------------------------- plumbing

    def _environment(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self.env, **(extra_env or {})}

    def _call(
        self,
        args: Sequence[str],
        *,
        timeout: float | None = _QUICK_TIMEOUT_S,
        stdin: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> CallResult:
        argv = [self.cli, *args]
        _echo(self.echo, argv)
        try:
            return self.runner.call(argv, self._environment(extra_env), timeout, stdin=stdin)
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
    ) -> StreamingProcess:
        argv = [self.cli, *args]
        _echo(self.echo, argv, shown_env)
        try:
            return self.runner.spawn(argv, self._environment(extra_env))
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

    def _failed(self, what: str, result: CallResult) -> EngineError:
        return daemon_error(result.stderr) or EngineError(
            f"{what} failed ({tail_text(result.stderr) or f'exit code {result.code}'})",
            hint="check the docker daemon (docker info) and try again",
            detail=tail_lines(result.output),
        )


EXIT_INTERRUPTED = 130


@dataclass(frozen=True, kw_only=True)
class IsolatedRun:
    """How a container run without mounts of this machine ended, and the archive it left."""

    exit_code: int
    timed_out: bool
    interrupted: bool
    archive: bytes  # a tar of the copy_out directory; empty when it could not be read


def container_flags(
    name: str,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    workdir: str,
    user: str | None,
    network: bool,
    gpus: str | None,
) -> list[str]:
    """What every envsnap container gets: a name, no privileges, no capabilities, no network
    unless asked; environment values by name only (they travel in the CLI's environment)."""
    flags = [
        "--name",
        name,
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    if not network:
        flags += ["--network", "none"]
    if gpus:
        flags += ["--gpus", gpus]
    if user:
        flags += ["--user", user]
    if workdir:
        flags += ["--workdir", workdir]
    for key in sorted(env):
        flags += ["--env", key]
    for mount in mounts:
        flags += ["--mount", mount_spec(mount)]
    return flags


def container_config(
    image: str,
    argv: Sequence[str],
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    workdir: str,
    user: str | None,
    network: bool,
) -> dict[str, Any]:
    """The engine API's create body for what ``container_flags`` asks of the CLI: no
    privileges, no capabilities, no network unless asked, the environment's values."""
    host: dict[str, Any] = {"SecurityOpt": ["no-new-privileges"], "CapDrop": ["ALL"]}
    if not network:
        host["NetworkMode"] = "none"
    if mounts:
        host["Mounts"] = [
            {"Type": "bind", "Source": str(m.source), "Target": m.target, "ReadOnly": m.read_only}
            for m in mounts
        ]
    config: dict[str, Any] = {
        "Image": image,
        "Cmd": list(argv),
        "Env": [f"{key}={env[key]}" for key in sorted(env)],
        "HostConfig": host,
        "AttachStdout": True,
        "AttachStderr": True,
    }
    if user:
        config["User"] = user
    if workdir:
        config["WorkingDir"] = workdir
    return config


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def _local_api(env: Mapping[str, str]) -> EngineApi | None:
    from envsnap.dockerconfig import config_path

    found = local_socket(env, config_path(env))
    return EngineApi(found) if found is not None else None


def _probe_version(
    runner: ProcessRunner, cli: str, env: Mapping[str, str], echo: Echo | None
) -> str:
    # The client version prints even when the daemon is down (exit code 1), so only stdout counts.
    argv = [cli, "version", "--format", "{{.Client.Version}}"]
    _echo(echo, argv)
    try:
        return runner.call(argv, env, _QUICK_TIMEOUT_S).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _probe_buildx(
    runner: ProcessRunner, cli: str, env: Mapping[str, str], echo: Echo | None
) -> bool:
    argv = [cli, "buildx", "version"]
    _echo(echo, argv)
    try:
        return runner.call(argv, env, _QUICK_TIMEOUT_S).code == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _echo(echo: Echo | None, argv: Sequence[str], prefix: Mapping[str, str] | None = None) -> None:
    if echo is None:
        return
    assignments = [f"{key}={shlex.quote(value)}" for key, value in (prefix or {}).items()]
    echo(" ".join([*assignments, shlex.join(argv)]))
