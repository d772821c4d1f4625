"""The git probe without git running (running git is for integration tests): what it says when
git is missing or cannot start."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from envsnap.capturing.probes import git as git_probe
from envsnap.manifest import Git


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


class TestStartGitCapture:
    def test_without_git_the_section_says_so(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without git on PATH nothing is started and finish() reports git as not installed."""
        pending = git_probe.start_git_capture(tmp_path, env={"PATH": str(tmp_path)})
        pending.cancel()  # harmless when nothing runs
        section, diff = pending.finish()
        assert section == Git(present=False, reason="git is not installed (not found on PATH)")
        assert diff == b""

    def test_a_git_that_cannot_start_is_a_reason_not_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An OSError starting git (not executable after all) becomes the section's reason."""
        path = str(executable(tmp_path / "bin" / "git").parent)

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(subprocess, "Popen", refuse)
        section, _ = git_probe.start_git_capture(tmp_path, env={"PATH": path}).finish()
        assert section.present is False
        assert section.reason.startswith("git could not be run: ")
        assert "Permission denied" in section.reason
