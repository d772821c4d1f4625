"""The engine against the real docker daemon and the local registry on 127.0.0.1:5000 brought up
by scripts/docker-env.sh. Every image, container and registry manifest made here is removed."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envsnap.errors import InterruptError
from envsnap.image.dockeroutput import (
    EXIT_TIMEOUT,
    BuildError,
    EngineUnavailableError,
    ImageNotFoundError,
    ImageNotPinnableError,
)
from envsnap.image.engine import Engine

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON_BASE = "envsnap-test/python:3.11-bookworm"
REGISTRY = "127.0.0.1:5000"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def docker_env() -> None:
    """The docker test environment is up; a failure to bring it up fails the test."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker-env.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"scripts/docker-env.sh exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}",
            pytrace=False,
        )


@pytest.fixture
def engine(docker_env: None) -> Engine:
    """The engine as the CLI would detect it."""
    return Engine.detect(os.environ)


@pytest.fixture
def suffix() -> str:
    """A random suffix that keeps names of parallel runs apart."""
    return secrets.token_hex(4)


@pytest.fixture
def cleanup(engine: Engine) -> Iterator[Callable[[str], None]]:
    """Register an image name to remove (forced) when the test ends."""
    names: list[str] = []
    yield names.append
    for name in reversed(names):
        engine.remove_image(name, force=True)


@pytest.fixture
def registry_cleanup() -> Iterator[Callable[[str, str], None]]:
    """Register a (repository, digest) manifest to delete from the local registry."""
    manifests: list[tuple[str, str]] = []
    yield lambda repo, digest: manifests.append((repo, digest))
    for repo, digest in manifests:
        request = urllib.request.Request(
            f"http://{REGISTRY}/v2/{repo}/manifests/{digest}", method="DELETE"
        )
        with contextlib.suppress(OSError):  # already gone
            _opener().open(request, timeout=10).close()


def _opener() -> urllib.request.OpenerDirector:
    # The registry is on loopback; a proxy from the environment must not be used.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _registry_digest(repo: str, tag: str) -> str:
    request = urllib.request.Request(
        f"http://{REGISTRY}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": MANIFEST_V2},
    )
    with _opener().open(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def _docker(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine.cli, *args], capture_output=True, text=True, check=False, timeout=120
    )


def _scratch_image(engine: Engine, tmp_path: Path, tag: str, content: str) -> str:
    """A tiny image (one file, no base) built with the engine; its image id."""
    context = tmp_path / "scratch-context"
    context.mkdir()
    (context / "hello.txt").write_text(content)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    return engine.build(context=context, dockerfile=context / "Dockerfile", tag=tag)


