"""envsnap lock + build end to end on a real docker engine with a real local registry.

A manifest is captured inside a container of the test base image (the example project's
dependencies installed there with pip), then locked and built on the host; the built image must
hold every recorded package at its recorded version, pin its base by digest, and a second build
must reuse it without building.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from envsnap.store import Store
from tests.integration.conftest import Envsnap, envsnap_command, example_project
from tests.integration.docker_env import (
    REGISTRY,
    capture_in_container,
    docker,
    docker_cli,
    registry_base,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A run captured inside the base image, with numpy from PyPI: (project dir, run id)."""
    root = example_project(tmp_path_factory.mktemp("build") / "project")
    (run_id,) = capture_in_container(root, ["--name in-container --seed 3"])
    yield root, run_id


def run_build(
    root: Path, run_id: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """envsnap build RUN ARGS... in the project at ``root`` with its store."""
    return subprocess.run(
        [
            *envsnap_command(),
            "build",
            run_id,
            "--store",
            str(root / ".envsnap"),
            *args,
        ],
        cwd=root,
        env={**os.environ, "ENVSNAP_DOCKER": docker_cli(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def build_json(root: Path, run_id: str, *args: str) -> dict[str, object]:
    """envsnap build RUN --json on the test base image; its JSON answer."""
    done = run_build(root, run_id, "--base", registry_base(), "--json", *args)
    assert done.returncode == 0, done.stderr[-4000:]
    info: dict[str, object] = json.loads(done.stdout)
    return info


@pytest.fixture(scope="module")
def built(captured: tuple[Path, str]) -> Iterator[dict[str, object]]:
    """The image built on the host for the captured run; removed afterwards."""
    info = build_json(*captured)
    yield info
    docker("rmi", "--force", str(info["reference"]), check=False)


class TestBuild:
    def test_manifest_was_captured_in_the_container(self, captured: tuple[Path, str]) -> None:
        """The run records Debian's Python 3.11 and numpy from the index."""
        root, run_id = captured
        m = Store(root / ".envsnap").load(run_id).manifest
        assert m.host.os_id == "debian" and m.python.version.startswith("3.11.")
        assert {p.name for p in m.python.packages} >= {"numpy", "click", "pip"}

    def test_every_package_at_its_recorded_version(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """Inside the built image, every recorded package has the recorded version."""
        root, run_id = captured
        m = Store(root / ".envsnap").load(run_id).manifest
        script = (
            "import json, importlib.metadata as md; "
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version "
            "for d in md.distributions()}))"
        )
        done = docker("run", "--rm", str(built["reference"]), "python", "-c", script)
        installed = json.loads(done.stdout)
        wanted = {p.name: p.version for p in m.python.packages}
        assert {name: installed.get(name) for name in wanted} == wanted

    def test_base_pinned_and_recorded(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """image.toml and the image's labels name the base by digest, and envsnap runs inside."""
        root, run_id = captured
        assert "@sha256:" in str(built["base"])
        image_toml = tomllib.loads((root / ".envsnap/runs" / run_id / "image.toml").read_text())
        assert image_toml["base"] == built["base"] and image_toml["image_id"] == built["image_id"]
        labels = json.loads(
            docker(
                "image", "inspect", "--format", "{{json .Config.Labels}}", str(built["reference"])
            ).stdout
        )
        assert labels["org.opencontainers.image.base.name"] == built["base"]
        assert labels["dev.envsnap.run-id"] == run_id
        user = docker("run", "--rm", str(built["reference"]), "id", "-u").stdout.strip()
        assert user != "0"
        version = docker("run", "--rm", str(built["reference"]), "envsnap", "--version").stdout
        assert version.startswith("envsnap ")

    def test_base_packages_are_linked_not_installed(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """pip, which Debian's python3-pip gives the base at the recorded version, is linked into
        the venv from the base instead of installed again, and image.toml says so; the run's
        own lock, written once, still pins it (what a base provides is the image's business)."""
        root, run_id = captured
        run_dir = root / ".envsnap/runs" / run_id
        image = tomllib.loads((run_dir / "image.toml").read_text())
        assert "pip" in image["base_provided"]
        assert "\npip==" in (run_dir / "requirements.lock.txt").read_text()
        script = "import os, pip; print(os.path.realpath(pip.__file__))"
        where = docker("run", "--rm", str(built["reference"]), "python", "-c", script).stdout
        assert where.startswith("/usr/lib/python3/dist-packages/pip/")

    def test_no_secret_in_layers(self, built: dict[str, object]) -> None:
        """The CA bundle passed as a secret is in no layer and no history entry."""
        history = docker("history", "--no-trunc", str(built["reference"])).stdout
        assert "BEGIN CERTIFICATE" not in history
        listing = docker(
            "run",
            "--rm",
            str(built["reference"]),
            "sh",
            "-c",
            "ls /run/secrets 2>/dev/null | wc -l",
        ).stdout.strip()
        assert listing == "0"

    def test_second_build_is_reused(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """Building the same environment again does no docker build: the recorded image is reused.

        How long that takes is measured in benchmarks/bench_image.py, not asserted here."""
        root, run_id = captured
        again = build_json(root, run_id)
        assert again["reused"] is True and again["image_id"] == built["image_id"]


class TestPushAndRebuild:
    """These run after TestBuild: they move the image the module built."""

    def test_push_records_the_digest_and_a_later_build_pulls_it(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """--push records the registry digest; with the local image gone, the next build pulls
        the image by that digest instead of building it again."""
        root, run_id = captured
        repository = f"{REGISTRY}/envsnap-tests/envs"
        pushed = build_json(root, run_id, "--push", repository)
        digest = str(pushed["registry_digest"])
        assert digest.startswith(f"{repository}@sha256:")
        recorded = tomllib.loads((root / ".envsnap/runs" / run_id / "image.toml").read_text())
        assert recorded["registry_digest"] == digest
        pushed_tag = f"{repository}:{str(built['reference']).rsplit(':', 1)[1]}"
        docker("rmi", "--force", str(built["image_id"]))
        again = build_json(root, run_id)
        assert again["pulled"] is True and again["reused"] is True
        assert again["image_id"] == built["image_id"]
        docker("rmi", pushed_tag, check=False)  # the pull left only the registry digest

    def test_rebuild_removes_the_image_it_replaces(
        self, captured: tuple[Path, str], built: dict[str, object]
    ) -> None:
        """--rebuild builds every step afresh and makes a new image; the old one, untagged now,
        is removed rather than left dangling (by a docker process the build does not wait for)."""
        root, run_id = captured
        before = str(built["image_id"])
        after = build_json(root, run_id, "--rebuild")
        assert after["reused"] is False and after["image_id"] != before
        deadline = time.monotonic() + 60
        while docker("image", "inspect", before, check=False).returncode == 0:
            assert time.monotonic() < deadline, "the replaced image was not removed"
            time.sleep(0.2)
        assert docker("image", "inspect", str(after["image_id"])).returncode == 0


class TestBuildErrors:
    def test_unknown_base(self, captured: tuple[Path, str]) -> None:
        """A base image that exists nowhere exits 2 with one sentence."""
        root, run_id = captured
        done = run_build(root, run_id, "--base", "127.0.0.1:5000/nope/nothing:1", "--rebuild")
        assert done.returncode == 2
        assert done.stderr.startswith("envsnap: error: ") and "Traceback" not in done.stderr

    def test_base_without_python(self, captured: tuple[Path, str]) -> None:
        """A base image without Python is refused before anything is built, in one sentence."""
        root, run_id = captured
        bare = f"{REGISTRY}/envsnap-test/debian:bookworm"
        docker("tag", "envsnap-test/debian:bookworm", bare)
        docker("push", bare)
        done = run_build(root, run_id, "--base", bare, "--rebuild")
        docker("rmi", bare)  # only the tag: the Debian test image stays
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("envsnap: error: the base image ")
        assert "has no working python3" in done.stderr and "Traceback" not in done.stderr

    def test_failed_step_shows_its_log_and_keeps_the_store(
        self, captured: tuple[Path, str], tmp_path: Path
    ) -> None:
        """pip failing inside the build (its index unreachable; --rebuild uses no cached layer)
        exits 2, names the step, shows the tail of the build log, and leaves image.toml as it
        was."""
        root, run_id = captured
        image_toml = root / ".envsnap/runs" / run_id / "image.toml"
        before = image_toml.read_bytes() if image_toml.exists() else None
        pip_conf = tmp_path / "pip.conf"
        pip_conf.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\nretries = 0\n")
        done = run_build(
            root,
            run_id,
            "--base",
            registry_base(),
            "--rebuild",
            env={"PIP_CONFIG_FILE": str(pip_conf)},
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert lines[-1].startswith("envsnap: error: docker build of envsnap/env:")
        # The environment's Dockerfile is one stage on the tool image: BuildKit numbers its steps.
        assert re.search(r"failed at step \[\d+/\d+\] RUN .*pip install", lines[-1])
        assert any(line.startswith("  | ") for line in lines[:-1])
        assert (image_toml.read_bytes() if image_toml.exists() else None) == before

    def test_engine_unavailable(self, envsnap: Envsnap) -> None:
        """No docker daemon exits 2 and says how to start one."""
        envsnap("capture")
        done = envsnap(
            "build", "latest", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, check=2
        )
        assert "docker" in done.stderr and "Traceback" not in done.stderr
