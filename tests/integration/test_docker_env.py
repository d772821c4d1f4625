"""scripts/docker-env.sh's ways to make the test base images: pulled where an image registry
answers (a GitHub runner), built from Debian's packages otherwise (this machine, whose own CI runs
that branch). The pull branch runs here against the local registry."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import REPO
from tests.integration.docker_env import REGISTRY, docker, docker_cli, registry_base

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "docker-env.sh"


def _script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


class TestBaseImageSources:
    def test_pull_branch_makes_both_images_from_a_registry(self) -> None:
        """ENVSNAP_BASE_SOURCE=pull takes both bases from a registry by name (here the local
        one, on a runner Docker Hub's python and debian images) and tags them as the tests
        expect; the Python image runs Python 3.11 and has git."""
        docker_cli()
        python_ref = registry_base()
        debian_ref = f"{REGISTRY}/envsnap-test/debian:bookworm"
        docker("tag", "envsnap-test/debian:bookworm", debian_ref)
        docker("push", debian_ref)
        tags = {"py": "envsnap-pulltest/python:3.11", "deb": "envsnap-pulltest/debian:bookworm"}
        for tag in tags.values():
            docker("image", "rm", "--force", tag, check=False)
        try:
            done = _script(
                {
                    "ENVSNAP_BASE_SOURCE": "pull",
                    "ENVSNAP_PULL_PYTHON": python_ref,
                    "ENVSNAP_PULL_DEBIAN": debian_ref,
                    "ENVSNAP_TEST_PY_TAG": tags["py"],
                    "ENVSNAP_TEST_DEB_TAG": tags["deb"],
                }
            )
            assert done.returncode == 0, done.stderr[-3000:]
            assert f"pulled {python_ref} as {tags['py']}" in done.stderr
            out = docker(
                "run", "--rm", tags["py"], "sh", "-c",
                "python3 -c 'import sys; print(sys.version_info[:2])' && git --version",
            ).stdout  # fmt: skip
            assert "(3, 11)" in out and "git version" in out
            assert docker("image", "inspect", tags["deb"]).returncode == 0
        finally:
            for tag in (*tags.values(), debian_ref):
                docker("image", "rm", "--force", tag, check=False)

    def test_pull_branch_fails_loudly_when_nothing_answers(self) -> None:
        """With pull asked for and no registry serving the image, the script stops with a
        sentence instead of quietly building something else."""
        done = _script(
            {
                "ENVSNAP_BASE_SOURCE": "pull",
                "ENVSNAP_PULL_PYTHON": f"{REGISTRY}/envsnap-test/does-not-exist:1",
                "ENVSNAP_TEST_PY_TAG": "envsnap-pulltest/never:1",
            }
        )
        assert done.returncode != 0
        assert "ERROR: pulling" in done.stderr

    def test_an_unknown_source_is_refused(self) -> None:
        """A typo in ENVSNAP_BASE_SOURCE is an error, not a silent default."""
        done = _script({"ENVSNAP_BASE_SOURCE": "pul"})
        assert done.returncode != 0 and "use auto, pull or debootstrap" in done.stderr
