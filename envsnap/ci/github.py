"""GitHub Actions runner files: workflow-command annotations, the job summary and step outputs.

Every value is escaped the way the runner parses it, so a manifest field cannot forge an
annotation, a workflow command or an output.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envsnap.drift.compare import DriftReport
from envsnap.drift.rules import Severity, severity_rank
from envsnap.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class RunnerFiles:
    """Where the runner wants summaries and outputs, read from its environment variables."""

    summary: Path | None
    output: Path | None
    temp: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerFiles | None:
        """The runner's files when running under GitHub Actions, else None."""
        if env.get("GITHUB_ACTIONS") != "true":
            return None

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(
            summary=path("GITHUB_STEP_SUMMARY"),
            output=path("GITHUB_OUTPUT"),
            temp=path("RUNNER_TEMP"),
        )


def escape_data(text: str) -> str:
    """Escape the message part of a workflow command (after ``::``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_code(text: str) -> str:
    """Text for a single-backtick Markdown code span in the summary."""
    return text.replace("`", "'").replace("\r", " ").replace("\n", " ")


def escape_property(text: str) -> str:
    """Escape a property value of a workflow command (``title=...``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation_lines(report: DriftReport, fail_on: Severity) -> list[str]:
    """One workflow command per difference: ::error at or above ``fail_on``, else ::warning
    (info as ::notice); expected differences are not annotated."""
    lines = []
    for f in report.fields:
        if f.severity == "expected":
            continue
        level = _level(f.severity, fail_on)
        title = f"envsnap {f.severity} drift: {f.category}"
        message = f"{f.path}: {f.old or '(absent)'} -> {f.new or '(absent)'}"
        lines.append(f"::{level} title={escape_property(title)}::{escape_data(message)}")
    if report.exit_codes is not None and report.exit_codes[0] != report.exit_codes[1]:
        old, new = report.exit_codes
        lines.append(
            f"::{_level('breaking', fail_on)} title={escape_property('envsnap output drift')}"
            f"::{escape_data(f'exit code {old} -> {new}')}"
        )
    for m in report.metrics:
        lines.append(
            f"::{_level(m.severity, fail_on)} title={escape_property('envsnap metric drift')}"
            f"::{escape_data(f'{m.name}: {m.old} -> {m.new}')}"
        )
    return lines


def _level(severity: Severity, fail_on: Severity) -> str:
    if severity_rank(severity) >= severity_rank(fail_on):
        return "error"
    return "notice" if severity == "info" else "warning"


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """Append outputs with the runner's multi-line syntax and an unguessable delimiter."""
    chunks = []
    for name, value in outputs.items():
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        if delimiter in value:  # pragma: no cover - 128 random bits
            raise UsageError("an output value contains the delimiter", hint="retry")
        chunks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    _append(path, "".join(chunks))


def append_summary(path: Path, markdown: str) -> None:
    """Append Markdown to the job summary."""
    _append(path, markdown if markdown.endswith("\n") else markdown + "\n")


def _append(path: Path, text: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(
            f"the GitHub runner file {path} cannot be written ({exc.strerror or exc})",
            hint="check GITHUB_OUTPUT and GITHUB_STEP_SUMMARY",
        ) from None
