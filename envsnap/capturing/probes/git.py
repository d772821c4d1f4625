"""The [git] section and the diff against HEAD, read through envsnap/git.py's runner. Finding the
repository root is done without git, because the store location needs it on every command."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import IO

from envsnap.capturing.redact import clean_url
from envsnap.git import GitRunner
from envsnap.manifest import Git, Model, model

DEFAULT_MAX_DIFF_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_UNTRACKED = 1000
# Generous: status on a cold cache of a large repository can take a while, but never forever.
_TIMEOUT_S = 120.0
_STDERR_TAIL = 400
_CHUNK = 64 * 1024
# Untracked directories collapse to one entry ("venv/"), as plain `git status` shows them: a
# virtual environment inside the repository is one entry, not ten thousand files.
_STATUS_ARGS = ("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal")
# Every remote's URL in one call; which one is the upstream's is decided after status.
_REMOTE_URLS_ARGS = ("config", "-z", "--get-regexp", r"^remote\..*\.url$")
# A patch that `git apply` can take back, whatever diff settings the user's config has.
_DIFF_ARGS = (
    "diff",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--submodule=short",
    # Changes inside a submodule's own working tree cannot go into a patch that `git apply`
    # takes; they are recorded by name (Git.submodules_dirty) instead.
    "--ignore-submodules=dirty",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "HEAD",
)


@model
class _Status(Model):
    commit: str = ""
    branch: str = ""
    upstream: str = ""
    dirty: bool = False
    untracked: list[str] = field(default_factory=list)
    submodules_dirty: list[str] = field(default_factory=list)


def find_repo_root(cwd: Path) -> Path | None:
    """The nearest directory at or above ``cwd`` holding ``.git`` (a directory, or a file as in
    worktrees and submodules); None outside a repository. Runs no process."""
    here = cwd.absolute()
    for candidate in (here, *here.parents):
        try:
            if (candidate / ".git").exists():
                return candidate
        except OSError:
            return None
    return None


def capture_git(
    cwd: Path,
    *,
    env: Mapping[str, str],
    max_diff_bytes: int = DEFAULT_MAX_DIFF_BYTES,
    max_untracked: int = DEFAULT_MAX_UNTRACKED,
    exclude_data: Sequence[str] = (),
    exclude_private: Sequence[str] = (),
) -> tuple[Git, bytes]:
    """The [git] section and the bytes of ``git diff HEAD --binary`` (bounded). Never raises."""
    pending = start_git_capture(
        cwd,
        env=env,
        max_diff_bytes=max_diff_bytes,
        max_untracked=max_untracked,
        exclude_data=exclude_data,
        exclude_private=exclude_private,
    )
    return pending.finish()


def start_git_capture(
    cwd: Path,
    *,
    env: Mapping[str, str],
    max_diff_bytes: int = DEFAULT_MAX_DIFF_BYTES,
    max_untracked: int = DEFAULT_MAX_UNTRACKED,
    exclude_data: Sequence[str] = (),
    exclude_private: Sequence[str] = (),
) -> PendingGit:
    """Start git's commands for the [git] section; ``finish()`` on the result collects them.

    Capture probes everything else in between, so git runs on another core meanwhile. Output is
    collected on the caller's thread rather than by a thread of its own: such a thread must win
    the GIL back from the busy probes after every read, up to a switch interval (5 ms) each
    time. Never raises.

    ``exclude_data`` (declared data paths) and ``exclude_private`` (envsnap's own store) are
    paths relative to the repository root, left out of status and diff: data is fingerprinted
    as data, and the store is no part of the code. The data paths are recorded as
    ``Git.excluded``; the store is not named.
    """
    return PendingGit(
        cwd,
        GitRunner(env),
        max_diff_bytes=max_diff_bytes,
        max_untracked=max_untracked,
        exclude_data=exclude_data,
        exclude_private=exclude_private,
    )


def exclusion_pathspecs(paths: Sequence[str]) -> tuple[str, ...]:
    """``-- :/ :(top,exclude,literal)PATH...``: the whole tree but ``paths`` (relative to the
    repository root, whatever the working directory); nothing when there is nothing to leave
    out."""
    kept = sorted({p for p in paths if p and p != "."})
    if not kept:
        return ()
    return ("--", ":/", *(f":(top,exclude,literal){p}" for p in kept))


class PendingGit:
    """The [git] section while its git commands run; see ``start_git_capture``."""

    def __init__(
        self,
        cwd: Path,
        runner: GitRunner,
        *,
        max_diff_bytes: int,
        max_untracked: int,
        exclude_data: Sequence[str] = (),
        exclude_private: Sequence[str] = (),
    ) -> None:
        self._cwd = cwd
        self._max_diff_bytes = max_diff_bytes
        self._max_untracked = max_untracked
        self._excluded = tuple(sorted({p for p in exclude_data if p and p != "."}))
        self._pathspecs = exclusion_pathspecs((*self._excluded, *exclude_private))
        self._git = runner
        self._status: _Started | None = None
        self._remotes: _Started | None = None
        self._failure = ""
        if runner.executable is None:
            self._failure = "git is not installed (not found on PATH)"
            return
        try:
            self._status = _Started(runner, cwd, (*_STATUS_ARGS, *self._pathspecs))
            # Alongside status, not after it: which remote is the upstream's is known only from
            # status, so every remote's URL is read and the choice made later.
            self._remotes = _Started(runner, cwd, _REMOTE_URLS_ARGS)
        except (OSError, subprocess.SubprocessError) as exc:
            self.cancel()
            self._failure = f"git could not be run: {exc}"

    def finish(self) -> tuple[Git, bytes]:
        """The [git] section and the diff bytes, once git is done. Never raises."""
        if self._status is None or self._remotes is None:
            return Git(present=False, reason=self._failure), b""
        try:
            return self._collect(self._git, self._status, self._remotes)
        except (OSError, subprocess.SubprocessError) as exc:
            return Git(present=False, reason=f"git could not be run: {exc}"), b""
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop and reap whatever git still runs (nothing, once ``finish`` returned)."""
        for command in (self._status, self._remotes):
            if command is not None:
                command.cancel()

    def _collect(
        self, git: GitRunner, status_command: _Started, remotes: _Started
    ) -> tuple[Git, bytes]:
        code, out, err = status_command.wait()
        if code != 0:
            if "not a git repository" in err:
                return Git(present=False, reason="not inside a git repository"), b""
            return Git(present=False, reason=f"git status failed: {_tail(err)}"), b""
        status = _parse_status(out)
        if not status.commit:
            return Git(present=False, reason="the git repository has no commits yet"), b""

        untracked = sorted(status.untracked)
        kept = untracked[: max(self._max_untracked, 0)]
        section = Git(
            present=True,
            commit=status.commit,
            branch=status.branch,
            remote_url=_remote_url(remotes.wait(), status.upstream),
            dirty=status.dirty,
            untracked=tuple(kept),
            untracked_omitted=len(untracked) - len(kept),
            excluded=self._excluded,
            submodules_dirty=tuple(sorted(status.submodules_dirty)),
        )
        if not status.dirty:
            return section, b""

        diff, truncated, failure = _read_diff(git, self._cwd, self._max_diff_bytes, self._pathspecs)
        import hashlib  # only a dirty tree's diff is hashed: a clean capture skips loading OpenSSL

        section = dataclasses.replace(
            section,
            reason=failure,
            diff_sha256=hashlib.sha256(diff).hexdigest() if diff else "",
            diff_bytes=len(diff),
            diff_truncated=truncated,
        )
        return section, diff


class _Started:
    """One git command running in the background, its output read by ``wait``."""

    def __init__(self, git: GitRunner, cwd: Path, args: Sequence[str]) -> None:
        self._name = args[0]
        self._process: subprocess.Popen[bytes] | None = None
        # A cwd that does not exist is reported by Python as a missing file; wait() says so.
        with contextlib.suppress(FileNotFoundError):
            self._process = git.start(args, cwd)

    def wait(self) -> tuple[int, bytes, str]:
        """Exit code, stdout and stderr; a timeout or a missing cwd as a failed exit."""
        if self._process is None:
            return 128, b"", "not a git repository (the directory does not exist)"
        try:
            out, err = self._process.communicate(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.cancel()
            return 124, b"", f"git {self._name} timed out after {_TIMEOUT_S:.0f} s"
        return self._process.returncode, out, err.decode("utf-8", errors="replace")

    def cancel(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(OSError):
                self._process.kill()
            self._process.communicate()


def _parse_status(out: bytes) -> _Status:
    commit = branch = upstream = ""
    dirty = False
    untracked: list[str] = []
    submodules: list[str] = []
    entries = out.split(b"\0")
    skip_next = False
    for raw in entries:
        if skip_next:  # the original path of a rename or copy
            skip_next = False
            continue
        if not raw:
            continue
        entry = raw.decode("utf-8", errors="replace")
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            commit = "" if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
            branch = "" if head == "(detached)" else head
        elif entry.startswith("# branch.upstream "):
            upstream = entry.removeprefix("# branch.upstream ")
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry[:2] in ("1 ", "2 ", "u "):
            skip_next = entry.startswith("2 ")
            # "1 XY sub ... path": sub is "N..." for a file, "S<c><m><u>" for a submodule
            # (commit changed, tracked changes, untracked files inside it).
            fields = entry.split(" ", {"1": 8, "2": 9, "u": 10}[entry[0]])
            sub = fields[2] if len(fields) > 2 else ""
            if sub.startswith("S") and (sub[2:3] == "M" or sub[3:4] == "U"):
                submodules.append(fields[-1])
                if fields[1] == ".M" and sub[1:2] == ".":
                    continue  # only the submodule's own working tree changed: no diff for it
            dirty = True
    return _Status(
        commit=commit,
        branch=branch,
        upstream=upstream,
        dirty=dirty,
        untracked=untracked,
        submodules_dirty=submodules,
    )


def _remote_url(config: tuple[int, bytes, str], upstream: str) -> str:
    """The upstream's remote URL from ``git config --get-regexp`` over every remote's URL: remote
    names may hold "/", so the upstream's remote is the longest name prefixing "remote/branch"."""
    code, out, _err = config
    if code != 0:
        return ""
    urls: dict[str, str] = {}
    for record in out.decode("utf-8", errors="replace").split("\0"):
        key, _, url = record.partition("\n")
        if key.startswith("remote.") and key.endswith(".url"):
            urls.setdefault(key[len("remote.") : -len(".url")], url.strip())
    remote = "origin"
    matches = [name for name in urls if upstream.startswith(f"{name}/")]
    if matches:
        remote = max(matches, key=len)
    return clean_url(urls.get(remote, ""))


def _read_diff(
    git: GitRunner, cwd: Path, limit: int, pathspecs: Sequence[str] = ()
) -> tuple[bytes, bool, str]:
    """At most ``limit`` bytes of the diff, whether there was more, and why git failed."""
    import tempfile  # only a dirty tree needs it; kept off the clean capture path

    limit = max(limit, 0)
    with tempfile.TemporaryFile() as stderr:
        # stderr goes to a file so a chatty git cannot fill a pipe we are not reading.
        process = git.start((*_DIFF_ARGS, *pathspecs), cwd, stderr=stderr)
        assert process.stdout is not None
        chunks: list[bytes] = []
        size = 0
        truncated = False
        with process.stdout:
            while True:
                chunk = process.stdout.read(min(_CHUNK, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    truncated = True
                    break
        if truncated:
            process.kill()
        try:
            code = process.wait(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return b"".join(chunks)[:limit], True, "git diff timed out"
        diff = b"".join(chunks)[:limit]
        if truncated or code == 0:
            return diff, truncated, ""
        return diff, False, f"git diff failed: {_tail(_read_all(stderr))}"


def _read_all(handle: IO[bytes]) -> str:
    with contextlib.suppress(OSError):
        handle.seek(0)
        return handle.read().decode("utf-8", errors="replace")
    return ""


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text[-_STDERR_TAIL:] if len(text) > _STDERR_TAIL else text
