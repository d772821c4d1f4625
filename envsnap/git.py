"""The one module that starts git: the executable found on the caller's PATH, the environment git
runs with, and a runner that capture's probe and the recorded-code checkout both use. Finding the
repository root needs no git (capturing/probes/git.py does it from the file system)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

# Capture must not take the index lock (a training job may run while the user commits), no git
# may stop to ask for a password, and messages are matched in English.
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}

_FOUND: dict[str, str | None] = {}


def git_executable(env: Mapping[str, str]) -> str | None:
    """The git on ``env``'s PATH (looked up once per PATH); None when git is not installed.

    shutil.which's search, written out: importing shutil loads bz2 and lzma for its archive
    helpers, a few milliseconds of capture's start-up. Like capture itself (``os.uname``) this
    assumes POSIX; an empty PATH entry (the working directory) is not searched.
    """
    path = env.get("PATH", os.defpath)
    if path not in _FOUND:
        _FOUND[path] = next(
            (
                candidate
                for directory in path.split(os.pathsep)
                if directory
                and os.access(candidate := os.path.join(directory, "git"), os.X_OK)
                and not os.path.isdir(candidate)
            ),
            None,
        )
    return _FOUND[path]


class GitRunner:
    """git with one environment (the caller's, plus ``GIT_ENV``), each command echoed when asked.

    ``executable`` is None when git is not installed; callers say so in their own words.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        echo: Callable[[str], None] | None = None,
        executable: str | None = None,
    ) -> None:
        self.executable = executable or git_executable(env)
        self.env = {**env, **GIT_ENV}
        self.echo = echo

    def start(
        self, args: Sequence[str], cwd: Path, *, stderr: int | IO[bytes] = subprocess.PIPE
    ) -> subprocess.Popen[bytes]:
        """Start ``git ARGS`` in ``cwd``, stdout piped; raises OSError (a missing cwd too)."""
        return subprocess.Popen(
            self._argv(args),
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )

    def run(
        self,
        args: Sequence[str],
        cwd: Path,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git ARGS`` to completion; raises OSError or subprocess.TimeoutExpired."""
        if stdin is not None:
            return subprocess.run(
                self._argv(args),
                cwd=cwd,
                env=self.env,
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        return subprocess.run(
            self._argv(args),
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def _argv(self, args: Sequence[str]) -> list[str]:
        if self.executable is None:
            raise FileNotFoundError("git is not installed (not found on PATH)")
        argv = [self.executable, *args]
        if self.echo is not None:
            self.echo("+ " + " ".join(argv))
        return argv
