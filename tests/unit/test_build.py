"""Pieces of envsnap build that need no engine: envsnap's own wheel for the image."""

from __future__ import annotations

import io
import zipfile

from envsnap.build import build_tool_wheel


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
