"""Base image choice and Dockerfile rendering: pure, pinned and injection-proof."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from envsnap.errors import UsageError
from envsnap.image.plan import (
    check_reference,
    choose_base,
    plan_image,
    render_dockerfile,
    render_tool_dockerfile,
    tool_tag,
    write_context,
)
from envsnap.manifest import Container, Cuda, read_manifest, seal
from tests.conftest import sample_manifest

GPU_FIXTURES = Path(__file__).resolve().parents[2] / "data" / "gpu"
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

    @pytest.mark.parametrize(
        ("python", "os_id", "os_version", "codename", "cuda", "expected", "adds_python"),
        [
            # No CUDA: the run's Python on its Debian release, else on bookworm.
            ("3.11.7", "debian", "12", "bookworm", None, "python:3.11.7-slim-bookworm", False),
            ("3.12.8", "debian", "13", "trixie", None, "python:3.12.8-slim-trixie", False),
            ("3.11.7", "ubuntu", "22.04", "jammy", None, "python:3.11.7-slim-bookworm", False),
            ("3.10.4", "debian", "9", "stretch", None, "python:3.10.4-slim-bookworm", False),
            # CUDA from wheels (torch's nvidia-* wheels): only the driver comes from the host.
            ("3.12.3", "ubuntu", "24.04", "noble",
             Cuda(runtime_version="13.2.86", runtime_source="wheel nvidia-cuda-runtime",
                  cudnn_version="9.19.0.56", cudnn_source="wheel nvidia-cudnn-cu13"),
             "python:3.12.3-slim-bookworm", False),
            ("3.11.7", "debian", "12", "bookworm",
             Cuda(runtime_version="12.4", runtime_source="torch/version.py"),
             "python:3.11.7-slim-bookworm", False),
            # CUDA from a system toolkit: NVIDIA's runtime image of that release, Python added.
            ("3.10.12", "ubuntu", "22.04", "jammy",
             Cuda(runtime_version="12.4.1", runtime_source="/usr/local/cuda/version.json",
                  cudnn_version="9.1.0"),
             "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04", True),
            ("3.10.12", "ubuntu", "22.04", "jammy",
             Cuda(runtime_version="12.4.131", runtime_source="/usr/local/cuda/lib64/libcudart.so"),
             "nvidia/cuda:12.4.1-runtime-ubuntu22.04", True),
            ("3.12.3", "ubuntu", "24.04", "noble",
             Cuda(runtime_version="13.0.2", runtime_source="/usr/local/cuda/version.json",
                  cudnn_version="9.19.0"),
             "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04", True),
            ("3.11.7", "debian", "12", "bookworm",
             Cuda(runtime_version="12.1.1", runtime_source="/usr/local/cuda/version.json",
                  cudnn_version="8.9.0"),
             "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04", True),
            ("3.8.10", "ubuntu", "20.04", "focal",
             Cuda(runtime_version="11.8.89", runtime_source="/usr/local/cuda/version.txt"),
             "nvidia/cuda:11.8.0-runtime-ubuntu20.04", True),
        ],
    )  # fmt: skip
    def test_rule_table(
        self,
        python: str,
        os_id: str,
        os_version: str,
        codename: str,
        cuda: Cuda | None,
        expected: str,
        adds_python: bool,
    ) -> None:
        """Each base rule picks an image that exists and has (or is given) Python, and says
        which rule chose it."""
        m = sample_manifest(cuda=cuda or Cuda())
        m = dataclasses.replace(
            m,
            host=dataclasses.replace(
                m.host, os_id=os_id, os_version=os_version, os_codename=codename
            ),
            python=dataclasses.replace(m.python, version=python),
        )
        choice = choose_base(m)
        assert (choice.reference, choice.adds_python) == (expected, adds_python)
        assert choice.reason.startswith("rule: ")
        check_reference(choice.reference, "the rule")

    def test_unknown_cuda_toolkit_release_is_one_sentence(self) -> None:
        """A toolkit release with no known nvidia/cuda image asks for --base."""
        m = sample_manifest(
            cuda=Cuda(runtime_version="10.2.89", runtime_source="/usr/local/cuda/version.txt")
        )
        with pytest.raises(UsageError, match="--base"):
            choose_base(m)

    def test_the_recorded_h200_run_gets_a_python_base(self) -> None:
        """The real CUDA 13 run recorded on an H200 (torch cu130 from the index) is rebuilt on
        the run's Python, not on a CUDA tag made from the runtime wheel's version."""
        m = read_manifest(GPU_FIXTURES / "h200-torch-cu130.manifest.toml")
        choice = choose_base(m)
        assert choice.reference == "python:3.12.3-slim-bookworm"
        assert not choice.adds_python

    def test_os_python_step_only_for_a_base_without_python(self) -> None:
        """The apt step that adds python3 is rendered only when the base lacks Python."""
        plain = render_tool_dockerfile(_plan())  # type: ignore[arg-type]
        assert "apt-get install" not in plain
        added = render_tool_dockerfile(dataclasses.replace(_plan(), adds_python=True))  # type: ignore[arg-type]
        assert "python3 python3-venv" in added
        assert added.index("python3-venv") < added.index("-m venv /opt/envsnap")
        assert "apt-get" not in render_dockerfile(dataclasses.replace(_plan(), adds_python=True))  # type: ignore[arg-type]

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
        tool = render_tool_dockerfile(_plan())  # type: ignore[arg-type]
        assert "FROM ${ENVSNAP_BASE} AS envsnap-base" in tool
        text = render_dockerfile(_plan())  # type: ignore[arg-type]
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

    def test_the_environment_starts_from_the_tool_image(self) -> None:
        """envsnap's own environment is in the tool image; the environment's Dockerfile starts
        from it and installs only the experiment's packages."""
        tool = render_tool_dockerfile(_plan())  # type: ignore[arg-type]
        text = render_dockerfile(_plan())  # type: ignore[arg-type]
        assert "-m venv /opt/envsnap" in tool and "/opt/venv" not in tool
        assert "useradd" in tool and "/opt/envsnap" not in text
        assert "ARG ENVSNAP_TOOL\nFROM ${ENVSNAP_TOOL} AS envsnap-env" in text
        assert text.index("envsnap_venv.py /opt/venv") < text.index("USER envsnap")

    def test_tool_tag_names_its_content(self) -> None:
        """The tool image's tag changes with the base and with anything in its context."""
        other = PINNED.replace("a" * 64, "c" * 64)
        tags = {
            tool_tag(PINNED, "sha256:1"),
            tool_tag(PINNED, "sha256:2"),
            tool_tag(other, "sha256:1"),
        }
        assert len(tags) == 3 and tool_tag(PINNED, "sha256:1") in tags
        assert all(t.startswith("envsnap/tool:") for t in tags)

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
