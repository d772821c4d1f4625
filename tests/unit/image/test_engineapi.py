"""The engine API over the local socket: when it is used, and how an attach stream reads."""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pytest

from envsnap.image.dockeroutput import Mount
from envsnap.image.engine import Engine, container_config, container_flags
from envsnap.image.engineapi import Attached, local_socket


def _frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # a socket file; nothing connects to it
    server.close()
    return path


class TestLocalSocket:
    """The API is used only for the engine the CLI would reach through the same local socket."""

    def test_a_unix_docker_host_is_used(self, sock_path: Path) -> None:
        """DOCKER_HOST=unix://PATH names the socket."""
        assert local_socket({"DOCKER_HOST": f"unix://{sock_path}"}, None) == sock_path

    @pytest.mark.parametrize(
        "env",
        [
            {"DOCKER_HOST": "ssh://gpu-box"},
            {"DOCKER_HOST": "tcp://10.0.0.2:2376"},
            {"DOCKER_CONTEXT": "lab-h100"},
        ],
    )
    def test_another_engine_goes_through_the_cli(self, env: dict[str, str]) -> None:
        """ssh, tcp (TLS) and named contexts are the CLI's to reach."""
        assert local_socket(env, None) is None

    def test_a_current_context_in_the_config_goes_through_the_cli(
        self, tmp_path: Path, sock_path: Path
    ) -> None:
        """docker's config file can switch the CLI to another context: then no API."""
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"currentContext": "remote"}))
        env = {"DOCKER_HOST": f"unix://{sock_path}"}
        assert local_socket(env, config) == sock_path  # DOCKER_HOST wins over the config
        assert local_socket({}, config) is None
        config.write_text("{not json")
        assert local_socket({}, config) is None

    def test_a_missing_socket_or_a_plain_file_is_not_used(self, tmp_path: Path) -> None:
        """No socket there: the CLI answers (and says what is wrong)."""
        plain = tmp_path / "plain"
        plain.write_text("")
        assert local_socket({"DOCKER_HOST": f"unix://{plain}"}, None) is None
        assert local_socket({"DOCKER_HOST": f"unix://{tmp_path / 'gone'}"}, None) is None

    def test_an_engine_given_a_runner_never_uses_the_api(self, sock_path: Path) -> None:
        """Tests hand Engine.detect a runner and see every call as a command line."""

        class Runner:
            def call(self, *args: object, **kwargs: object) -> object:
                from envsnap.image.process import CallResult

                return CallResult(0, "20.10.24\n", "")

        env = {"DOCKER_HOST": f"unix://{sock_path}", "ENVSNAP_DOCKER": "/bin/sh"}
        engine = Engine.detect(env, runner=Runner())  # type: ignore[arg-type]
        assert engine.api is None


class TestAttachStream:
    """A non-TTY attach: stdout and stderr frames, each split into lines on its own."""

    def test_lines_of_both_streams(self) -> None:
        """Lines come out whole even when a frame ends mid-line or the other stream interleaves."""
        ours, theirs = socket.socketpair()
        theirs.sendall(
            _frame(1, b"seed=42 lr")
            + _frame(2, b"warning: x\n")
            + _frame(1, b"=0.5\nlast")
            + _frame(3, b"ignored stdin echo")
        )
        theirs.close()
        lines: list[str] = []
        attached = Attached(ours, b"")
        assert attached.pump(lines.append, deadline=None)
        attached.close()
        assert lines == ["warning: x", "seed=42 lr=0.5", "last"]

    def test_a_deadline_ends_the_wait(self) -> None:
        """A container still running at the deadline: pump says it did not finish."""
        ours, theirs = socket.socketpair()
        theirs.sendall(_frame(1, b"started\n"))
        lines: list[str] = []
        attached = Attached(ours, b"")
        assert not attached.pump(lines.append, deadline=time.monotonic() + 0.2)
        attached.close()
        theirs.close()
        assert lines == ["started"]


class TestContainerConfig:
    """The API's create body asks for the same container as the CLI's flags."""

    def test_same_lockdown_as_the_cli(self) -> None:
        """No privileges, no capabilities, no network, the user, workdir, env and mounts."""
        mount = Mount(source=Path("/mnt/shared/train.csv"), target="/work/data/train.csv")
        env = {"HOME": "/tmp", "SEED": "1"}
        config = container_config(
            "envsnap/env:x", ["envsnap", "_replay"], [mount], env, "/work", "10001:10001", False
        )
        flags = container_flags("n", [mount], env, "/work", "10001:10001", False, None)
        assert config["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
        assert "no-new-privileges" in flags and config["HostConfig"]["CapDrop"] == ["ALL"]
        assert config["HostConfig"]["NetworkMode"] == "none" and "none" in flags
        assert config["User"] == "10001:10001" and config["WorkingDir"] == "/work"
        assert config["Env"] == ["HOME=/tmp", "SEED=1"] and config["Cmd"] == ["envsnap", "_replay"]
        assert config["HostConfig"]["Mounts"] == [
            {
                "Type": "bind",
                "Source": "/mnt/shared/train.csv",
                "Target": "/work/data/train.csv",
                "ReadOnly": True,
            }
        ]

    def test_network_when_asked(self) -> None:
        """--network leaves the engine's default network."""
        config = container_config("i", ["x"], [], {}, "", None, True)
        assert "NetworkMode" not in config["HostConfig"] and "User" not in config