class TestDetect:
    """The CLI is resolved once and the daemon's version read through it."""

    def test_detect_and_info(self, engine: Engine) -> None:
        """A BuildKit-capable CLI is chosen and the daemon answers with its versions."""
        lines: list[str] = []
        echoing = Engine.detect(os.environ, echo=lines.append)
        info = echoing.info()
        assert info.cli == engine.cli
        assert info.server_version
        assert info.api_version.startswith("1.")
        # The engine on this machine's socket is asked over its API; without it, through the CLI.
        assert echoing.api is not None or "DOCKER_HOST" in os.environ
        if echoing.api is not None:
            assert "docker engine API: GET /version" in lines
        lines.clear()
        through_cli = dataclasses.replace(echoing, api=None).info()
        assert (through_cli.server_version, through_cli.api_version) == (
            info.server_version,
            info.api_version,
        )
        assert any(line.endswith("version --format '{{json .}}'") for line in lines)

    def test_missing_override(self, docker_env: None, tmp_path: Path) -> None:
        """ENVSNAP_DOCKER naming nothing is refused with what to do."""
        env = {**os.environ, "ENVSNAP_DOCKER": str(tmp_path / "no-docker")}
        with pytest.raises(EngineUnavailableError, match="ENVSNAP_DOCKER"):
            Engine.detect(env)

    def test_daemon_unreachable(self, docker_env: None) -> None:
        """A daemon that does not answer gives one sentence saying how to start it."""
        engine = Engine.detect({**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"})
        with pytest.raises(EngineUnavailableError) as caught:
            engine.info()
        text = str(caught.value)
        assert text.startswith("the docker daemon is not running (")
        assert "nonexistent.sock" in text
        assert text.endswith("start it (sudo dockerd) or set DOCKER_HOST.")


class TestBuild:
    """BuildKit builds with secrets, failing steps and Ctrl-C."""

    def test_secret_is_used_but_never_stored(
        self, engine: Engine, tmp_path: Path, suffix: str, cleanup: Callable[[str], None]
    ) -> None:
        """A RUN step reads the secret; it is in no layer, no history, and masked in output."""
        value = f"envsnap-secret-{secrets.token_hex(12)}"
        secret = tmp_path / "token"
        secret.write_text(value + "\n")
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {PYTHON_BASE}\n"
            f"LABEL envsnap.test={suffix}\n"
            # The nonce busts the cache: BuildKit leaves secret contents out of cache keys.
            f"RUN --mount=type=secret,id=token echo nonce-{suffix} && sha256sum "
            "/run/secrets/token | cut -c1-64 > /secret.sha256\n"
            f"RUN --mount=type=secret,id=token echo nonce-{suffix} && cat /run/secrets/token\n"
        )
        tag = f"envsnap-test-secret-{suffix}:1"
        cleanup(tag)
        lines: list[str] = []
        echoed: list[str] = []
        engine_v = Engine.detect(os.environ, echo=echoed.append)

        image_id = engine_v.build(
            context=context,
            dockerfile=context / "Dockerfile",
            tag=tag,
            secrets={"token": secret},
            on_line=lines.append,
        )

        assert image_id.startswith("sha256:")
        info = engine.inspect_image(tag)
        assert info is not None
        assert info.id == image_id
        assert info.labels["envsnap.test"] == suffix
        # The step saw the secret ...
        seen = _docker(engine, "run", "--rm", tag, "cat", "/secret.sha256").stdout.strip()
        assert seen == hashlib.sha256((value + "\n").encode()).hexdigest()
        # ... which the output shows masked, and no echo, history entry or layer holds.
        assert any(line.endswith("[secret:token]") for line in lines)
        assert not any(value in line for line in lines + echoed)
        assert any(line.startswith("DOCKER_BUILDKIT=1 ") for line in echoed)
        history = _docker(engine, "history", "--no-trunc", tag).stdout
        assert "nonce-" in history
        assert value not in history
        assert not _image_bytes_contain(engine, tag, value.encode())

    def test_failing_step(
        self, engine: Engine, tmp_path: Path, suffix: str, cleanup: Callable[[str], None]
    ) -> None:
        """A failing RUN step is named, with its exit code, and its output is in the detail."""
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {PYTHON_BASE}\n"
            "RUN echo fine\n"
            f"RUN echo about-to-fail-{suffix} && exit 3\n"
            "RUN echo never\n"
        )
        tag = f"envsnap-test-fail-{suffix}:1"
        cleanup(tag)
        with pytest.raises(BuildError) as caught:
            engine.build(context=context, dockerfile=context / "Dockerfile", tag=tag)
        error = caught.value
        assert error.step == f"[3/4] RUN echo about-to-fail-{suffix} && exit 3"
        assert str(error).startswith(f"docker build of {tag} failed at step [3/4] RUN echo")
        assert "exit code: 3" in str(error)
        assert str(error).endswith("-v shows all of it.")
        assert f"about-to-fail-{suffix}" in error.detail
        assert not engine.image_exists(tag)

    def test_interrupt_cancels_the_build(
        self,
        engine: Engine,
        tmp_path: Path,
        suffix: str,
        cleanup: Callable[[str], None],
        python_sigint: None,
    ) -> None:
        """Ctrl-C during a RUN step stops the CLI, BuildKit cancels the step, no image is made."""
        marker = f"started-{suffix}"
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {PYTHON_BASE}\nRUN echo {marker} && sleep 300\n")
        tag = f"envsnap-test-interrupt-{suffix}:1"
        cleanup(tag)

        running: list[bool] = []

        def on_line(line: str) -> None:
            if line.endswith(f" {marker}"):  # the step's own output: it is running now
                running.append(_wait_until(lambda: bool(_processes_mentioning(marker)), 10))
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

        started = time.monotonic()
        with pytest.raises(InterruptError, match="interrupted during the build"):
            engine.build(
                context=context, dockerfile=context / "Dockerfile", tag=tag, on_line=on_line
            )
        assert running == [True]
        assert time.monotonic() - started < 60
        assert _wait_until(lambda: not _processes_mentioning(marker), 15)
        assert not engine.image_exists(tag)


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler for the test, even where this run inherited SIGINT ignored
    (a suite started in the background): a SIGINT must become KeyboardInterrupt, and the
    children started meanwhile get the default disposition."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class TestRegistry:
    """Push, pull and digests against the real local registry."""

    def test_push_and_resolve_digest(
        self,
        engine: Engine,
        tmp_path: Path,
        suffix: str,
        cleanup: Callable[[str], None],
        registry_cleanup: Callable[[str, str], None],
    ) -> None:
        """The pushed digest is the registry's, a tag resolves to it, even after a fresh pull."""
        repo = f"envsnap-test/engine-{suffix}"
        ref = f"{REGISTRY}/{repo}:v1"
        local = f"envsnap-test-local-{suffix}:1"
        cleanup(local)
        cleanup(ref)
        _scratch_image(engine, tmp_path, local, f"pushed {suffix}\n")
        engine.tag(local, ref)

        pushed = engine.push(ref)
        digest = _registry_digest(repo, "v1")
        registry_cleanup(repo, digest)

        assert pushed == f"{REGISTRY}/{repo}@{digest}"
        assert engine.resolve_digest(ref) == pushed
        assert engine.resolve_digest(pushed) == pushed
        assert engine.resolve_digest(f"{ref}@{digest}") == pushed
        # Absent locally: resolving pulls it back.
        engine.remove_image(ref)
        engine.remove_image(pushed)
        assert not engine.image_exists(ref)
        assert engine.resolve_digest(ref) == pushed
        assert engine.image_exists(ref)

    def test_local_only_image_is_not_pinnable(
        self, engine: Engine, tmp_path: Path, suffix: str, cleanup: Callable[[str], None]
    ) -> None:
        """An image built here and never pushed has no digest to pin, and the error says so."""
        local = f"envsnap-test-local-{suffix}:1"
        cleanup(local)
        _scratch_image(engine, tmp_path, local, f"local {suffix}\n")
        with pytest.raises(ImageNotPinnableError) as caught:
            engine.resolve_digest(local)
        assert str(caught.value) == (
            f"image {local} has no registry digest (it exists only locally); push it to a "
            "registry (e.g. docker push) or pass a base pinned by digest."
        )

    def test_unknown_image(self, engine: Engine, suffix: str) -> None:
        """An image no registry has is reported by name, with or without trying to pull."""
        ref = f"{REGISTRY}/envsnap-test/missing-{suffix}:1"
        with pytest.raises(ImageNotFoundError, match=f"image {ref} is not present locally"):
            engine.resolve_digest(ref)
        with pytest.raises(ImageNotFoundError, match="pull or build it first"):
            engine.resolve_digest(ref, pull=False)
        assert engine.inspect_image(ref) is None
        engine.remove_image(ref)  # absent is fine


