"""The engine: its parsing helpers (BuildKit logs, digests, CLI versions, image JSON, secret
masking) and, through a fake ProcessRunner, the command lines it hands docker. No process is
started here."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from envsnap.image.dockeroutput import (
    EXIT_TIMEOUT,
    BuildError,
    BuildLog,
    EngineUnavailableError,
    Mount,
    SecretMask,
    build_error,
    client_version_tuple,
    has_builtin_buildkit,
    parse_build_failure,
    parse_image_info,
    parse_push_digest,
    pick_repo_digest,
    progress_printer,
)
from envsnap.image.engine import Engine
from envsnap.image.process import CallResult

DIGEST = "sha256:" + "8c35a5545186620f2b2dfe31b3cc6a6a6c094aef19942a78003a6caa4b367bf0"

# Captured from Debian's docker.io 20.10 CLI: a RUN step that exits 1.
LOG_RUN_FAILED_20_10 = """\
#1 [internal] load build definition from Dockerfile
#1 sha256:9f524acff46376e1855973249cb6bcb6c6e2853af78a78db0305c2346934e100
#1 transferring dockerfile: 199B done
#1 DONE 0.0s

#4 [1/5] FROM docker.io/envsnap-test/python:3.11-bookworm
#4 DONE 0.0s

#5 [2/5] RUN echo hello
#5 0.249 hello
#5 DONE 0.3s

#7 [4/5] RUN echo step4 && false
#7 sha256:f1b9caf78250ffc28b8f8876c3ba6ea08bc4e1c318a99b5295d5ea6043a4c6b1
#7 0.325 step4
#7 ERROR: executor failed running [/bin/sh -c echo step4 && false]: exit code: 1
------
 > [4/5] RUN echo step4 && false:
------
executor failed running [/bin/sh -c echo step4 && false]: exit code: 1
"""

# The buildx format (CLI 23 and later): "process ... did not complete successfully".
LOG_RUN_FAILED_BUILDX = """\
#5 [builder 2/3] RUN pip install nothing-such
#5 1.204 ERROR: No matching distribution found for nothing-such
#5 ERROR: process "/bin/sh -c pip install nothing-such" did not complete successfully: exit code: 1
------
 > [builder 2/3] RUN pip install nothing-such:
1.204 ERROR: No matching distribution found for nothing-such
------
Dockerfile:3
--------------------
   3 | >>> RUN pip install nothing-such
--------------------
ERROR: failed to solve: process "/bin/sh -c pip install nothing-such" did not complete \
successfully: exit code: 1
"""

# Captured from the 20.10 CLI: a COPY of a file missing from the context.
LOG_COPY_FAILED = """\
#6 [2/2] COPY missing /x
#6 sha256:b812a04d69c42f6f3fec4ed1e38993cffc96d190b9b570ca25d89c5faff00ea9
#6 ERROR: "/missing" not found: not found
------
 > [2/2] COPY missing /x:
------
failed to compute cache key: "/missing" not found: not found
"""

# Captured from the 20.10 CLI: a Dockerfile that does not parse has no failing step.
LOG_PARSE_ERROR = """\
#2 [internal] load .dockerignore
#2 transferring context: 2B done
#2 DONE 0.0s
failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse \
error line 2: unknown instruction: BLAH
"""

LOG_DISK_FULL = """\
#9 [3/5] RUN pip install torch
#9 41.30 ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device
#9 ERROR: executor failed running [/bin/sh -c pip install torch]: exit code: 1
"""


class TestBuildFailure:
    """The failing step and reason are read from BuildKit plain-progress output."""

    def test_run_step_in_20_10_format(self) -> None:
        """A failing RUN names its [n/m] step and the executor's reason."""
        failure = parse_build_failure(LOG_RUN_FAILED_20_10)
        assert failure.step == "[4/5] RUN echo step4 && false"
        assert failure.reason == (
            "executor failed running [/bin/sh -c echo step4 && false]: exit code: 1"
        )
        assert not failure.disk_full

    def test_run_step_in_buildx_format(self) -> None:
        """The buildx wording and stage-prefixed step labels are understood too."""
        failure = parse_build_failure(LOG_RUN_FAILED_BUILDX)
        assert failure.step == "[builder 2/3] RUN pip install nothing-such"
        assert "did not complete successfully: exit code: 1" in failure.reason

    def test_copy_step(self) -> None:
        """A COPY of a missing file names the COPY step."""
        failure = parse_build_failure(LOG_COPY_FAILED)
        assert failure.step == "[2/2] COPY missing /x"
        assert failure.reason == '"/missing" not found: not found'

    def test_no_step(self) -> None:
        """A failure before any step (a parse error) has no step but keeps the final reason."""
        failure = parse_build_failure(LOG_PARSE_ERROR)
        assert failure.step == ""
        assert "unknown instruction: BLAH" in failure.reason

    def test_disk_full(self) -> None:
        """A "No space left on device" line anywhere in the output marks the failure disk full."""
        failure = parse_build_failure(LOG_DISK_FULL)
        assert failure.disk_full
        assert failure.step == "[3/5] RUN pip install torch"

    def test_summary_line_when_headers_scrolled_away(self) -> None:
        """Without the step's header line, the " > [n/m] ...:" summary still names the step."""
        failure = parse_build_failure(LOG_RUN_FAILED_20_10.replace("#7 [4/5]", "#7 "))
        assert failure.step == "[4/5] RUN echo step4 && false"

    def test_tail_is_bounded(self) -> None:
        """Only the last lines are kept in memory."""
        log = BuildLog(tail_lines=3)
        for number in range(10):
            log.feed(f"#1 0.{number} line {number}")
        assert list(log.tail) == ["#1 0.7 line 7", "#1 0.8 line 8", "#1 0.9 line 9"]


def _log(text: str) -> BuildLog:
    log = BuildLog()
    for line in text.splitlines():
        log.feed(line)
    return log


class TestBuildErrorSentence:
    """A failed build becomes one sentence: what failed, where, and what to do."""

    def test_failing_step(self) -> None:
        """The step and its reason lead; the hint says where the log is; the tail is the detail,
        which the command line prints above the sentence."""
        error = build_error("img:1", Path("ctx/Dockerfile"), _log(LOG_RUN_FAILED_20_10))
        assert isinstance(error, BuildError)
        assert error.step == "[4/5] RUN echo step4 && false"
        assert str(error) == (
            "docker build of img:1 failed at step [4/5] RUN echo step4 && false: executor failed "
            "running [/bin/sh -c echo step4 && false]: exit code: 1; the last lines of the build "
            "output are above; -v shows all of it."
        )
        assert error.detail.endswith("exit code: 1")

    def test_disk_full(self) -> None:
        """A full disk is said plainly, with how to free space."""
        error = build_error("img:1", Path("Dockerfile"), _log(LOG_DISK_FULL))
        assert isinstance(error, BuildError)
        assert error.disk_full
        assert str(error) == (
            "docker build of img:1 failed because the disk is full (no space left on device); "
            "free space (docker system prune, docker builder prune) and build again."
        )

    def test_no_step(self) -> None:
        """Without a step, the final reason is given."""
        error = build_error("img:1", Path("Dockerfile"), _log(LOG_PARSE_ERROR))
        assert str(error).startswith("docker build of img:1 failed: failed to solve")
        assert "unknown instruction: BLAH" in str(error)

    def test_daemon_down(self) -> None:
        """A build that could not reach the daemon is an engine-unavailable error."""
        log = _log(
            "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"
        )
        error = build_error("img:1", Path("Dockerfile"), log)
        assert isinstance(error, EngineUnavailableError)
        assert str(error).endswith("start it (sudo dockerd) or set DOCKER_HOST.")


