"""The docker test environment: engine, registry and base images, brought up by
scripts/docker-env.sh. Never skipped: a test that needs docker fails when it cannot be had."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.integration.conftest import REPO, WHEEL_VARIABLE

REGISTRY = "127.0.0.1:5000"
BASE_IMAGE = "envsnap-test/python:3.11-bookworm"
REGISTRY_BASE = f"{REGISTRY}/{BASE_IMAGE}"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Inside the base image: a venv with the example's requirements and envsnap (no-deps wheel of
# this checkout, plus its dependencies from the index), activated for the captures that follow.
CONTAINER_SETUP = """
set -e
python3 -m venv /opt/venv
/opt/venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \\
    click tomli-w nvidia-ml-py PyYAML
/opt/venv/bin/pip install --quiet --disable-pip-version-check --no-deps /wheels/{wheel}
git config --global --add safe.directory '*'
. /opt/venv/bin/activate
"""


def _bring_up(script: str, what: str, key: str, timeout: float) -> str | None:
    """Run ``scripts/<script>`` (which brings ``what`` up, or finds it up) and return the value
    of the ``KEY=value`` line it prints; None when it prints none. A failure fails loudly."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / script)], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"scripts/{script} could not bring {what} up:\n"
            + done.stdout[-3000:]
            + done.stderr[-3000:]
        )
    for line in done.stdout.splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].split()[0]
    return None


@functools.cache
def docker_cli() -> str:
    """Bring the environment up once per session and return the BuildKit-capable docker CLI."""
    found = _bring_up("docker-env.sh", "docker", "ENVSNAP_DOCKER_CLI", 900)
    return found or os.environ.get("ENVSNAP_DOCKER") or shutil.which("docker") or "docker"


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


HOST_B_VARIABLE = "ENVSNAP_HOST_B"  # exported by scripts/test.sh (scripts/host-b.sh)


@functools.cache
def host_b() -> str:
    """DOCKER_HOST of host B, the second engine acting as another host (scripts/host-b.sh):
    its own data root and namespaces, images only through the registry. Never skipped."""
    address = os.environ.get(HOST_B_VARIABLE)
    if address:
        return address
    docker_cli()  # host A and the registry first: host B pulls from it
    found = _bring_up("host-b.sh", "host B", HOST_B_VARIABLE, 600)
    if found is None:
        raise AssertionError(f"scripts/host-b.sh printed no {HOST_B_VARIABLE}= line")
    return found


def docker_b(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI chosen by docker-env.sh against host B (DOCKER_HOST)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": host_b()}
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(
        [docker_cli(), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
        env=env,
    )


@functools.cache
def registry_base() -> str:
    """The test base image pushed to the local registry, so it has a real digest."""
    docker_cli()
    docker("tag", BASE_IMAGE, REGISTRY_BASE)
    docker("push", REGISTRY_BASE)
    return REGISTRY_BASE


def capture_in_container(root: Path, captures: Sequence[str], setup: str = "") -> list[str]:
    """Run ``envsnap capture ARGS`` for each ARGS inside the base image, in the project at
    ``root`` (store: root/.envsnap), after the shell lines ``setup``; return the run ids."""
    wheels = root.parent / "wheels"
    wheels.mkdir(exist_ok=True)
    wheel = Path(os.environ[WHEEL_VARIABLE])  # the wheel users get, built by install-wheel.sh
    name = wheel.name
    shutil.copyfile(wheel, wheels / name)
    mounts = ["-v", f"{root}:/work", "-v", f"{wheels}:/wheels:ro"]
    env = []
    if CA_BUNDLE.is_file():  # TLS to the index is intercepted here: pip must trust the host's CA
        mounts += ["-v", f"{CA_BUNDLE}:/host-ca.crt:ro"]
        env += ["-e", "PIP_CERT=/host-ca.crt"]
    script = (
        CONTAINER_SETUP.format(wheel=name)
        + setup
        + "\n"
        + "".join(
            f"envsnap capture --store /work/.envsnap --json {line} >> /work/.ids\n"
            for line in captures
        )
    )
    done = docker(
        "run", "--rm", *mounts, *env, "-w", "/work", registry_base(), "sh", "-c", script,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # A captured command prints to the same stdout; envsnap's JSON line is the one with run_id.
    lines = (root / ".ids").read_text().splitlines()
    (root / ".ids").unlink()
    return [json.loads(line)["run_id"] for line in lines if line.startswith('{"')]


@functools.cache
def slurm_partitions() -> list[str]:
    """The one-node Slurm cluster of scripts/slurm.sh (its node runs host A's docker engine),
    brought up once per session; its partitions. Never skipped."""
    docker_cli()  # the node's container runtime first
    found = _bring_up("slurm.sh", "the Slurm cluster", "ENVSNAP_SLURM_PARTITIONS", 600)
    if not found:
        raise AssertionError("scripts/slurm.sh printed no ENVSNAP_SLURM_PARTITIONS= line")
    return found.split(",")
