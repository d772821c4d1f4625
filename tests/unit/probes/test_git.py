"""The git probe finds git on PATH without running it (running git is for integration tests)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from envsnap.capturing.probes import git as git_probe
from envsnap.manifest import Git


@pytest.fixture(autouse=True)
def _fresh_lookup() -> Iterator[None]:
    git_probe.git_executable.cache_clear()
    yield
    git_probe.git_executable.cache_clear()


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


class TestGitExecutable:
    def test_first_executable_on_path_wins(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first PATH directory holding an executable ``git`` file is the one used."""
        first = executable(tmp_path / "a" / "git")
        executable(tmp_path / "b" / "git")
        monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
        assert git_probe.git_executable() == str(first)

    def test_directories_and_plain_files_are_passed_over(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory named git, or a git file without the execute bit, is not git."""
        (tmp_path / "dir" / "git").mkdir(parents=True)
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "git").write_text("")
        real = executable(tmp_path / "bin" / "git")
        path = ":".join(str(tmp_path / d) for d in ("dir", "plain", "bin"))
        monkeypatch.setenv("PATH", path)
        assert git_probe.git_executable() == str(real)

    def test_none_without_git_on_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No git anywhere on PATH (or an empty PATH) gives None, so capture says so."""
        monkeypatch.setenv("PATH", str(tmp_path))
        assert git_probe.git_executable() is None
        git_probe.git_executable.cache_clear()
        monkeypatch.chdir(tmp_path)
        executable(tmp_path / "git")  # an empty PATH entry would mean here: not searched
        monkeypatch.setenv("PATH", "")
        assert git_probe.git_executable() is None


class TestStartGitCapture:
    def test_without_git_the_section_says_so(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without git on PATH nothing is started and finish() reports git as not installed."""
        monkeypatch.setenv("PATH", str(tmp_path))
        pending = git_probe.start_git_capture(tmp_path)
        pending.cancel()  # harmless when nothing runs
        section, diff = pending.finish()
        assert section == Git(present=False, reason="git is not installed (not found on PATH)")
        assert diff == b""

    def test_a_git_that_cannot_start_is_a_reason_not_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An OSError starting git (not executable after all) becomes the section's reason."""
        monkeypatch.setenv("PATH", str(executable(tmp_path / "bin" / "git").parent))

        def refuse(*args: object, **kwargs: object) -> NoReturn:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(subprocess, "Popen", refuse)
        section, _ = git_probe.start_git_capture(tmp_path).finish()
        assert section.present is False
        assert section.reason.startswith("git could not be run: ")
        assert "Permission denied" in section.reason