class TestReferences:
    """Registry digests are picked and parsed (references themselves: test_imageref.py)."""

    def test_pick_repo_digest_prefers_the_repository(self) -> None:
        """The digest recorded for the asked repository wins over others of the same image."""
        digests = [f"127.0.0.1:5000/other@{DIGEST}", f"python@{DIGEST}"]
        assert pick_repo_digest(digests, "docker.io/library/python") == f"python@{DIGEST}"

    def test_pick_repo_digest_falls_back_and_gives_none(self) -> None:
        """Another repository's digest pins the same content; no digest at all gives None."""
        assert pick_repo_digest([f"b@{DIGEST}", f"a@{DIGEST}"], "local/x") == f"a@{DIGEST}"
        assert pick_repo_digest([], "local/x") is None

    def test_parse_push_digest(self) -> None:
        """The manifest digest is read from docker push's last line."""
        output = (
            "The push refers to repository [127.0.0.1:5000/envsnap-probe]\n"
            "369e510a4bd7: Pushed\n"
            f"t1: digest: {DIGEST} size: 528\n"
        )
        assert parse_push_digest(output) == DIGEST
        assert parse_push_digest("369e510a4bd7: Pushed\n") is None


class TestClientVersion:
    """The CLI version decides whether BuildKit needs the buildx plugin."""

    @pytest.mark.parametrize(
        ("version", "parsed"),
        [
            ("20.10.24+dfsg1", (20, 10, 24)),
            ("28.2.2", (28, 2, 2)),
            ("v27.0.1-rc.1", (27, 0, 1)),
            ("23", (23, 0, 0)),
            ("", None),
            ("unknown", None),
        ],
    )
    def test_client_version_tuple(self, version: str, parsed: tuple[int, int, int] | None) -> None:
        """Distribution suffixes and a leading v are tolerated."""
        assert client_version_tuple(version) == parsed

    def test_builtin_buildkit_below_23(self) -> None:
        """20.10 has BuildKit built in; 23 and later, or an unknown version, do not count."""
        assert has_builtin_buildkit("20.10.24+dfsg1")
        assert has_builtin_buildkit("22.06.0")
        assert not has_builtin_buildkit("23.0.0")
        assert not has_builtin_buildkit("28.2.2")
        assert not has_builtin_buildkit("")


class TestImageInfo:
    """`docker image inspect --format '{{json .}}'` output becomes an ImageInfo."""

    def test_parse_image_info(self) -> None:
        """Id, sorted names and digests, labels from Config, creation time and size are kept."""
        text = json.dumps(
            {
                "Id": "sha256:" + "1" * 64,
                "RepoTags": ["b:1", "a:1"],
                "RepoDigests": [f"a@{DIGEST}"],
                "Created": "2026-11-22T21:51:07.336897802Z",
                "Size": 1234,
                "Config": {"Labels": {"org.envsnap.run": "r1"}},
            }
        )
        info = parse_image_info(text)
        assert info.id == "sha256:" + "1" * 64
        assert info.repo_tags == ("a:1", "b:1")
        assert info.repo_digests == (f"a@{DIGEST}",)
        assert info.labels == {"org.envsnap.run": "r1"}
        assert info.created == "2026-11-22T21:51:07.336897802Z"
        assert info.size == 1234

    def test_null_labels_and_digests(self) -> None:
        """An imported image has null labels and an empty digest list."""
        text = json.dumps({"Id": "sha256:x", "RepoDigests": [], "Config": {"Labels": None}})
        info = parse_image_info(text)
        assert info.labels == {}
        assert info.repo_digests == ()


