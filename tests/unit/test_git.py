"""envsnap/git.py finds git on the caller's PATH without running it, and runs it with one
environment; running git for real is for the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from envsnap.git import GIT_ENV, GitRunner, git_executable


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
        assert git_executable({"PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}"}) == str(first)

    def test_directories_and_plain_files_are_passed_over(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory named git, or a git file without the execute bit, is not git."""
        (tmp_path / "dir" / "git").mkdir(parents=True)
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "git").write_text("")
        real = executable(tmp_path / "bin" / "git")
        path = ":".join(str(tmp_path / d) for d in ("dir", "plain", "bin"))
        assert git_executable({"PATH": path}) == str(real)

    def test_none_without_git_on_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No git anywhere on PATH (or an empty PATH) gives None, so capture says so."""
        assert git_executable({"PATH": str(tmp_path)}) is None
        monkeypatch.chdir(tmp_path)
        executable(tmp_path / "git")  # an empty PATH entry would mean here: not searched
        assert git_executable({"PATH": ""}) is None


class TestGitRunner:
    def test_the_callers_environment_with_gits_own_settings(self, tmp_path: Path) -> None:
        """git runs with the environment it was given (never os.environ), plus no index lock,
        no prompt and English messages."""
        runner = GitRunner({"PATH": str(tmp_path), "HOME": "/home/u"}, executable="/x/git")
        assert runner.env == {"PATH": str(tmp_path), "HOME": "/home/u", **GIT_ENV}

    def test_without_git_nothing_starts(self, tmp_path: Path) -> None:
        """A runner with no git raises before any process is started."""
        runner = GitRunner({"PATH": str(tmp_path)})
        assert runner.executable is None
        with pytest.raises(FileNotFoundError, match="git is not installed"):
            runner.run(["status"], tmp_path)

    def test_each_command_is_echoed_when_asked(self, tmp_path: Path) -> None:
        """-v shows every git command line before it runs."""
        shown: list[str] = []
        runner = GitRunner({}, echo=shown.append, executable="/usr/bin/git")
        assert runner._argv(["fetch", "--depth=1"]) == ["/usr/bin/git", "fetch", "--depth=1"]
        assert shown == ["+ /usr/bin/git fetch --depth=1"]
