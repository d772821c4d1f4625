"""Host B, the second docker engine acting as another host (scripts/host-b.sh): it answers, has
none of host A's images, gets images only through the registry, and leaves host A's bridge alone."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.docker_env import (
    BASE_IMAGE,
    REGISTRY,
    docker,
    docker_b,
    docker_cli,
    host_b,
)

pytestmark = pytest.mark.integration

DEBIAN_IMAGE = "envsnap-test/debian:bookworm"


def test_host_b_answers() -> None:
    assert host_b().startswith("unix://")
    version = docker_b("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert version


def test_host_b_has_none_of_host_a_images() -> None:
    docker_cli()  # host A with its base images
    host_b()
    for image in (BASE_IMAGE, DEBIAN_IMAGE):
        assert docker("image", "inspect", image, check=False).returncode == 0, image
        on_b = docker_b("image", "inspect", image, check=False)
        assert on_b.returncode != 0, f"{image} is on host B: {on_b.stdout[:500]}"


def test_image_pushed_from_host_a_pulls_and_runs_on_host_b(tmp_path: Path) -> None:
    # A new image (a label on the base image) for this test, so host B cannot have it yet.
    nonce = uuid.uuid4().hex[:12]
    tag = f"{REGISTRY}/envsnap-test/host-b:{nonce}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nLABEL org.envsnap.test.host-b={nonce}\n"
    )
    pinned = ""
    try:
        docker("build", "-q", "-t", tag, str(tmp_path))
        docker("push", "-q", tag)
        digests = json.loads(docker("image", "inspect", "-f", "{{json .RepoDigests}}", tag).stdout)
        repo = tag.rsplit(":", 1)[0]
        pinned = next(d for d in digests if d.startswith(f"{repo}@sha256:"))
        assert docker_b("image", "inspect", pinned, check=False).returncode != 0
        docker_b("pull", "-q", pinned)
        done = docker_b(
            "run", "--rm", "--network", "none", pinned, "python3", "-c", "print(1)",
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "1"
        label = docker_b(
            "image", "inspect", "-f", '{{index .Config.Labels "org.envsnap.test.host-b"}}', pinned
        ).stdout.strip()
        assert label == nonce
    finally:
        if pinned:
            docker_b("image", "rm", pinned, check=False)
        docker("image", "rm", tag, check=False)


def test_host_a_bridge_survives_host_b() -> None:
    host_b()
    done = subprocess.run(
        ["ip", "link", "show", "docker0"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_host_b_has_its_own_data_root() -> None:
    root_a = docker("info", "--format", "{{.DockerRootDir}}").stdout.strip()
    root_b = docker_b("info", "--format", "{{.DockerRootDir}}").stdout.strip()
    assert root_a and root_b
    assert root_a != root_b