class TestSecretMask:
    """The contents of build-secret files never pass through to echoed output or errors."""

    def test_masks_each_secret_line(self, tmp_path: Path) -> None:
        """Every line of a secret file is replaced by the secret's id wherever it appears."""
        token = tmp_path / "token"
        token.write_text("hunter2-password\n")
        netrc = tmp_path / "netrc"
        netrc.write_text("machine example.org\nlogin bob\npassword s3cr3t-pw\n")
        mask = SecretMask.from_files({"token": token, "netrc": netrc})
        assert mask("#7 0.12 hunter2-password") == "#7 0.12 [secret:token]"
        assert mask("x password s3cr3t-pw y") == "x [secret:netrc] y"
        assert mask("#7 DONE 0.3s") == "#7 DONE 0.3s"

    def test_missing_file_and_short_lines(self, tmp_path: Path) -> None:
        """A missing file masks nothing; lines under four characters are not treated as secret."""
        short = tmp_path / "short"
        short.write_text("}\nab\n")
        mask = SecretMask.from_files({"gone": tmp_path / "gone", "short": short})
        assert mask("ab } #1 DONE") == "ab } #1 DONE"


class TestProgress:
    def test_each_step_title_once(self) -> None:
        """A terminal sees each BuildKit step's title once, and none of the step's chatter."""
        shown: list[str] = []
        take = progress_printer(shown.append)
        for line in LOG_RUN_FAILED_20_10.splitlines():
            take(line)
        assert shown[0] == "  [internal] load build definition from Dockerfile"
        assert "  [1/5] FROM docker.io/envsnap-test/python:3.11-bookworm" in shown
        assert len(shown) == len(set(shown))
        assert not any("sha256:" in line and "FROM" not in line for line in shown)


# --- the Engine against a fake runner: the command lines it would run ---------------------------


