"""The docker test environment: engine, registry and base images, brought up by
scripts/docker-env.sh. Never skipped: a test that needs docker fails when it cannot be had."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from tests.integration.conftest import REPO

REGISTRY = "127.0.0.1:5000"
BASE_IMAGE = "envsnap-test/python:3.11-bookworm"
REGISTRY_BASE = f"{REGISTRY}/{BASE_IMAGE}"


@functools.cache
def docker_cli() -> str:
    """Bring the environment up once per session and return the BuildKit-capable docker CLI."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "docker-env.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise AssertionError(
            "scripts/docker-env.sh could not bring docker up:\n"
            + done.stdout[-3000:]
            + done.stderr[-3000:]
        )
    for line in done.stdout.splitlines():
        if line.startswith("ENVSNAP_DOCKER_CLI="):
            return line.split("=", 1)[1].split()[0]
    return os.environ.get("ENVSNAP_DOCKER") or shutil.which("docker") or "docker"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI chosen by docker-env.sh."""
    return subprocess.run(
        [docker_cli(), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )


@functools.cache
def registry_base() -> str:
    """The test base image pushed to the local registry, so it has a real digest."""
    docker_cli()
    docker("tag", BASE_IMAGE, REGISTRY_BASE)
    docker("push", REGISTRY_BASE)
    return REGISTRY_BASE