class TestRun:
    """Foreground container runs: output, exit code, environment, timeout."""

    def test_exit_code_output_and_environment(self, engine: Engine, suffix: str) -> None:
        """The exit code comes back, output streams, and values never reach the command line."""
        echoed: list[str] = []
        output: list[str] = []
        engine_v = Engine.detect(os.environ, echo=echoed.append)
        name = f"envsnap-test-run-{suffix}"
        code = engine_v.run(
            PYTHON_BASE,
            ["sh", "-c", 'echo "value=$ENVSNAP_TEST_VALUE"; cat /proc/net/dev | wc -l; exit 3'],
            name=name,
            env={"ENVSNAP_TEST_VALUE": f"v-{suffix}"},
            on_output=output.append,
        )
        assert code == 3
        assert output[0] == f"value=v-{suffix}"
        assert output[1] == "3"  # --network none: only the loopback interface
        run_line = next(line for line in echoed if " run " in line)
        assert "--env ENVSNAP_TEST_VALUE" in run_line
        assert f"v-{suffix}" not in run_line
        assert not _container_exists(engine, name)

    def test_timeout_stops_and_removes(self, engine: Engine, suffix: str) -> None:
        """A container past its timeout is stopped and removed, and the timeout is reported."""
        name = f"envsnap-test-timeout-{suffix}"
        output: list[str] = []
        started = time.monotonic()
        code = engine.run(
            PYTHON_BASE,
            ["sh", "-c", "echo running; sleep 300"],
            name=name,
            timeout=3,
            on_output=output.append,
        )
        assert code == EXIT_TIMEOUT
        assert output == ["running"]
        assert time.monotonic() - started < 30
        assert not _container_exists(engine, name)

    def test_missing_image(self, engine: Engine, suffix: str) -> None:
        """Running an image that cannot be found is an ImageNotFoundError, not an exit code."""
        ref = f"{REGISTRY}/envsnap-test/missing-{suffix}:1"
        with pytest.raises(ImageNotFoundError, match=f"image {ref}"):
            engine.run(ref, ["true"], name=f"envsnap-test-missing-{suffix}")


