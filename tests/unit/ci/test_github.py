"""GitHub Actions runner files: escaping, annotations, outputs and the summary."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from envsnap.ci.github import (
    RunnerFiles,
    annotation_lines,
    escape_data,
    escape_property,
    write_outputs,
)
from envsnap.drift.compare import compare
from envsnap.manifest import Package
from tests.conftest import sample_manifest

ANNOTATION = re.compile(r"^::(error|warning|notice) title=[^:,\n]*::[^\n]*$")


def _bumped(version: str = "2.2.0", os_name: str = "Debian") -> object:
    a = sample_manifest()
    pkgs = (Package(name="numpy", version=version, installer="pip"), a.python.packages[1])
    b = dataclasses.replace(
        a,
        python=dataclasses.replace(a.python, packages=pkgs),
        host=dataclasses.replace(a.host, os_name=os_name),
    )
    return compare(a, b)


class TestEscaping:
    def test_data(self) -> None:
        """Percent, CR and LF are encoded in a message."""
        assert escape_data("50%\r\nx") == "50%25%0D%0Ax"

    def test_property(self) -> None:
        """Colons and commas are also encoded in a property value."""
        assert escape_property("a:b,c\n") == "a%3Ab%2Cc%0A"


class TestAnnotations:
    def test_breaking_is_error_below_threshold_is_warning(self) -> None:
        """Drift at or above fail-on is ::error; info-level drift is a ::notice."""
        lines = annotation_lines(_bumped(), "breaking")  # type: ignore[arg-type]
        assert any(
            line.startswith(
                "::error title=envsnap breaking drift%3A packages::python.packages.numpy"
            )
            for line in lines
        )
        assert any(line.startswith("::notice") and "host.os_name" in line for line in lines)

    def test_crafted_values_cannot_inject(self) -> None:
        """A value with newlines and '::' stays inside one escaped annotation line."""
        crafted = "1.0\n::error title=forged::pwned\r\n::set-output name=drift::false %0A"
        report = _bumped(version=crafted, os_name="x\n::add-mask::y")
        lines = annotation_lines(report, "warning")  # type: ignore[arg-type]
        text = "\n".join(lines)
        assert all(ANNOTATION.match(line) for line in text.split("\n")), text
        assert "forged" in text and "\n::error title=forged" not in text
        assert "%250A" in text


class TestRunnerFiles:
    def test_outside_github(self) -> None:
        """Without GITHUB_ACTIONS=true there are no runner files."""
        assert RunnerFiles.from_env({"GITHUB_OUTPUT": "/x"}) is None

    def test_outputs_use_delimiters(self, tmp_path: Path) -> None:
        """Outputs are written with the heredoc syntax so a newline cannot add an output."""
        out = tmp_path / "out"
        write_outputs(out, {"drift": "true", "report-path": "/tmp/a\nforged=1"})
        text = out.read_text()
        match = re.match(
            r"drift<<(ghadelimiter_\w+)\ntrue\n\1\nreport-path<<(ghadelimiter_\w+)\n", text
        )
        assert match, text
        assert text.endswith(f"/tmp/a\nforged=1\n{match.group(2)}\n")