@dataclasses.dataclass
class _FakeStreaming:
    lines: list[str]
    code: int = 0
    never_ends: bool = False
    stopped: bool = False
    killed: bool = False

    def pump(self, on_line: Callable[[str], None], *, deadline: float | None) -> bool:
        for line in self.lines:
            on_line(line)
        return not self.never_ends

    def wait(self, timeout: float | None = None) -> int:
        if self.never_ends and not self.killed:
            raise subprocess.TimeoutExpired("docker", timeout or 0)
        return self.code

    def stop(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.killed = True

    def close(self) -> None:
        pass


@dataclasses.dataclass
class _FakeRunner:
    """Answers each call from ``answers`` (by its first argument after the CLI), records argv
    and environment of every call and spawn."""

    answers: dict[str, CallResult] = dataclasses.field(default_factory=dict)
    streaming: _FakeStreaming = dataclasses.field(default_factory=lambda: _FakeStreaming([]))
    calls: list[tuple[list[str], dict[str, str]]] = dataclasses.field(default_factory=list)
    spawned: list[tuple[list[str], dict[str, str]]] = dataclasses.field(default_factory=list)

    stdins: list[bytes | None] = dataclasses.field(default_factory=list)
    detached: list[list[str]] = dataclasses.field(default_factory=list)

    def call(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float | None,
        *,
        stdin: bytes | None = None,
    ) -> CallResult:
        self.calls.append((list(argv), dict(env)))
        self.stdins.append(stdin)
        return self.answers.get(argv[1], CallResult(0, "", ""))

    def spawn(self, argv: Sequence[str], env: Mapping[str, str]) -> _FakeStreaming:
        self.spawned.append((list(argv), dict(env)))
        if "--iidfile" in argv:  # as docker build does on success
            Path(argv[argv.index("--iidfile") + 1]).write_text(DIGEST)
        return self.streaming

    def detach(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.detached.append(list(argv))


def _engine(runner: _FakeRunner, **env: str) -> Engine:
    return Engine(cli="/usr/bin/docker", client_version="20.10.24", env=env, runner=runner)


class TestEngineCommandLines:
    """What the Engine hands docker, checked without a daemon through its injected runner."""

    def test_an_image_removed_later_is_left_to_a_detached_docker(self) -> None:
        """The replaced image of a rebuild is removed by a docker process not waited for."""
        runner = _FakeRunner()
        _engine(runner).remove_image_later("sha256:" + "1" * 64)
        assert runner.detached == [["/usr/bin/docker", "image", "rm", "sha256:" + "1" * 64]]
        assert runner.calls == [] and runner.spawned == []

    def test_run_is_locked_down_and_values_travel_in_the_environment(self) -> None:
        """A rerun container: no privileges, no capabilities, no network, a non-root user; an
        environment value is named on the command line but travels in the CLI's environment."""
        runner = _FakeRunner(streaming=_FakeStreaming(["hello"], code=3))
        out: list[str] = []
        code = _engine(runner, HOME="/root").run(
            "envsnap/env:abc",
            ["python", "train.py"],
            name="envsnap-rerun-x",
            mounts=[Mount(source="/tmp/a,b", target="/work", read_only=True)],
            env={"WANDB_API_KEY": "s3cret"},
            workdir="/work",
            user="10001:10001",
            gpus="all",
            on_output=out.append,
        )
        assert code == 3 and out == ["hello"]
        ((argv, env),) = runner.spawned
        assert argv[:2] == ["/usr/bin/docker", "run"]
        for flag in (
            ["--security-opt", "no-new-privileges"],
            ["--cap-drop", "ALL"],
            ["--network", "none"],
            ["--gpus", "all"],
            ["--user", "10001:10001"],
            ["--env", "WANDB_API_KEY"],
            ["--mount", 'type=bind,"source=/tmp/a,b",target=/work,readonly'],
        ):
            assert flag in [argv[i : i + 2] for i in range(len(argv) - 1)], flag
        assert argv[-3:] == ["envsnap/env:abc", "python", "train.py"]
        assert "s3cret" not in " ".join(argv) and env["WANDB_API_KEY"] == "s3cret"

    def test_network_only_when_asked(self) -> None:
        """--network lifts the `none` network; nothing else changes."""
        runner = _FakeRunner()
        _engine(runner).run("img", ["true"], name="n", network=True)
        assert "none" not in runner.spawned[0][0]

    def test_a_run_past_its_timeout_removes_the_container(self) -> None:
        """Past the deadline the container is removed by name and 124 is returned."""
        runner = _FakeRunner(streaming=_FakeStreaming([], never_ends=True))
        code = _engine(runner).run("img", ["sleep", "9"], name="envsnap-rerun-y", timeout=0.01)
        assert code == EXIT_TIMEOUT
        assert ["/usr/bin/docker", "rm", "--force", "envsnap-rerun-y"] in [
            c for c, _ in runner.calls
        ]

    def test_build_passes_secrets_args_and_buildkit(self, tmp_path: Path) -> None:
        """Secrets by file (never their content), sorted build args, --no-cache on a rebuild,
        BuildKit in the environment; the image id comes from the iidfile."""
        secret = tmp_path / "ca.pem"
        secret.write_text("-----BEGIN CERTIFICATE-----\nMIIBxyz\n")
        runner = _FakeRunner(streaming=_FakeStreaming(["#1 [internal] load"]))
        image_id = _engine(runner).build(
            context=tmp_path,
            dockerfile=tmp_path / "Dockerfile",
            tag="envsnap/env:abc",
            secrets={"pip-ca": secret},
            build_args={"B": "2", "A": "1"},
            no_cache=True,
        )
        assert image_id == DIGEST
        ((argv, env),) = runner.spawned
        assert argv[1:3] == ["build", "--progress=plain"] and "--no-cache" in argv
        assert argv[argv.index("--secret") + 1] == f"id=pip-ca,src={secret}"
        build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
        assert build_args == ["A=1", "B=2"]
        assert argv[-3:] == ["-t", "envsnap/env:abc", str(tmp_path)]
        assert env["DOCKER_BUILDKIT"] == "1"
        assert "MIIBxyz" not in " ".join(argv)

    def test_a_failed_build_names_the_step(self, tmp_path: Path) -> None:
        """A build that exits non-zero raises BuildError from the log it printed."""
        runner = _FakeRunner(streaming=_FakeStreaming(LOG_RUN_FAILED_20_10.splitlines(), code=1))
        with pytest.raises(BuildError):
            _engine(runner).build(context=tmp_path, dockerfile=tmp_path / "Dockerfile", tag="t:1")

    def test_push_returns_the_registry_digest(self) -> None:
        """The digest docker push prints becomes repository@digest, the registry port kept."""
        runner = _FakeRunner(answers={"push": CallResult(0, f"1: digest: {DIGEST} size: 5\n", "")})
        pushed = _engine(runner).push("127.0.0.1:5000/team/envs:abc")
        assert pushed == f"127.0.0.1:5000/team/envs@{DIGEST}"

    def test_a_daemon_that_is_down_is_one_sentence(self) -> None:
        """A docker CLI that cannot reach its daemon gives EngineUnavailableError."""
        down = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
        runner = _FakeRunner(answers={"image": CallResult(1, "", down)})
        with pytest.raises(EngineUnavailableError, match="not running"):
            _engine(runner).inspect_image("python:3.11")

    def test_detect_takes_a_cli_with_buildkit_built_in(self, tmp_path: Path) -> None:
        """ENVSNAP_DOCKER names the CLI; its version is asked through the runner."""
        cli = tmp_path / "docker"
        cli.write_text("#!/bin/sh\n")
        cli.chmod(0o755)
        runner = _FakeRunner(answers={"version": CallResult(0, "20.10.24\n", "")})
        engine = Engine.detect({"ENVSNAP_DOCKER": str(cli), "PATH": ""}, runner=runner)
        assert engine.cli == str(cli) and engine.client_version == "20.10.24"
        assert runner.calls[0][0] == [str(cli), "version", "--format", "{{.Client.Version}}"]

    def test_an_isolated_run_copies_in_and_out_and_mounts_nothing_of_this_machine(self) -> None:
        """For an engine that may be another host's: create, copy the inputs in as an archive,
        start attached, copy the results out, remove the container; only the
        engine-side mounts given are bind-mounted."""
        runner = _FakeRunner(
            answers={"cp": CallResult(0, "", "", b"TAR")},
            streaming=_FakeStreaming(["replaying"], code=0),
        )
        data = Mount(source=Path("/mnt/shared/train.csv"), target="/work/data/train.csv")
        done = _engine(runner).run_isolated(
            "envsnap/env:abc",
            ["envsnap", "_replay"],
            name="envsnap-rerun-z",
            files_in=b"INPUT-TAR",
            copy_out="/envsnap/store",
            mounts=[data],
            env={"SEED": "1"},
        )
        verbs = [argv[1] for argv, _ in runner.calls]
        assert verbs == ["create", "cp", "cp", "rm"]
        create = runner.calls[0][0]
        assert create[create.index("--network") : create.index("--network") + 2] == [
            "--network",
            "none",
        ]
        assert create.count("--mount") == 1 and "--rm" not in create
        assert runner.calls[1][0][1:] == ["cp", "-", "envsnap-rerun-z:/"]
        assert runner.stdins[1] == b"INPUT-TAR"
        assert runner.calls[2][0][1:] == ["cp", "envsnap-rerun-z:/envsnap/store", "-"]
        assert runner.spawned[0][0][1:] == ["start", "--attach", "envsnap-rerun-z"]
        assert (done.exit_code, done.archive, done.timed_out) == (0, b"TAR", False)

    def test_an_isolated_run_past_its_timeout_still_brings_the_results_back(self) -> None:
        """Past the deadline the container is killed, its results copied out, then removed."""
        runner = _FakeRunner(streaming=_FakeStreaming([], never_ends=True))
        done = _engine(runner).run_isolated(
            "img", ["sleep"], name="c", files_in=b"", copy_out="/out", timeout=0.01
        )
        assert done.timed_out and done.exit_code == EXIT_TIMEOUT
        assert [argv[1] for argv, _ in runner.calls] == ["create", "cp", "kill", "cp", "rm"]