def _container_exists(engine: Engine, name: str) -> bool:
    listed = _docker(engine, "ps", "--all", "--quiet", "--filter", f"name=^/{name}$")
    return bool(listed.stdout.strip())


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _image_bytes_contain(engine: Engine, tag: str, needle: bytes) -> bool:
    """Whether any layer or the config of the saved image holds ``needle``."""
    with subprocess.Popen([engine.cli, "save", tag], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        previous = b""
        found = False
        while chunk := process.stdout.read(1 << 20):
            if needle in previous[-len(needle) :] + chunk:
                found = True
            previous = chunk
        assert process.wait() == 0
    return found


def _tar(entries: dict[str, bytes | None]) -> bytes:
    """A tar archive: name -> file content, or None for a directory (writable by all)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o777
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _tar_files(archive: bytes) -> dict[str, bytes]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


class TestRunIsolated:
    """A container with files in and out by archive, over the engine's API and over the CLI
    alike: same output, same files back, removed in every case."""

    @pytest.fixture(params=["api", "cli"])
    def either(self, request: pytest.FixtureRequest, engine: Engine) -> Engine:
        if request.param == "api" and engine.api is None:
            pytest.fail("the test engine is on this machine's socket: its API must be used")
        return engine if request.param == "api" else dataclasses.replace(engine, api=None)

    def test_files_in_output_and_files_out(self, either: Engine, suffix: str) -> None:
        """The command reads what went in, its stdout and stderr lines arrive whole, the
        directory asked for comes back, and no container is left."""
        name = f"envsnap-test-isolated-{suffix}"
        lines: list[str] = []
        ran = either.run_isolated(
            PYTHON_BASE,
            ["sh", "-c", "cat /in/x; echo to-stderr >&2; printf 'made' > /out/y; exit 3"],
            name=name,
            files_in=_tar({"in": None, "in/x": b"hello from the host\n", "out": None}),
            copy_out="/out",
            env={"SEEN": "1"},
            user="10001:10001",
            on_output=lines.append,
        )
        assert ran.exit_code == 3 and not ran.timed_out and not ran.interrupted
        assert sorted(lines) == ["hello from the host", "to-stderr"]
        assert _tar_files(ran.archive) == {"out/y": b"made"}
        assert name not in _docker(either, "ps", "-a", "--format", "{{.Names}}").stdout

    def test_a_timeout_stops_it_and_still_brings_files_back(
        self, either: Engine, suffix: str
    ) -> None:
        """Past its timeout the container is killed, what it wrote comes back, and it is gone."""
        name = f"envsnap-test-isolated-{suffix}"
        started = time.monotonic()
        ran = either.run_isolated(
            PYTHON_BASE,
            ["sh", "-c", "echo partial > /out/y; sleep 60"],
            name=name,
            files_in=_tar({"out": None}),
            copy_out="/out",
            timeout=2,
        )
        assert ran.timed_out and ran.exit_code == EXIT_TIMEOUT
        assert time.monotonic() - started < 30
        assert _tar_files(ran.archive) == {"out/y": b"partial\n"}
        assert name not in _docker(either, "ps", "-a", "--format", "{{.Names}}").stdout

    def test_an_absent_image_is_image_not_found(self, either: Engine, suffix: str) -> None:
        """An image the engine lacks is the error that says to build or push it."""
        with pytest.raises(ImageNotFoundError):
            either.run_isolated(
                f"envsnap-test/absent-{suffix}:none",
                ["true"],
                name=f"envsnap-test-isolated-{suffix}",
                files_in=_tar({}),
                copy_out="/tmp",
            )
