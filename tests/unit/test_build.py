"""Pieces of envsnap build that need no engine: envsnap's own wheel for the image."""

from __future__ import annotations

import io
import zipfile

from envsnap.build import _same_base, build_tool_wheel


class TestToolWheel:
    def test_wheel_is_byte_stable(self) -> None:
        """Two builds of envsnap's wheel give the same bytes, so the image layer is cached."""
        assert build_tool_wheel() == build_tool_wheel()

    def test_wheel_is_installable_shape(self) -> None:
        """The wheel holds the package, its templates and metadata with a complete RECORD."""
        name, data = build_tool_wheel()
        assert name.startswith("envsnap-") and name.endswith("-py3-none-any.whl")
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            names = set(wheel.namelist())
            dist_info = name.split("-py3")[0] + ".dist-info"
            assert {"envsnap/cli.py", "envsnap/templates/Dockerfile.base"} <= names
            assert f"{dist_info}/entry_points.txt" in names
            metadata = wheel.read(f"{dist_info}/METADATA").decode()
            record = wheel.read(f"{dist_info}/RECORD").decode().splitlines()
        assert "Requires-Dist: click==" in metadata
        assert {line.split(",")[0] for line in record} == names
        assert not any("__pycache__" in n for n in names)


class TestReuseBase:
    """An image recorded for the environment is reused only for the base that was asked for."""

    BUILT_ON = "127.0.0.1:5000/envsnap-test/python@sha256:" + "a" * 64

    def test_nothing_asked(self) -> None:
        """Without --base or a configured base, the recorded image serves."""
        assert _same_base(self.BUILT_ON, "")

    def test_same_repository_by_tag(self) -> None:
        """A tag of the same repository serves: it was resolved when the image was built."""
        assert _same_base(self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python:3.11-bookworm")

    def test_other_repository(self) -> None:
        """Another repository means another base: build again."""
        assert not _same_base(self.BUILT_ON, "python:3.11.7-slim-bookworm")

    def test_digest_must_match(self) -> None:
        """A pinned request serves only when the digest is the recorded one."""
        assert _same_base(self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python@sha256:" + "a" * 64)
        assert not _same_base(
            self.BUILT_ON, "127.0.0.1:5000/envsnap-test/python@sha256:" + "b" * 64
        )

    def test_docker_hub_spellings_are_one_repository(self) -> None:
        """docker.io/library/python and python are the same repository."""
        assert _same_base("docker.io/library/python@sha256:" + "c" * 64, "python:3.11")
