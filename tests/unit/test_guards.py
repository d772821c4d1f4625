"""The suite's own guards: unit tests reach no network, daemon or process, and every integration
test module carries the `integration` marker, so `-m "not integration"` never reaches docker."""

from __future__ import annotations

import ast
import socket
import subprocess
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


class TestUnitGuards:
    @pytest.mark.parametrize(
        ("family", "address"),
        [
            (socket.AF_INET, ("198.51.100.7", 443)),
            (socket.AF_INET6, ("2001:db8::1", 443, 0, 0)),
            (socket.AF_UNIX, "/var/run/docker.sock"),
        ],
    )
    def test_a_connection_off_the_loopback_is_refused(
        self, family: socket.AddressFamily, address: object
    ) -> None:
        """Another host, or a daemon's Unix socket, fails the test before any packet leaves."""
        with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(AssertionError):
            sock.connect(address)

    def test_resolving_a_name_is_refused(self) -> None:
        """A DNS lookup is the network too."""
        with pytest.raises(AssertionError, match="resolve host names"):
            socket.getaddrinfo("pypi.org", 443)

    def test_starting_a_process_is_refused(self) -> None:
        """No subprocess starts from a unit test."""
        with pytest.raises(AssertionError, match="must not start processes"):
            subprocess.run(["true"], check=False)


def _module_marks(path: Path) -> set[str]:
    """The marker names a module's ``pytestmark`` assigns (one marker or a list of them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    marks: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            for sub in ast.walk(node.value):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Attribute)
                    and sub.value.attr == "mark"
                ):
                    marks.add(sub.attr)
    return marks


class TestIntegrationMarker:
    @pytest.mark.parametrize("module", sorted(INTEGRATION.glob("test_*.py")), ids=lambda p: p.name)
    def test_every_integration_module_is_marked(self, module: Path) -> None:
        """Each module under tests/integration/ marks its tests `integration`."""
        assert "integration" in _module_marks(module), f"{module.name} lacks pytestmark"

    def test_the_check_sees_a_module_without_the_marker(self, tmp_path: Path) -> None:
        """The check itself fails on a module that forgot the marker."""
        bare = tmp_path / "test_bare.py"
        bare.write_text("import pytest\n\ndef test_x() -> None:\n    pass\n")
        marked = tmp_path / "test_marked.py"
        marked.write_text("import pytest\n\npytestmark = [pytest.mark.integration]\n")
        assert "integration" not in _module_marks(bare)
        assert "integration" in _module_marks(marked)
